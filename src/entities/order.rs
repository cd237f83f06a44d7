use sea_orm::entity::prelude::*;

use crate::domain::OrderStatus;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "orders")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique)]
    pub order_number: String,
    pub openid: String,
    pub product_id: i32,
    pub product_name: String,
    pub phone_number: String,
    pub amount: Decimal,
    pub status: OrderStatus,
    pub prepay_id: Option<String>,
    /// The `wx.requestPayment` parameters of the current prepay, as JSON.
    pub prepay_params: Option<String>,
    pub prepay_at: Option<DateTime>,
    pub transaction_id: Option<String>,
    pub paid_at: Option<DateTime>,
    /// The latest anomaly seen for this order (a callback that did not match it), for operators.
    pub anomaly: Option<String>,
    pub created_at: DateTime,
    pub updated_at: DateTime,
    /// Snapshot of the product at ordering time, for the carrier.
    pub product_code: String,
    pub face_value: Decimal,
    pub face_currency: String,
    /// Claims taken so far (each may query and/or submit).
    pub fulfil_attempts: i32,
    /// A submit may have reached the carrier: the next attempt queries before it submits.
    pub submitted: bool,
    /// The worker holding the claim, while one does.
    pub lease_owner: Option<String>,
    /// While `recharging`: when the claim may be taken over (a dead worker, or the next retry).
    pub lease_expires_at: Option<DateTime>,
    /// When fulfilment first started.
    pub recharge_at: Option<DateTime>,
    pub delivered_at: Option<DateTime>,
    pub provider_reference: Option<String>,
    pub failure_reason: Option<String>,
    /// Sum of the refunds opened (pending, submitted or done), in yuan.
    pub refund_requested: Decimal,
    /// Refunds opened so far: numbers the next `out_refund_no`, and versions concurrent requests.
    pub refund_seq: i32,
    /// The last active payment query (rate limit for `?refresh=true`).
    pub last_queried_at: Option<DateTime>,
    pub closed_at: Option<DateTime>,
    /// The claim number at the last operator retry: attempts used = `fulfil_attempts - budget_from`.
    pub budget_from: i32,
    /// When the attempt budget ran out without proof either way (`unresolved`).
    pub unresolved_at: Option<DateTime>,
    /// Snapshot of the product's country and carrier reference (none on orders placed before the
    /// catalog had them: the carrier reference was the product code then).
    pub country: Option<String>,
    pub carrier_reference: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
