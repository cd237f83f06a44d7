use sea_orm::entity::prelude::*;

/// A refund the simulated WeChat side accepted (sandbox mode only), one per `out_refund_no`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sandbox_refunds")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique)]
    pub out_refund_no: String,
    /// `out_trade_no` of the refunded payment.
    pub order_number: String,
    pub refund_fee: i64,
    pub created_at: DateTime,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
