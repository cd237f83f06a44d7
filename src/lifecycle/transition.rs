use sea_orm::sea_query::{Condition, Expr, SimpleExpr};
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};

use crate::domain::{now_utc, OrderEvent, OrderStatus, TransitionError};
use crate::group_commit::GroupCommit;

use crate::entities::order;

/// What a guarded transition did.
#[derive(Debug, PartialEq, Eq)]
pub enum Moved {
    /// This caller's `UPDATE` matched: the order is now `to`.
    Won { from: OrderStatus, to: OrderStatus },
    /// The order changed since it was read (another caller won, or a guard no longer holds).
    Lost,
    /// The state machine has no such edge from the order's status.
    Refused(TransitionError),
}

impl Moved {
    pub fn won(&self) -> bool {
        matches!(self, Moved::Won { .. })
    }
}

/// The one way an order's status changes: `UPDATE orders SET status = <apply(event)>, … WHERE
/// order_number = ? AND status = <the status read, a source of event> AND <guard>`. The target comes
/// from [`OrderStatus::apply`], the status guard from [`OrderStatus::sources`] (and
/// [`OrderStatus::requires_nothing_submitted`]); the affected-row count says whether this caller made
/// the transition.
/// `guard` adds what the caller's decision was based on (a claim's version, a lease, a refund counter).
pub async fn transition(
    db: &impl ConnectionTrait,
    seen: &order::Model,
    event: OrderEvent,
    sets: Vec<(order::Column, SimpleExpr)>,
    guard: Condition,
) -> Result<Moved, DbErr> {
    let to = match seen.status.apply(event) {
        Ok(to) => to,
        Err(refused) => return Ok(Moved::Refused(refused)),
    };
    // The guard is the status the caller decided on, one of `sources(event)`; not the whole list: an
    // order that moved on meanwhile (say `paid → recharging → unresolved`) must be decided again.
    debug_assert!(OrderStatus::sources(event).contains(&seen.status));
    let mut update = order::Entity::update_many()
        .col_expr(order::Column::Status, Expr::value(to))
        .col_expr(order::Column::UpdatedAt, Expr::value(now_utc()));
    for (column, value) in sets {
        update = update.col_expr(column, value);
    }
    let mut condition = Condition::all()
        .add(order::Column::OrderNumber.eq(&seen.order_number))
        .add(order::Column::Status.eq(seen.status))
        .add(guard);
    if seen.status.requires_nothing_submitted(event) {
        condition = condition.add(order::Column::Submitted.eq(false));
    }
    let result = update.filter(condition).exec(db).await?;
    Ok(if result.rows_affected == 1 { Moved::Won { from: seen.status, to } } else { Moved::Lost })
}

/// [`transition`] as a write that may share its commit with others (see [`crate::group_commit`]):
/// answered once it is committed, with the same affected-row verdict.
pub async fn transition_shared(
    writes: &GroupCommit,
    seen: &order::Model,
    event: OrderEvent,
    sets: Vec<(order::Column, SimpleExpr)>,
    guard: Condition,
) -> Result<Moved, DbErr> {
    let seen = seen.clone();
    writes
        .write(move |db| {
            let (seen, sets, guard) = (seen.clone(), sets.clone(), guard.clone());
            Box::pin(async move { transition(db, &seen, event, sets, guard).await })
        })
        .await
}
