use sea_orm::entity::prelude::*;

/// Something an operator must hear about, once per order and kind.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "alerts")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// `anomaly`, `topup_failed`, `refund_failed`, `reconciliation_mismatch`.
    pub kind: String,
    pub order_number: String,
    pub message: String,
    /// `pending`, `sent`, `failed`, `rate_limited`, `disabled`.
    pub delivery: String,
    pub created_at: DateTime,
    pub sent_at: Option<DateTime>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
