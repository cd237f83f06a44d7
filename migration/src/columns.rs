//! Column helpers shared by the migrations, so every backend gets the same precision.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

/// A UTC instant stored without a zone. MySQL's plain `DATETIME` would round away the milliseconds and
/// `TIMESTAMP` carries the 2038 limit and session-zone conversions, so MySQL gets `DATETIME(3)`.
pub fn instant(manager: &SchemaManager, col: impl IntoIden) -> ColumnDef {
    let mut def = ColumnDef::new(col);
    match manager.get_database_backend() {
        DatabaseBackend::MySql => def.custom(Alias::new("DATETIME(3)")),
        _ => def.date_time(),
    };
    def
}

/// An amount of money in yuan: `DECIMAL(12, 2)`.
pub fn money(col: impl IntoIden) -> ColumnDef {
    let mut def = ColumnDef::new(col);
    def.decimal_len(12, 2);
    def
}
