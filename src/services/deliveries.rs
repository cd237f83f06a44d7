//! Deliveries from the platform (payment and refund callbacks): stored as received, for audit, together
//! with what was decided about them, and how a failure to handle one is answered.

use futures::future::BoxFuture;
use sea_orm::{ActiveValue::Set, ConnectionTrait, DatabaseConnection, DatabaseExecutor, DbBackend, DbErr, EntityTrait};

use super::ServiceError;
use crate::entities::payment_event;
use crate::group_commit::{Batched, GroupCommit, Work};
use crate::wechat::WechatError;

/// One delivery of the platform's payment callback, as received.
pub struct CallbackDelivery<'a> {
    pub path_order_number: &'a str,
    /// The headers that matter for audit, as a JSON object.
    pub headers: String,
    pub body: &'a [u8],
    /// When it arrived (it is stored once decided).
    pub received_at: chrono::NaiveDateTime,
}

/// A [`CallbackDelivery`] that owns what it holds, for a write that outlives its request.
pub(crate) struct OwnedDelivery {
    path_order_number: String,
    headers: String,
    body: Vec<u8>,
    received_at: chrono::NaiveDateTime,
}

impl From<&CallbackDelivery<'_>> for OwnedDelivery {
    fn from(delivery: &CallbackDelivery<'_>) -> Self {
        OwnedDelivery {
            path_order_number: delivery.path_order_number.to_string(),
            headers: delivery.headers.clone(),
            body: delivery.body.to_vec(),
            received_at: delivery.received_at,
        }
    }
}

impl OwnedDelivery {
    pub(crate) fn borrow(&self) -> CallbackDelivery<'_> {
        CallbackDelivery {
            path_order_number: &self.path_order_number,
            headers: self.headers.clone(),
            body: &self.body,
            received_at: self.received_at,
        }
    }
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
    /// This order's callbacks asked WeChat too often (`RATE_LIMIT_CALLBACK_QUERIES_PER_MINUTE`):
    /// nothing was decided; the platform redelivers later (the seconds to wait are carried).
    #[error("too many confirmations for this order; retry in {0} s")]
    RateLimited(u64),
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

/// Stores a delivery as received, for audit, with what was made of it: one `INSERT` (no read-back),
/// in the caller's transaction when the decision wrote something, so the two commit together.
pub(crate) async fn store_delivery(
    db: &impl ConnectionTrait,
    kind: &str,
    delivery: &CallbackDelivery<'_>,
    outcome: &str,
    detail: Option<String>,
) -> Result<(), sea_orm::DbErr> {
    insert_event(db, delivery_event(kind, delivery, outcome, detail)).await
}

async fn insert_event(db: &impl ConnectionTrait, event: payment_event::ActiveModel) -> Result<(), sea_orm::DbErr> {
    payment_event::Entity::insert(event).exec_without_returning(db).await?;
    Ok(())
}

/// The row [`store_delivery`] inserts.
pub(crate) fn delivery_event(
    kind: &str,
    delivery: &CallbackDelivery<'_>,
    outcome: &str,
    detail: Option<String>,
) -> payment_event::ActiveModel {
    payment_event::ActiveModel {
        // PostgreSQL's text refuses NUL; anyone can put one in a path or a body.
        order_number: Set(delivery.path_order_number.chars().take(64).map(without_nul).collect()),
        kind: Set(kind.into()),
        outcome: Set(outcome.into()),
        detail: Set(detail.map(|d| truncate(&d, 500))),
        headers: Set(delivery.headers.clone()),
        // Real notifications are well under 2 KiB; a forged one must not cost 100 KiB of storage.
        body: Set(stored_body(delivery.body)),
        received_at: Set(delivery.received_at),
        ..Default::default()
    }
}

/// [`store_delivery`] of a delivery whose decision wrote nothing else, as a write that may share its
/// commit with others (see [`crate::group_commit`]).
struct StoreDelivery(payment_event::ActiveModel);

impl Work for StoreDelivery {
    type Output = ();

    fn run<'c>(&'c self, db: &'c DatabaseExecutor<'c>) -> BoxFuture<'c, Result<(), sea_orm::DbErr>> {
        Box::pin(insert_event(db, self.0.clone()))
    }
}

