use sea_orm_migration::prelude::*;

use crate::columns::{instant, money};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite takes one column per ALTER TABLE.
        let columns = [
            money(Orders::RefundRequested).not_null().default(0).to_owned(),
            ColumnDef::new(Orders::RefundSeq).integer().not_null().default(0).to_owned(),
            instant(manager, Orders::LastQueriedAt).null().to_owned(),
            instant(manager, Orders::ClosedAt).null().to_owned(),
        ];
        for column in columns {
            manager.alter_table(Table::alter().table(Orders::Table).add_column(column).to_owned()).await?;
        }
        // The reconciliation report reads a day of payments.
        manager
            .create_index(
                Index::create().name("idx_orders_paid_at").table(Orders::Table).col(Orders::PaidAt).to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Refunds::Table)
                    .col(ColumnDef::new(Refunds::Id).big_integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(Refunds::OrderNumber).string_len(32).not_null())
                    .col(ColumnDef::new(Refunds::OutRefundNo).string_len(64).not_null().unique_key())
                    .col(money(Refunds::Amount).not_null())
                    .col(ColumnDef::new(Refunds::Reason).string_len(256).not_null())
                    .col(ColumnDef::new(Refunds::Source).string_len(16).not_null())
                    .col(ColumnDef::new(Refunds::Status).string_len(16).not_null())
                    .col(ColumnDef::new(Refunds::RefundId).string_len(64).null())
                    .col(ColumnDef::new(Refunds::Attempts).integer().not_null())
                    .col(ColumnDef::new(Refunds::LastError).string_len(512).null())
                    .col(instant(manager, Refunds::CreatedAt).not_null())
                    .col(instant(manager, Refunds::UpdatedAt).not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create().name("idx_refunds_order").table(Refunds::Table).col(Refunds::OrderNumber).to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create().name("idx_refunds_status").table(Refunds::Table).col(Refunds::Status).to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Refunds::Table).to_owned()).await?;
        manager.drop_index(Index::drop().name("idx_orders_paid_at").table(Orders::Table).to_owned()).await?;
        for column in [Orders::ClosedAt, Orders::LastQueriedAt, Orders::RefundSeq, Orders::RefundRequested] {
            manager.alter_table(Table::alter().table(Orders::Table).drop_column(column).to_owned()).await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Orders {
    Table,
    PaidAt,
    /// Sum of the refunds opened for the order (pending, submitted or done), in yuan.
    RefundRequested,
    /// Refunds opened so far; numbers the next `out_refund_no` and guards concurrent requests.
    RefundSeq,
    /// The last active payment query, for rate-limiting `?refresh=true`.
    LastQueriedAt,
    ClosedAt,
}

#[derive(DeriveIden)]
enum Refunds {
    Table,
    Id,
    OrderNumber,
    OutRefundNo,
    Amount,
    Reason,
    /// `operator`, `auto_failed`, `auto_closed`.
    Source,
    /// `pending` (not accepted by WeChat yet), `submitted`, `success`, `failed`.
    Status,
    RefundId,
    Attempts,
    LastError,
    CreatedAt,
    UpdatedAt,
}
