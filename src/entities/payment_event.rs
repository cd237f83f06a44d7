use sea_orm::entity::prelude::*;

/// One delivery from the platform, stored as received, with what the service made of it.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "payment_events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub order_number: String,
    pub kind: String,
    pub outcome: String,
    pub detail: Option<String>,
    pub headers: String,
    pub body: String,
    pub received_at: DateTime,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
