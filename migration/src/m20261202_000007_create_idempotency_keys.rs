use sea_orm_migration::prelude::*;

use crate::columns::instant;

/// `idempotency_keys`: the first answer to a request sent with an `Idempotency-Key`, so a repeat (a
/// double tap, a retry after a lost answer) gets that answer instead of a second order. One row per
/// caller, endpoint and key (hashed together into `lookup`, so the unique index stays short on MySQL).
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(IdempotencyKeys::Table)
                    .col(ColumnDef::new(IdempotencyKeys::Id).big_integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(IdempotencyKeys::Lookup).string_len(64).not_null())
                    .col(ColumnDef::new(IdempotencyKeys::RequestHash).string_len(64).not_null())
                    .col(ColumnDef::new(IdempotencyKeys::Status).integer().null())
                    .col(ColumnDef::new(IdempotencyKeys::Body).text().null())
                    .col(instant(manager, IdempotencyKeys::CreatedAt).not_null())
                    .col(instant(manager, IdempotencyKeys::CompletedAt).null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_idempotency_keys_lookup")
                    .table(IdempotencyKeys::Table)
                    .col(IdempotencyKeys::Lookup)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_idempotency_keys_created")
                    .table(IdempotencyKeys::Table)
                    .col(IdempotencyKeys::CreatedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(IdempotencyKeys::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum IdempotencyKeys {
    Table,
    Id,
    /// SHA-256 (hex) of the caller, the endpoint and the key.
    Lookup,
    /// SHA-256 (hex) of the request body: the same key with another body is refused.
    RequestHash,
    /// The first answer's status; none while it is being made.
    Status,
    Body,
    CreatedAt,
    CompletedAt,
}
