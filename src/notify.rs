//! WeChat subscribe messages to the buyer: the top-up arrived, the money is on its way back, the refund
//! is done. One message per order and event (a unique key, so duplicate callbacks, retries and replicas
//! send it once), sent in the background and retried on transient errors by the compensation sweep.
//! Nothing here ever changes or delays an order: every failure is recorded on the message and logged.
//! In sandbox mode the message is recorded as it would have been sent, and not sent.

use chrono::Duration as Span;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    SqlErr, TryIntoModel,
};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{NotifySettings, NotifyTemplate};
use crate::domain::{now_utc, Money};
use crate::entities::{notification, order};
use crate::group_commit::GroupCommit;
use crate::wechat::subscribe::{self, SendOutcome, SubscribeMessage};

/// What the buyer is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotifyEvent {
    /// The top-up arrived.
    Delivered,
    /// It could not be delivered (or the payment came too late); a refund was opened.
    Refunding,
    /// A refund completed.
    Refunded,
}

impl NotifyEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::Delivered => "delivered",
            NotifyEvent::Refunding => "refunding",
            NotifyEvent::Refunded => "refunded",
        }
    }

    fn index(self) -> usize {
        match self {
            NotifyEvent::Delivered => 0,
            NotifyEvent::Refunding => 1,
            NotifyEvent::Refunded => 2,
        }
    }

    fn status_text(self) -> &'static str {
        match self {
            NotifyEvent::Delivered => "充值成功",
            NotifyEvent::Refunding => "退款中",
            NotifyEvent::Refunded => "已退款",
        }
    }
}

/// Whom a message is about: an order to read, or one the caller holds.
enum To {
    Number(String),
    Order(Box<order::Model>),
}

impl To {
    fn order_number(&self) -> &str {
        match self {
            To::Number(number) => number,
            To::Order(order) => &order.order_number,
        }
    }
}

/// Tries a message gets before it is `failed`.
const MAX_ATTEMPTS: i32 = 6;
/// A try under way holds the message this long (its lease), so one replica sends it.
const LEASE: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    db: DatabaseConnection,
    /// Where a message is recorded: the record shares its commit with whatever else is written meanwhile.
    writes: GroupCommit,
    http: reqwest::Client,
    base: String,
    sandbox: bool,
    settings: NotifySettings,
}

