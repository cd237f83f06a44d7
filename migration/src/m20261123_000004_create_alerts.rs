use sea_orm_migration::prelude::*;

use crate::columns::instant;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Alerts::Table)
                    .col(ColumnDef::new(Alerts::Id).big_integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(Alerts::Kind).string_len(32).not_null())
                    .col(ColumnDef::new(Alerts::OrderNumber).string_len(32).not_null())
                    .col(ColumnDef::new(Alerts::Message).string_len(512).not_null())
                    .col(ColumnDef::new(Alerts::Delivery).string_len(16).not_null())
                    .col(instant(manager, Alerts::CreatedAt).not_null())
                    .col(instant(manager, Alerts::SentAt).null())
                    .to_owned(),
            )
            .await?;
        // One alert per order and kind, however often the condition is seen.
        manager
            .create_index(
                Index::create()
                    .name("uq_alerts_kind_order")
                    .table(Alerts::Table)
                    .col(Alerts::Kind)
                    .col(Alerts::OrderNumber)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Alerts::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Alerts {
    Table,
    Id,
    /// `anomaly`, `topup_failed`, `refund_failed`, `reconciliation_mismatch`.
    Kind,
    OrderNumber,
    Message,
    /// `pending`, `sent`, `failed`, `rate_limited`, `disabled` (no webhook configured).
    Delivery,
    CreatedAt,
    SentAt,
}
