//! Use cases. Plain async functions over a database connection and the WeChat client; nothing here
//! knows about HTTP or the scheduler.

pub mod admin;
pub mod orders;
pub mod payments;
pub mod reconciliation;
pub mod refunds;
pub mod stats;

use crate::domain::OrderStatus;
use crate::wechat::WechatError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("order not found")]
    OrderNotFound,
    #[error("product not found")]
    ProductNotFound,
    #[error("order is {0}")]
    OrderNotPayable(OrderStatus),
    #[error("order is {0}")]
    OrderNotRetryable(OrderStatus),
    #[error("order is {0}")]
    OrderNotRefundable(OrderStatus),
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

/// Reads a stored status; an unknown value is data corruption, reported as a database error.
pub(crate) fn stored_status(value: &str) -> Result<OrderStatus, sea_orm::DbErr> {
    value.parse().map_err(|_| sea_orm::DbErr::Custom(format!("unknown order status {value:?} in the database")))
}