impl Notifier {
    pub fn new(
        db: DatabaseConnection,
        writes: GroupCommit,
        settings: NotifySettings,
        api_base: &str,
        sandbox: bool,
    ) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Notifier { inner: Arc::new(Inner { db, writes, http, base: api_base.to_string(), sandbox, settings }) }
    }

    /// Records the message and sends it in the background; returns at once.
    pub fn notify(&self, order_number: &str, event: NotifyEvent, reason: Option<String>) {
        self.spawn(To::Number(order_number.to_string()), event, reason);
    }

    /// [`Notifier::notify`] about an order the caller holds: the buyer, the product and the amount
    /// never change, so the order is not read again.
    pub fn notify_order(&self, order: order::Model, event: NotifyEvent, reason: Option<String>) {
        self.spawn(To::Order(Box::new(order)), event, reason);
    }

    fn spawn(&self, to: To, event: NotifyEvent, reason: Option<String>) {
        let this = self.clone();
        tokio::spawn(crate::telemetry::contain_panics("notify", async move {
            if let Err(error) = this.record_and_send(&to, event, reason.as_deref()).await {
                let order_number = to.order_number();
                tracing::error!(order_number, event = event.as_str(), %error, "notification could not be recorded");
            }
        }));
    }

    /// The template for `event`: configured, or in sandbox mode a stand-in so the message is recorded.
    fn template(&self, event: NotifyEvent) -> Option<NotifyTemplate> {
        if let Some(template) = &self.inner.settings.templates[event.index()] {
            return Some(template.clone());
        }
        self.inner.sandbox.then(|| {
            let defaults = crate::config::NOTIFY_EVENTS[event.index()].2;
            let fields = defaults
                .split(',')
                .filter_map(|item| item.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            NotifyTemplate { id: format!("sandbox-{}", event.as_str()), fields }
        })
    }

    async fn record_and_send(&self, to: &To, event: NotifyEvent, reason: Option<&str>) -> Result<(), DbErr> {
        let Some(template) = self.template(event) else { return Ok(()) };
        let read;
        let order: &order::Model = match to {
            To::Order(order) => order,
            To::Number(number) => {
                let found = order::Entity::find().filter(order::Column::OrderNumber.eq(number));
                let Some(found) = found.one(&self.inner.db).await? else { return Ok(()) };
                read = found;
                &read
            }
        };
        let order_number = order.order_number.as_str();
        let data = message_data(&template, order, event, reason);
        let now = now_utc();
        let row = notification::ActiveModel {
            order_number: Set(order_number.to_string()),
            event: Set(event.as_str().into()),
            template_id: Set(template.id.clone()),
            data: Set(data.to_string()),
            status: Set(if self.inner.sandbox { "recorded" } else { "pending" }.into()),
            attempts: Set(if self.inner.sandbox { 0 } else { 1 }),
            last_error: Set(None),
            created_at: Set(now),
            sent_at: Set(None),
            next_attempt_at: Set((!self.inner.sandbox).then(|| now + lease())),
            ..Default::default()
        };
        let recorded = self.inner.writes.write(move |db| {
            let row = row.clone();
            // Not `row.insert(db)`: on MySQL, which has no RETURNING, that reads the row back.
            Box::pin(async move {
                let id = notification::Entity::insert(row.clone()).exec(db).await?.last_insert_id;
                let mut row = row;
                row.id = Set(id);
                row.try_into_model()
            })
        });
        let row = match recorded.await {
            Ok(row) => row,
            // Already recorded by another delivery, replica or retry.
            Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => return Ok(()),
            Err(e) => return Err(e),
        };
        if self.inner.sandbox {
            tracing::info!(order_number, event = event.as_str(), "sandbox: notification recorded, not sent");
            return Ok(());
        }
        self.send(&row, &order.openid).await
    }

    /// Sends a claimed message and records what happened.
    async fn send(&self, row: &notification::Model, openid: &str) -> Result<(), DbErr> {
        let data: serde_json::Value = serde_json::from_str(&row.data).unwrap_or_default();
        let settings = &self.inner.settings;
        let message = SubscribeMessage {
            touser: openid,
            template_id: &row.template_id,
            page: &settings.page,
            data: &data,
            miniprogram_state: &settings.miniprogram_state,
            lang: &settings.lang,
        };
        let outcome = subscribe::send(&self.inner.http, &self.inner.base, &message).await;
        let now = now_utc();
        let (status, error, next, sent_at) = match outcome {
            SendOutcome::Sent => ("sent", None, None, Some(now)),
            SendOutcome::NotSubscribed => {
                tracing::info!(order_number = row.order_number, event = row.event, "buyer did not subscribe (43101)");
                ("unsubscribed", None, None, None)
            }
            SendOutcome::Refused(reason) => {
                tracing::warn!(order_number = row.order_number, event = row.event, reason, "notification refused");
                ("failed", Some(reason), None, None)
            }
            SendOutcome::Transient(reason) if row.attempts >= MAX_ATTEMPTS => {
                tracing::warn!(order_number = row.order_number, event = row.event, reason, "notification given up");
                ("failed", Some(reason), None, None)
            }
            SendOutcome::Transient(reason) => ("pending", Some(reason), Some(now + backoff(row.attempts)), None),
        };
        metrics::counter!("notifications_total", "event" => row.event.clone(), "status" => status).increment(1);
        notification::Entity::update_many()
            .col_expr(notification::Column::Status, Expr::value(status))
            .col_expr(
                notification::Column::LastError,
                Expr::value(error.map(|e| e.chars().take(250).collect::<String>())),
            )
            .col_expr(notification::Column::NextAttemptAt, Expr::value(next))
            .col_expr(notification::Column::SentAt, Expr::value(sent_at))
            .filter(notification::Column::Id.eq(row.id))
            .exec(&self.inner.db)
            .await?;
        Ok(())
    }

    /// Sends the pending messages whose next try is due (the compensation sweep calls it). Each is
    /// claimed first (`attempts` versions it), so two replicas never send one twice.
    pub async fn retry_due(&self) -> Result<u64, DbErr> {
        let db = &self.inner.db;
        let now = now_utc();
        let due = notification::Entity::find()
            .filter(notification::Column::Status.eq("pending"))
            .filter(notification::Column::NextAttemptAt.lte(now))
            .order_by_asc(notification::Column::NextAttemptAt)
            .limit(50)
            .all(db)
            .await?;
        let mut sent = 0;
        for row in due {
            let claimed = notification::Entity::update_many()
                .col_expr(notification::Column::Attempts, Expr::value(row.attempts.saturating_add(1)))
                .col_expr(notification::Column::NextAttemptAt, Expr::value(now + lease()))
                .filter(notification::Column::Id.eq(row.id))
                .filter(notification::Column::Status.eq("pending"))
                .filter(notification::Column::Attempts.eq(row.attempts))
                .exec(db)
                .await?;
            if claimed.rows_affected != 1 {
                continue;
            }
            let Some(order) =
                order::Entity::find().filter(order::Column::OrderNumber.eq(&row.order_number)).one(db).await?
            else {
                continue;
            };
            let row = notification::Model { attempts: row.attempts.saturating_add(1), ..row };
            self.send(&row, &order.openid).await?;
            sent += 1;
        }
        Ok(sent)
    }
}

