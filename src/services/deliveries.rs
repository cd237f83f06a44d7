//! Deliveries from the platform (payment and refund callbacks): stored as received before anything is
//! decided, for audit, and how a failure to handle one is answered.

use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

use super::ServiceError;
use crate::domain::now_utc;
use crate::entities::payment_event;
use crate::wechat::WechatError;

/// One delivery of the platform's payment callback, as received.
pub struct CallbackDelivery<'a> {
    pub path_order_number: &'a str,
    /// The headers that matter for audit, as a JSON object.
    pub headers: String,
    pub body: &'a [u8],
}

/// Why a delivery could not be handled.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    /// The body is not JSON: stored, answered 400.
    #[error("callback body is not a JSON object")]
    Malformed,
    /// Transient: nothing was decided; the platform should redeliver.
    #[error(transparent)]
    Database(#[from] sea_orm::DbErr),
    /// The confirming `queryorder` failed: nothing was decided; the platform should redeliver.
    #[error("payment could not be confirmed with WeChat: {0}")]
    Unconfirmed(#[from] WechatError),
    /// Redelivering cannot change this (the refund of a late payment was refused by the rules, the
    /// order vanished): recorded, logged, and acknowledged so the platform stops.
    #[error("{0}")]
    Unprocessable(String),
}

impl From<ServiceError> for CallbackError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::Wechat(e) => CallbackError::Unconfirmed(e),
            ServiceError::Database(e) => CallbackError::Database(e),
            other => CallbackError::Unprocessable(other.to_string()),
        }
    }
}

/// Stores a delivery as received, before anything is decided, for audit.
pub(crate) async fn store_delivery(
    db: &impl ConnectionTrait,
    kind: &str,
    delivery: &CallbackDelivery<'_>,
) -> Result<payment_event::Model, sea_orm::DbErr> {
    payment_event::ActiveModel {
        order_number: Set(delivery.path_order_number.chars().take(64).collect()),
        kind: Set(kind.into()),
        outcome: Set("received".into()),
        detail: Set(None),
        headers: Set(delivery.headers.clone()),
        body: Set(String::from_utf8_lossy(delivery.body).into_owned()),
        received_at: Set(now_utc()),
        ..Default::default()
    }
    .insert(db)
    .await
}

pub(crate) async fn set_event_outcome(
    db: &impl ConnectionTrait,
    event_id: i64,
    outcome: &str,
    detail: Option<String>,
) -> Result<(), sea_orm::DbErr> {
    payment_event::Entity::update_many()
        .col_expr(payment_event::Column::Outcome, Expr::value(outcome))
        .col_expr(payment_event::Column::Detail, Expr::value(detail.map(|d| truncate(&d, 500))))
        .filter(payment_event::Column::Id.eq(event_id))
        .exec(db)
        .await?;
    Ok(())
}

fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}
