use sea_orm_migration::prelude::*;

use crate::columns::instant;

/// The simulated payment platform's and the simulated carrier's own state, used only in sandbox mode
/// (`PAYMENT_SANDBOX=true`, `TOPUP_PROVIDER=sandbox`) and present everywhere, since a migration cannot
/// know the environment. In the database rather than in a process, so a restart or another replica
/// answers what the simulated platform and carrier were told. Amounts are integer fen, as on the wire.
///
/// - `sandbox_payments`: one row per prepaid order (`out_trade_no`), with its trade state and how much
///   of it has been refunded;
/// - `sandbox_refunds`: one row per `out_refund_no`;
/// - `sandbox_topups`: one row per carrier reference: what the carrier received, or only that its
///   first submit was lost.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SandboxPayments::Table)
                    .col(ColumnDef::new(SandboxPayments::Id).big_integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(SandboxPayments::OrderNumber).string_len(32).not_null())
                    .col(ColumnDef::new(SandboxPayments::TotalFee).big_integer().not_null())
                    .col(ColumnDef::new(SandboxPayments::RefundedFee).big_integer().not_null().default(0))
                    .col(ColumnDef::new(SandboxPayments::State).string_len(16).not_null())
                    .col(ColumnDef::new(SandboxPayments::TransactionId).string_len(32).null())
                    .col(instant(manager, SandboxPayments::CreatedAt).not_null())
                    .col(instant(manager, SandboxPayments::PaidAt).null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_sandbox_payments_order_number")
                    .table(SandboxPayments::Table)
                    .col(SandboxPayments::OrderNumber)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(SandboxRefunds::Table)
                    .col(ColumnDef::new(SandboxRefunds::Id).big_integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(SandboxRefunds::OutRefundNo).string_len(64).not_null())
                    .col(ColumnDef::new(SandboxRefunds::OrderNumber).string_len(32).not_null())
                    .col(ColumnDef::new(SandboxRefunds::RefundFee).big_integer().not_null())
                    .col(instant(manager, SandboxRefunds::CreatedAt).not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_sandbox_refunds_out_refund_no")
                    .table(SandboxRefunds::Table)
                    .col(SandboxRefunds::OutRefundNo)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(SandboxTopups::Table)
                    .col(ColumnDef::new(SandboxTopups::Id).big_integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(SandboxTopups::Reference).string_len(64).not_null())
                    .col(ColumnDef::new(SandboxTopups::State).string_len(16).null())
                    .col(ColumnDef::new(SandboxTopups::LostFirstSubmit).boolean().not_null().default(false))
                    .col(instant(manager, SandboxTopups::CreatedAt).not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_sandbox_topups_reference")
                    .table(SandboxTopups::Table)
                    .col(SandboxTopups::Reference)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(SandboxTopups::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(SandboxRefunds::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(SandboxPayments::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum SandboxPayments {
    Table,
    Id,
    /// `out_trade_no`.
    OrderNumber,
    TotalFee,
    /// The sum of the accepted refunds; never more than `total_fee`.
    RefundedFee,
    /// WeChat's `trade_state`: `NOTPAY`, `SUCCESS`, `REFUND`, `CLOSED`.
    State,
    TransactionId,
    CreatedAt,
    /// When the simulated user paid (`time_end` on the wire, in Beijing time).
    PaidAt,
}

#[derive(DeriveIden)]
enum SandboxRefunds {
    Table,
    Id,
    OutRefundNo,
    /// `out_trade_no` of the refunded payment.
    OrderNumber,
    RefundFee,
    CreatedAt,
}

#[derive(DeriveIden)]
enum SandboxTopups {
    Table,
    Id,
    /// Our order number: the carrier's idempotency key.
    Reference,
    /// What the carrier received: `delivered` or `pending`; none while only a lost submit is recorded.
    State,
    /// The first submit was "lost" (phone numbers ending in `01`); the next one arrives.
    LostFirstSubmit,
    CreatedAt,
}
