use sea_orm::entity::prelude::*;

use crate::domain::RefundStatus;

/// One refund of (part of) an order's payment. `out_refund_no` is fixed when the row is written, before
/// WeChat is called, and reused on every retry.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "refunds")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub order_number: String,
    #[sea_orm(unique)]
    pub out_refund_no: String,
    pub amount: Decimal,
    pub reason: String,
    /// `operator`, `auto_failed` (the top-up failed), `auto_closed` (paid after the order closed).
    pub source: String,
    pub status: RefundStatus,
    pub refund_id: Option<String>,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: DateTime,
    pub updated_at: DateTime,
    /// When a pending refund is sent again (backoff after a retryable refusal).
    pub next_attempt_at: Option<DateTime>,
    /// WeChat's permanent refusals, the count `REFUND_MAX_ATTEMPTS` limits (`attempts` counts every try).
    pub refusals: i32,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
