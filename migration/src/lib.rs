//! Schema migrations. Append-only: a migration that has shipped is never edited; add a new one.

pub use sea_orm_migration::prelude::*;

mod columns;
mod m20261123_000001_create_catalog_and_orders;
mod m20261123_000002_add_fulfilment;
mod m20261123_000003_add_refunds_and_reconciliation;
mod m20261123_000004_create_alerts;
mod m20261201_000005_add_attempt_budget_and_refund_retry;
mod m20261202_000006_manage_the_catalog;
mod m20261202_000007_create_idempotency_keys;
mod m20261202_000008_create_notifications;
mod m20261202_000009_create_sandbox_tables;
mod m20261202_000010_count_refund_refusals;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_create_catalog_and_orders::Migration),
            Box::new(m20261123_000002_add_fulfilment::Migration),
            Box::new(m20261123_000003_add_refunds_and_reconciliation::Migration),
            Box::new(m20261123_000004_create_alerts::Migration),
            Box::new(m20261201_000005_add_attempt_budget_and_refund_retry::Migration),
            Box::new(m20261202_000006_manage_the_catalog::Migration),
            Box::new(m20261202_000007_create_idempotency_keys::Migration),
            Box::new(m20261202_000008_create_notifications::Migration),
            Box::new(m20261202_000009_create_sandbox_tables::Migration),
            Box::new(m20261202_000010_count_refund_refusals::Migration),
        ]
    }
}
