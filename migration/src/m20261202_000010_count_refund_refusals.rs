use sea_orm_migration::prelude::*;

/// `refunds.refusals`: WeChat's permanent refusals of a refund, the count `REFUND_MAX_ATTEMPTS` limits.
/// `attempts` goes on counting every try (for the backoff); retryable answers never use up the budget.
/// Existing rows start from their attempts: the budget they were judged by until now.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Refunds::Table)
                    .add_column(ColumnDef::new(Refunds::Refusals).integer().not_null().default(0))
                    .to_owned(),
            )
            .await?;
        let copy =
            Query::update().table(Refunds::Table).value(Refunds::Refusals, Expr::col(Refunds::Attempts)).to_owned();
        manager.exec_stmt(copy).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table(Refunds::Table).drop_column(Refunds::Refusals).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Refunds {
    Table,
    Attempts,
    Refusals,
}
