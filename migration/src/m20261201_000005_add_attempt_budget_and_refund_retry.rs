use sea_orm_migration::prelude::*;

use crate::columns::instant;

/// `orders.budget_from`: the claim number at the last operator retry, so a retry gives a fresh attempt
/// budget without resetting the claim's version (`fulfil_attempts`). `refunds.next_attempt_at`: when
/// a refund WeChat did not accept (or that failed) is tried or queried again, for backoff.
/// `orders.unresolved_at`: when the order was handed to an operator.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite takes one column per ALTER TABLE.
        let orders = [
            ColumnDef::new(Orders::BudgetFrom).integer().not_null().default(0).to_owned(),
            instant(manager, Orders::UnresolvedAt).null().to_owned(),
        ];
        for column in orders {
            manager.alter_table(Table::alter().table(Orders::Table).add_column(column).to_owned()).await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Refunds::Table)
                    .add_column(instant(manager, Refunds::NextAttemptAt).null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(Table::alter().table(Refunds::Table).drop_column(Refunds::NextAttemptAt).to_owned())
            .await?;
        for column in [Orders::UnresolvedAt, Orders::BudgetFrom] {
            manager.alter_table(Table::alter().table(Orders::Table).drop_column(column).to_owned()).await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Orders {
    Table,
    BudgetFrom,
    UnresolvedAt,
}

#[derive(DeriveIden)]
enum Refunds {
    Table,
    NextAttemptAt,
}
