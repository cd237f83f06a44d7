use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "products")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    #[sea_orm(unique)]
    pub code: String,
    pub name: String,
    pub description: String,
    pub price: Decimal,
    pub face_value: Decimal,
    pub face_currency: String,
    /// The carrier's name, as shown to buyers.
    pub carrier: String,
    /// Selling: listed and orderable.
    pub active: bool,
    pub sort_order: i32,
    pub created_at: DateTime,
    /// ISO 3166-1 alpha-2 country of the phone numbers this product tops up.
    pub country: String,
    /// What the carrier adapter sends for this product (an operator id, a SKU).
    pub carrier_reference: String,
    pub updated_at: Option<DateTime>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
