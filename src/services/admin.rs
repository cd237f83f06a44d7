//! What operators need: every order, its whole history, and a way to put a failed top-up back in line.

use sea_orm::sea_query::{Condition, Expr};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder};

use super::orders::find_by_number;
use super::ServiceError;
use crate::domain::{OrderEvent, OrderStatus, Paging, RefundStatus};
use crate::entities::{fulfilment_attempt, notification, order, payment_event, refund};
use crate::lifecycle::{transition, Moved};

/// Which orders an operator wants to see.
#[derive(Clone, Debug, Default)]
pub struct OrderFilter {
    pub status: Option<OrderStatus>,
    /// Only orders with a recorded anomaly.
    pub anomalies_only: bool,
    /// Only orders with a refund that failed (and waits for an operator).
    pub failed_refunds_only: bool,
    pub search: Option<String>,
}

pub async fn list_orders(
    db: &impl ConnectionTrait,
    filter: &OrderFilter,
    paging: Paging,
) -> Result<(Vec<order::Model>, u64), ServiceError> {
    let mut query = order::Entity::find().order_by_desc(order::Column::CreatedAt).order_by_desc(order::Column::Id);
    if let Some(status) = filter.status {
        query = query.filter(order::Column::Status.eq(status));
    }
    if filter.anomalies_only {
        query = query.filter(order::Column::Anomaly.is_not_null());
    }
    if filter.failed_refunds_only {
        let failed = sea_orm::sea_query::Query::select()
            .column(refund::Column::OrderNumber)
            .from(refund::Entity)
            .and_where(refund::Column::Status.eq(RefundStatus::Failed))
            .to_owned();
        query = query.filter(order::Column::OrderNumber.in_subquery(failed));
    }
    if let Some(search) = filter.search.as_deref().filter(|s| !s.is_empty()) {
        query = query.filter(
            sea_orm::Condition::any()
                .add(order::Column::OrderNumber.eq(search))
                .add(order::Column::PhoneNumber.eq(search)),
        );
    }
    let paginator = query.paginate(db, paging.size());
    let total = paginator.num_items().await?;
    let items = paginator.fetch_page(paging.index()).await?;
    Ok((items, total))
}

/// An order with every payment delivery and every carrier call, oldest first.
pub struct OrderHistory {
    pub order: order::Model,
    pub payment_events: Vec<payment_event::Model>,
    pub attempts: Vec<fulfilment_attempt::Model>,
    pub refunds: Vec<refund::Model>,
    pub notifications: Vec<notification::Model>,
}

pub async fn order_history(db: &impl ConnectionTrait, order_number: &str) -> Result<OrderHistory, ServiceError> {
    let order = find_by_number(db, order_number).await?.ok_or(ServiceError::OrderNotFound)?;
    let payment_events = payment_event::Entity::find()
        .filter(payment_event::Column::OrderNumber.eq(order_number))
        .order_by_asc(payment_event::Column::Id)
        .all(db)
        .await?;
    let attempts = fulfilment_attempt::Entity::find()
        .filter(fulfilment_attempt::Column::OrderNumber.eq(order_number))
        .order_by_asc(fulfilment_attempt::Column::Id)
        .all(db)
        .await?;
    let refunds = super::refunds::refunds_of(db, order_number).await?;
    let notifications = super::orders::notifications_of(db, order_number).await?;
    Ok(OrderHistory { order, payment_events, attempts, refunds, notifications })
}

/// Makes a `failed` or `unresolved` order due again with a fresh attempt budget. The claim's version
/// (`fulfil_attempts`) is kept, so a stale task of an earlier claim can never write over the new one;
/// the budget restarts from it (`budget_from`). The carrier is still queried before any new submit
/// (the `submitted` mark stays), so a retry can never deliver twice.
pub async fn retry_order(db: &impl ConnectionTrait, order_number: &str) -> Result<order::Model, ServiceError> {
    let order = find_by_number(db, order_number).await?.ok_or(ServiceError::OrderNotFound)?;
    let sets = vec![
        (order::Column::BudgetFrom, Expr::value(order.fulfil_attempts)),
        (order::Column::FailureReason, Expr::value(Option::<String>::None)),
        (order::Column::LeaseOwner, Expr::value(Option::<String>::None)),
        (order::Column::LeaseExpiresAt, Expr::value(Option::<chrono::NaiveDateTime>::None)),
    ];
    operator_transition(db, &order, OrderEvent::RetryRequested, sets, ServiceError::OrderNotRetryable).await?;
    tracing::info!(order_number, "operator retry: order is due again");
    find_by_number(db, order_number).await?.ok_or(ServiceError::OrderNotFound)
}

/// An operator's transition of the order as read: no claim may have been taken meanwhile (the claim's
/// version is the guard). `refused` names the error for an order in the wrong state.
async fn operator_transition(
    db: &impl ConnectionTrait,
    order: &order::Model,
    event: OrderEvent,
    sets: Vec<(order::Column, sea_orm::sea_query::SimpleExpr)>,
    refused: fn(OrderStatus) -> ServiceError,
) -> Result<(), ServiceError> {
    let guard = Condition::all().add(order::Column::FulfilAttempts.eq(order.fulfil_attempts));
    match transition(db, order, event, sets, guard).await? {
        Moved::Won { .. } => Ok(()),
        Moved::Refused(refusal) => Err(refused(refusal.from)),
        Moved::Lost => Err(ServiceError::OrderChanged),
    }
}

/// An operator settles an `unresolved` order as delivered (they checked with the carrier); their note
/// is kept on the order (`failure_reason`) and in the log.
pub async fn mark_delivered(
    db: &impl ConnectionTrait,
    order_number: &str,
    note: &str,
) -> Result<order::Model, ServiceError> {
    let order = find_by_number(db, order_number).await?.ok_or(ServiceError::OrderNotFound)?;
    let now = crate::domain::now_utc();
    let sets = vec![
        (order::Column::DeliveredAt, Expr::value(now)),
        (order::Column::FailureReason, Expr::value(format!("marked delivered by an operator: {note}"))),
        (order::Column::LeaseOwner, Expr::value(Option::<String>::None)),
        (order::Column::LeaseExpiresAt, Expr::value(Option::<chrono::NaiveDateTime>::None)),
    ];
    operator_transition(db, &order, OrderEvent::MarkedDelivered, sets, ServiceError::OrderNotSettleable).await?;
    tracing::warn!(order_number, note, "operator marked an unresolved order delivered");
    find_by_number(db, order_number).await?.ok_or(ServiceError::OrderNotFound)
}

pub async fn list_alerts(
    db: &impl ConnectionTrait,
    paging: Paging,
) -> Result<(Vec<crate::entities::alert::Model>, u64), ServiceError> {
    use crate::entities::alert;
    let paginator = alert::Entity::find().order_by_desc(alert::Column::Id).paginate(db, paging.size());
    let total = paginator.num_items().await?;
    Ok((paginator.fetch_page(paging.index()).await?, total))
}
