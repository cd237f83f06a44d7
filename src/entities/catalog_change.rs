use sea_orm::entity::prelude::*;

/// One change to the catalog: who, what, and the product before and after (as JSON).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "catalog_changes")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub product_id: i32,
    pub actor: String,
    /// `created`, `updated`, `reordered`, `demo_removed`.
    pub action: String,
    pub before: Option<String>,
    pub after: Option<String>,
    pub changed_at: DateTime,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
