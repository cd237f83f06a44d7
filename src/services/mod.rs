//! Use cases. Plain async functions over a database connection and the WeChat client; nothing here
//! knows about HTTP or the scheduler.

pub mod admin;
pub mod catalog;
pub mod deliveries;
pub mod orders;
pub mod payments;
pub mod reconciliation;
pub mod refunds;
pub mod stats;

use crate::domain::OrderStatus;
use crate::wechat::WechatError;

/// The database rolled the transaction back to break a deadlock or a serialization conflict (SQLSTATE
/// `40001`, PostgreSQL's `40P01`): nothing of it was kept, and running it again is safe. InnoDB picks
/// such victims among conditional updates of one order racing through its status index.
pub(crate) fn is_conflict(error: &sea_orm::DbErr) -> bool {
    let code = database_error(error).and_then(|e| e.code());
    matches!(code.as_deref(), Some("40001" | "40P01"))
}

/// The database's own error behind a failed statement, if the database answered one.
pub(crate) fn database_error(error: &sea_orm::DbErr) -> Option<&(dyn sea_orm::sqlx::error::DatabaseError + 'static)> {
    use sea_orm::{DbErr, RuntimeErr};
    let (DbErr::Exec(RuntimeErr::SqlxError(error)) | DbErr::Query(RuntimeErr::SqlxError(error))) = error else {
        return None;
    };
    error.as_database_error()
}

#[cfg(test)]
pub(crate) mod testing {
    use migration::{Migrator, MigratorTrait};
    use sea_orm::DatabaseConnection;
    use std::sync::{Arc, Mutex};

    /// A migrated in-memory database that logs what `keep` makes of each statement it runs (`None`:
    /// not logged).
    pub async fn logged_database(keep: fn(&str) -> Option<String>) -> (DatabaseConnection, Arc<Mutex<Vec<String>>>) {
        let mut db = crate::app::connect("sqlite::memory:").await.unwrap();
        Migrator::up(&db, None).await.unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let kept = log.clone();
        db.set_metric_callback(move |info| {
            if let Some(entry) = keep(info.statement.sql.trim_start()) {
                kept.lock().unwrap().push(entry);
            }
        });
        (db, log)
    }

    /// Marks the order paid (with a made-up transaction) as a confirmed payment would.
    pub async fn mark_paid(db: &DatabaseConnection, order_number: &str) {
        use crate::domain::OrderStatus;
        use crate::entities::order;
        use sea_orm::sea_query::Expr;
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
        order::Entity::update_many()
            .col_expr(order::Column::Status, Expr::value(OrderStatus::Paid))
            .col_expr(order::Column::TransactionId, Expr::value("4200000000000000000000000001"))
            .filter(order::Column::OrderNumber.eq(order_number))
            .exec(db)
            .await
            .unwrap();
    }

    /// A fulfiller whose carrier is the sandbox's (numbers ending other than 00 to 03 are delivered at
    /// once): three attempts, a minute's lease.
    pub fn sandbox_fulfiller(
        db: &DatabaseConnection,
        writes: &crate::group_commit::GroupCommit,
    ) -> crate::fulfilment::Fulfiller {
        let settings = crate::config::FulfilmentSettings {
            max_attempts: 3,
            retry_base: std::time::Duration::from_secs(1),
            retry_max: std::time::Duration::from_secs(10),
            lease: std::time::Duration::from_secs(60),
            concurrency: 1,
            batch_size: 10,
        };
        let carrier = Arc::new(crate::fulfilment::SandboxProvider::new(db.clone(), writes.clone()));
        crate::fulfilment::Fulfiller::new(db.clone(), writes.clone(), carrier, settings)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("order not found")]
    OrderNotFound,
    #[error("product not found")]
    ProductNotFound,
    /// The product exists but is not on sale.
    #[error("product is not on sale")]
    ProductUnavailable,
    #[error("another product has this code")]
    ProductCodeTaken,
    #[error(transparent)]
    InvalidProduct(#[from] catalog::InvalidProduct),
    #[error("order is {0}")]
    OrderNotPayable(OrderStatus),
    #[error("order is {0}")]
    OrderNotRetryable(OrderStatus),
    #[error("order is {0}")]
    OrderNotRefundable(OrderStatus),
    /// Only a delivered order can be refunded in part.
    #[error("an order that was not delivered can only be refunded whole")]
    PartialRefundUndelivered,
    /// An unresolved order needs the carrier's proof, or an operator's forced reason.
    #[error("the carrier has not proved the top-up was not delivered")]
    RefundNeedsProof,
    #[error("refund not found")]
    RefundNotFound,
    #[error("refund is {0}")]
    RefundNotRetryable(crate::domain::RefundStatus),
    /// A failed refund is replaced only on WeChat's proof that it never paid it (carried: its answer).
    #[error("WeChat has not proved the refund was never paid: {0}")]
    RefundNotReplaceable(String),
    #[error("order is {0}")]
    OrderNotSettleable(OrderStatus),
    /// Every refund of the order together already comes to what it paid: a state, whatever the amount.
    #[error("order is {0} and nothing is left to refund")]
    NothingToRefund(OrderStatus),
    /// The amount is zero or more than what is left to refund (carried).
    #[error("at most {0} can be refunded")]
    RefundAmount(crate::domain::Money),
    /// The order changed between reading and writing; the caller may try again.
    #[error("order changed meanwhile")]
    OrderChanged,
    #[error(transparent)]
    Wechat(#[from] WechatError),
    #[error(transparent)]
    Database(#[from] sea_orm::DbErr),
}
