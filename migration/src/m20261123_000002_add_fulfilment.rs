use sea_orm_migration::prelude::*;

use crate::columns::instant;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite takes one column per ALTER TABLE.
        let columns = [
            ColumnDef::new(Orders::ProductCode).string_len(64).not_null().default("").to_owned(),
            ColumnDef::new(Orders::FaceValue).decimal_len(16, 2).not_null().default(0).to_owned(),
            ColumnDef::new(Orders::FaceCurrency).string_len(8).not_null().default("").to_owned(),
            ColumnDef::new(Orders::FulfilAttempts).integer().not_null().default(0).to_owned(),
            ColumnDef::new(Orders::Submitted).boolean().not_null().default(false).to_owned(),
            ColumnDef::new(Orders::LeaseOwner).string_len(64).null().to_owned(),
            instant(manager, Orders::LeaseExpiresAt).null().to_owned(),
            instant(manager, Orders::RechargeAt).null().to_owned(),
            instant(manager, Orders::DeliveredAt).null().to_owned(),
            ColumnDef::new(Orders::ProviderReference).string_len(128).null().to_owned(),
            ColumnDef::new(Orders::FailureReason).string_len(512).null().to_owned(),
        ];
        for column in columns {
            manager.alter_table(Table::alter().table(Orders::Table).add_column(column).to_owned()).await?;
        }
        // The sweep: "recharging whose lease expired" (status, lease_expires_at).
        manager
            .create_index(
                Index::create()
                    .name("idx_orders_status_lease")
                    .table(Orders::Table)
                    .col(Orders::Status)
                    .col(Orders::LeaseExpiresAt)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(FulfilmentAttempts::Table)
                    .col(ColumnDef::new(FulfilmentAttempts::Id).big_integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(FulfilmentAttempts::OrderNumber).string_len(32).not_null())
                    .col(ColumnDef::new(FulfilmentAttempts::Attempt).integer().not_null())
                    .col(ColumnDef::new(FulfilmentAttempts::Action).string_len(16).not_null())
                    .col(ColumnDef::new(FulfilmentAttempts::Outcome).string_len(16).not_null())
                    .col(ColumnDef::new(FulfilmentAttempts::Message).string_len(512).null())
                    .col(ColumnDef::new(FulfilmentAttempts::LatencyMs).big_integer().not_null())
                    .col(ColumnDef::new(FulfilmentAttempts::Worker).string_len(64).not_null())
                    .col(instant(manager, FulfilmentAttempts::CreatedAt).not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_fulfilment_attempts_order")
                    .table(FulfilmentAttempts::Table)
                    .col(FulfilmentAttempts::OrderNumber)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(FulfilmentAttempts::Table).to_owned()).await?;
        manager.drop_index(Index::drop().name("idx_orders_status_lease").table(Orders::Table).to_owned()).await?;
        for column in [
            Orders::FailureReason,
            Orders::ProviderReference,
            Orders::DeliveredAt,
            Orders::RechargeAt,
            Orders::LeaseExpiresAt,
            Orders::LeaseOwner,
            Orders::Submitted,
            Orders::FulfilAttempts,
            Orders::FaceCurrency,
            Orders::FaceValue,
            Orders::ProductCode,
        ] {
            manager.alter_table(Table::alter().table(Orders::Table).drop_column(column).to_owned()).await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Orders {
    Table,
    Status,
    ProductCode,
    FaceValue,
    FaceCurrency,
    FulfilAttempts,
    /// A submit may have reached the carrier: query before submitting again.
    Submitted,
    LeaseOwner,
    LeaseExpiresAt,
    RechargeAt,
    DeliveredAt,
    ProviderReference,
    FailureReason,
}

#[derive(DeriveIden)]
enum FulfilmentAttempts {
    Table,
    Id,
    OrderNumber,
    Attempt,
    Action,
    Outcome,
    Message,
    LatencyMs,
    Worker,
    CreatedAt,
}
