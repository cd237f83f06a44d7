use sea_orm::entity::prelude::*;

/// A WeChat subscribe message to the buyer, one per order and event.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "notifications")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub order_number: String,
    /// `delivered`, `refunding`, `refunded`.
    pub event: String,
    pub template_id: String,
    /// The message's `data`, as sent (JSON).
    pub data: String,
    /// `pending`, `sent`, `unsubscribed`, `failed`, `recorded` (sandbox: not sent).
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: DateTime,
    pub sent_at: Option<DateTime>,
    pub next_attempt_at: Option<DateTime>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
