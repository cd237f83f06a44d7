use sea_orm::entity::prelude::*;

/// The first answer to a request sent with an `Idempotency-Key`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "idempotency_keys")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// SHA-256 (hex) of the caller, the endpoint and the key.
    #[sea_orm(unique)]
    pub lookup: String,
    /// SHA-256 (hex) of the request body.
    pub request_hash: String,
    /// The answer's status; none while the first request is being handled.
    pub status: Option<i32>,
    pub body: Option<String>,
    pub created_at: DateTime,
    pub completed_at: Option<DateTime>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
