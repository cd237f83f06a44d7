use sea_orm::entity::prelude::*;

/// What the simulated carrier was sent under one reference (sandbox mode only).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sandbox_topups")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Our order number: the carrier's idempotency key.
    #[sea_orm(unique)]
    pub reference: String,
    /// What the carrier received; none while only a lost first submit is recorded.
    pub state: Option<SandboxTopUpState>,
    /// The first submit was "lost" (numbers ending in `01`).
    pub lost_first_submit: bool,
    pub created_at: DateTime,
}

/// Where a top-up the simulated carrier received stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum SandboxTopUpState {
    #[sea_orm(string_value = "delivered")]
    Delivered,
    #[sea_orm(string_value = "pending")]
    Pending,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
