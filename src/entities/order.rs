use sea_orm::entity::prelude::*;

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
    pub status: String,
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
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
