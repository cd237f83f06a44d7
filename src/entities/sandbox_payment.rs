use sea_orm::entity::prelude::*;

/// The simulated WeChat side's payment of one order (sandbox mode only). Amounts in fen, as on the wire.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sandbox_payments")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// `out_trade_no`.
    #[sea_orm(unique)]
    pub order_number: String,
    pub total_fee: i64,
    /// The sum of the accepted refunds; never more than `total_fee`.
    pub refunded_fee: i64,
    pub state: SandboxTradeState,
    pub transaction_id: Option<String>,
    pub created_at: DateTime,
    /// When the simulated user paid.
    pub paid_at: Option<DateTime>,
}

/// The `trade_state` values the sandbox produces, stored as WeChat spells them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum SandboxTradeState {
    #[sea_orm(string_value = "NOTPAY")]
    NotPay,
    #[sea_orm(string_value = "SUCCESS")]
    Success,
    #[sea_orm(string_value = "REFUND")]
    Refund,
    #[sea_orm(string_value = "CLOSED")]
    Closed,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
