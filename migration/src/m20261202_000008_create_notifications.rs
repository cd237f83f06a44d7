use sea_orm_migration::prelude::*;

use crate::columns::instant;

/// `notifications`: the WeChat subscribe messages sent to buyers, one per order and event (a unique key,
/// so duplicate callbacks, retries and replicas send it once), with where each stands.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Notifications::Table)
                    .col(ColumnDef::new(Notifications::Id).big_integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(Notifications::OrderNumber).string_len(32).not_null())
                    .col(ColumnDef::new(Notifications::Event).string_len(16).not_null())
                    .col(ColumnDef::new(Notifications::TemplateId).string_len(128).not_null())
                    .col(ColumnDef::new(Notifications::Data).text().not_null())
                    .col(ColumnDef::new(Notifications::Status).string_len(16).not_null())
                    .col(ColumnDef::new(Notifications::Attempts).integer().not_null().default(0))
                    .col(ColumnDef::new(Notifications::LastError).string_len(256).null())
                    .col(instant(manager, Notifications::CreatedAt).not_null())
                    .col(instant(manager, Notifications::SentAt).null())
                    .col(instant(manager, Notifications::NextAttemptAt).null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_notifications_order_event")
                    .table(Notifications::Table)
                    .col(Notifications::OrderNumber)
                    .col(Notifications::Event)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Notifications::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Notifications {
    Table,
    Id,
    OrderNumber,
    /// `delivered`, `refunding`, `refunded`.
    Event,
    TemplateId,
    /// The message's `data`, as sent (JSON).
    Data,
    /// `pending`, `sent`, `unsubscribed`, `failed`, `recorded` (sandbox: not sent).
    Status,
    Attempts,
    LastError,
    CreatedAt,
    SentAt,
    /// While pending: when the next try is due (also the lease of the try under way).
    NextAttemptAt,
}