/// Where a delivery whose decision wrote nothing else is stored. On SQLite through the group commit:
/// there is one writer, the commit is what costs, and a statement in it is a function call. On MySQL
/// and PostgreSQL a statement is a round trip and the server's own work, so [`INSERTERS`] tasks take
/// the deliveries queued meanwhile and hand them to the group commit as one multi-row `INSERT`
/// ([`StoreDeliveries`]), which shares the commit of the batch it joins; a batch the database refuses
/// is stored row by row, each delivery answered with its own row's result.
#[derive(Clone)]
pub struct DeliveryLog {
    writes: GroupCommit,
    batched: Option<Batched<payment_event::ActiveModel, Result<(), DbErr>>>,
}

/// Batches of deliveries in flight at once on MySQL and PostgreSQL.
const INSERTERS: usize = 4;

impl DeliveryLog {
    pub fn new(db: &DatabaseConnection, writes: GroupCommit) -> Self {
        let batched = (db.get_database_backend() != DbBackend::Sqlite).then(|| {
            let writes = writes.clone();
            Batched::start(INSERTERS, move |events: Vec<payment_event::ActiveModel>| {
                let writes = writes.clone();
                Box::pin(async move {
                    let count = events.len();
                    match writes.run(StoreDeliveries(events)).await {
                        Ok(stored) => stored,
                        Err(error) => {
                            let error = error.to_string();
                            (0..count).map(|_| Err(DbErr::Custom(error.clone()))).collect()
                        }
                    }
                })
            })
        });
        DeliveryLog { writes, batched }
    }

    /// Stores `event`; answers once it is committed.
    pub(crate) async fn store(&self, event: payment_event::ActiveModel) -> Result<(), DbErr> {
        match &self.batched {
            Some(batched) => batched
                .submit(event)
                .await
                .unwrap_or_else(|| Err(DbErr::Custom("the delivery's batch did not finish".into()))),
            None => self.writes.run(StoreDelivery(event)).await,
        }
    }
}

/// Deliveries as one write: one multi-row `INSERT` in a batch's transaction (a refusal fails the
/// batch, whose writes then run alone); alone, [`insert_events`], each delivery with its own answer.
/// Taken from a pool connection of its own, each such `INSERT` also cost the ping with which the pool
/// takes a connection back.
struct StoreDeliveries(Vec<payment_event::ActiveModel>);

impl Work for StoreDeliveries {
    type Output = Vec<Result<(), DbErr>>;

    fn run<'c>(&'c self, db: &'c DatabaseExecutor<'c>) -> BoxFuture<'c, Result<Self::Output, DbErr>> {
        Box::pin(async move {
            match db {
                DatabaseExecutor::Connection(db) => Ok(insert_events(db, self.0.clone()).await),
                _ => {
                    payment_event::Entity::insert_many(self.0.clone()).exec_without_returning(db).await?;
                    Ok(self.0.iter().map(|_| Ok(())).collect())
                }
            }
        })
    }
}

/// `events` in one `INSERT` when there are several, else (or when it is refused) one by one.
async fn insert_events(db: &DatabaseConnection, events: Vec<payment_event::ActiveModel>) -> Vec<Result<(), DbErr>> {
    let count = events.len();
    if count > 1 {
        match payment_event::Entity::insert_many(events.clone()).exec_without_returning(db).await {
            Ok(_) => return (0..count).map(|_| Ok(())).collect(),
            Err(error) => {
                tracing::debug!(deliveries = count, %error, "a batch of deliveries was refused: each is stored alone")
            }
        }
    }
    let alone = events.into_iter().map(|event| insert_event(db, event));
    futures::future::join_all(alone).await
}

/// What is kept of a body: all of it up to 16 KiB, else its first 16 KiB and a mark.
const MAX_STORED_BODY: usize = 16 * 1024;

fn without_nul(c: char) -> char {
    if c == '\0' {
        char::REPLACEMENT_CHARACTER
    } else {
        c
    }
}

fn stored_body(body: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(body).chars().map(without_nul).collect();
    if text.len() <= MAX_STORED_BODY {
        return text;
    }
    let mut end = MAX_STORED_BODY;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all; the rest was not stored)", &text[..end], body.len())
}

fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::{PaginatorTrait, Statement};

    fn event(outcome: &str) -> payment_event::ActiveModel {
        let body = br#"{"returnCode":"SUCCESS"}"#;
        let delivery = CallbackDelivery {
            path_order_number: "ORD1763900000000Ab3x",
            headers: "{}".into(),
            body,
            received_at: crate::domain::now_utc(),
        };
        delivery_event("payment_callback", &delivery, outcome, None)
    }

    /// Deliveries stored together are one statement (the multi-row `INSERT` of MySQL and PostgreSQL);
    /// one the database refuses among them fails alone, and the others are each stored once.
    #[tokio::test]
    async fn deliveries_stored_together_are_one_insert_and_a_refused_one_fails_alone() {
        let (db, statements) = crate::services::testing::logged_database(|sql| {
            sql.starts_with("INSERT").then(|| sql.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        })
        .await;
        let stored = insert_events(&db, vec![event("duplicate"), event("duplicate"), event("duplicate")]).await;
        assert!(stored.iter().all(Result::is_ok), "{stored:?}");
        assert_eq!(statements.lock().unwrap().len(), 1, "{:?}", statements.lock().unwrap());

        let refuse = "CREATE TRIGGER refuse BEFORE INSERT ON payment_events WHEN NEW.outcome = 'refused' \
                      BEGIN SELECT RAISE(ABORT, 'disk full'); END";
        db.execute_raw(Statement::from_string(db.get_database_backend(), refuse)).await.unwrap();
        let stored = insert_events(&db, vec![event("duplicate"), event("refused"), event("duplicate")]).await;
        let ok: Vec<bool> = stored.iter().map(Result::is_ok).collect();
        assert_eq!(ok, [true, false, true]);
        assert_eq!(payment_event::Entity::find().count(&db).await.unwrap(), 5);
    }

    /// In a batch's transaction the deliveries are one `INSERT` and a refusal fails the batch (so that
    /// its writes run alone); alone, each refused delivery is answered by itself.
    #[tokio::test]
    async fn deliveries_in_a_batch_are_one_insert_and_alone_are_answered_each() {
        let (db, statements) = crate::services::testing::logged_database(|sql| {
            sql.starts_with("INSERT").then(|| sql.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        })
        .await;
        let txn = sea_orm::TransactionTrait::begin(&db).await.unwrap();
        let stored = StoreDeliveries(vec![event("duplicate"), event("duplicate")])
            .run(&DatabaseExecutor::Transaction(&txn))
            .await
            .unwrap();
        txn.commit().await.unwrap();
        assert_eq!(stored.len(), 2);
        assert_eq!(statements.lock().unwrap().len(), 1);

        let refuse = "CREATE TRIGGER refuse BEFORE INSERT ON payment_events WHEN NEW.outcome = 'refused' \
                      BEGIN SELECT RAISE(ABORT, 'disk full'); END";
        db.execute_raw(Statement::from_string(db.get_database_backend(), refuse)).await.unwrap();
        let deliveries = StoreDeliveries(vec![event("duplicate"), event("refused")]);
        let txn = sea_orm::TransactionTrait::begin(&db).await.unwrap();
        assert!(deliveries.run(&DatabaseExecutor::Transaction(&txn)).await.is_err(), "the batch fails");
        txn.rollback().await.unwrap();
        let alone = deliveries.run(&DatabaseExecutor::Connection(&db)).await.unwrap();
        assert_eq!(alone.iter().map(Result::is_ok).collect::<Vec<_>>(), [true, false]);
        assert_eq!(payment_event::Entity::find().count(&db).await.unwrap(), 3);
    }

    #[test]
    fn a_large_body_is_cut_at_a_character_boundary() {
        let body = "é".repeat(MAX_STORED_BODY);
        let stored = stored_body(body.as_bytes());
        assert!(stored.len() < MAX_STORED_BODY + 100, "{}", stored.len());
        assert!(stored.ends_with("bytes in all; the rest was not stored)"));
        assert_eq!(stored_body(b"{}"), "{}");
        assert_eq!(stored_body(b"a\0b"), "a\u{fffd}b");
    }
}