fn lease() -> Span {
    Span::from_std(LEASE).unwrap_or_else(|_| Span::minutes(1))
}

/// 1, 2, 4, … minutes after the `attempts`-th try, at most an hour.
fn backoff(attempts: i32) -> Span {
    let exponent = u32::try_from(attempts.saturating_sub(1)).unwrap_or(0).min(6);
    Span::minutes(2i64.saturating_pow(exponent).min(60))
}

/// The template's `data`: each key filled from its order field, cut to what its kind allows (a value too
/// long would make WeChat refuse the whole message).
pub fn message_data(
    template: &NotifyTemplate,
    order: &order::Model,
    event: NotifyEvent,
    reason: Option<&str>,
) -> serde_json::Value {
    let beijing = chrono::FixedOffset::east_opt(8 * 3600).map(|zone| now_utc().and_utc().with_timezone(&zone));
    let time = beijing.map(|t| t.format("%Y-%m-%d %H:%M").to_string()).unwrap_or_default();
    let mut data = serde_json::Map::new();
    for (key, source) in &template.fields {
        let value = match source.as_str() {
            "product" => order.product_name.clone(),
            "amount" => format!("{}元", Money::from_stored(order.amount)),
            "phone" => order.phone_number.clone(),
            "order" => order.order_number.clone(),
            "time" => time.clone(),
            "status" => event.status_text().to_string(),
            "reason" => reason.map_or_else(|| "充值未成功，款项原路退回".to_string(), str::to_string),
            _ => String::new(),
        };
        data.insert(key.clone(), serde_json::json!({ "value": fit(key, &value) }));
    }
    serde_json::Value::Object(data)
}

/// Cuts a value to the length its key's kind takes (`thing` 20 characters, `character_string` 32, …).
pub fn fit(key: &str, value: &str) -> String {
    let kind = key.trim_end_matches(|c: char| c.is_ascii_digit());
    let max = match kind {
        "thing" => 20,
        "character_string" | "number" | "letter" => 32,
        "phone_number" => 17,
        "phrase" => 5,
        "name" => 10,
        "amount" | "time" | "date" => 64,
        _ => 20,
    };
    let cut: String = value.chars().take(max).collect();
    if kind == "character_string" {
        // Letters, digits and symbols only.
        return cut.chars().filter(char::is_ascii_graphic).collect();
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PhoneNumber;
    use crate::services::orders::place_order;

    /// A sandbox notifier (messages recorded, not sent) on a database that logs the first words of
    /// every statement, and an order to notify about.
    async fn notifier() -> (Notifier, order::Model, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        let (db, log) = crate::services::testing::logged_database(|sql| {
            Some(sql.split_whitespace().take(4).collect::<Vec<_>>().join(" ").replace(['"', '`'], ""))
        })
        .await;
        let phone = PhoneNumber::parse("+8613800000000").unwrap();
        let order = place_order(&db, "oTestBuyer", 1, &phone).await.unwrap();
        log.lock().unwrap().clear();
        let writes = GroupCommit::new(db.clone());
        (Notifier::new(db, writes, NotifySettings::default(), "http://127.0.0.1:9", true), order, log)
    }

    #[tokio::test]
    async fn a_message_about_a_held_order_is_one_insert_and_no_read() {
        let (notifier, order, log) = notifier().await;
        let number = order.order_number.clone();
        notifier.record_and_send(&To::Order(Box::new(order)), NotifyEvent::Delivered, None).await.unwrap();
        assert_eq!(*log.lock().unwrap(), ["INSERT INTO notifications (order_number,"]);

        // By number, the order is read first; the message is recorded once.
        notifier.record_and_send(&To::Number(number), NotifyEvent::Refunded, None).await.unwrap();
        let log = log.lock().unwrap();
        assert!(log[1].starts_with("SELECT") && log[1].contains("orders"), "{log:?}");
        assert_eq!(log.len(), 3, "{log:?}");
    }

    #[test]
    fn values_are_cut_to_their_kind_and_never_fail() {
        assert_eq!(fit("thing1", &"话".repeat(30)).chars().count(), 20);
        assert_eq!(fit("character_string3", "ORD1764630000000Ab3x"), "ORD1764630000000Ab3x");
        assert_eq!(fit("character_string3", "单号 ORD1"), "ORD1");
        assert_eq!(fit("phrase2", "充值成功了吗啊"), "充值成功了");
        assert_eq!(fit("amount2", "12.00元"), "12.00元");
    }

    #[test]
    fn retries_back_off_to_an_hour() {
        assert_eq!(backoff(1), Span::minutes(1));
        assert_eq!(backoff(3), Span::minutes(4));
        assert_eq!(backoff(i32::MAX), Span::minutes(60));
    }
}
