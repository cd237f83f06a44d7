use sea_orm::entity::prelude::*;

/// One call to the carrier for an order: a query or a submit, with what came of it.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "fulfilment_attempts")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub order_number: String,
    /// The claim number (`orders.fulfil_attempts`) this call belonged to.
    pub attempt: i32,
    /// `query` or `submit`.
    pub action: String,
    /// `delivered`, `pending`, `failed`, `not_found`, `unknown`.
    pub outcome: String,
    pub message: Option<String>,
    pub latency_ms: i64,
    pub worker: String,
    pub created_at: DateTime,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
