//! Alerts to a WeCom group robot (`ALERT_WEBHOOK_URL`). Raising one never waits and never fails the flow
//! that raised it: it is recorded (one per order and kind, by a unique key, so replicas and repeats
//! de-duplicate), then sent in the background, at most `ALERT_MAX_PER_MINUTE` per instance.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, SqlErr,
};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::domain::now_utc;
use crate::entities::alert;

/// What went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertKind {
    /// A forged or mismatched payment callback.
    Anomaly,
    /// A top-up failed for good.
    TopUpFailed,
    /// A top-up's outcome is still unknown after the attempt budget: an operator must settle it.
    TopUpUnresolved,
    /// WeChat refused a refund with `NOTENOUGH`: the merchant's balance must be topped up.
    MerchantFundsLow,
    /// WeChat refused a refund for good, or it failed there.
    RefundFailed,
    /// The day's books do not balance for an order.
    ReconciliationMismatch,
    /// A request handler or a background task panicked (keyed by the hour, not an order).
    Panic,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Anomaly => "anomaly",
            AlertKind::TopUpFailed => "topup_failed",
            AlertKind::TopUpUnresolved => "topup_unresolved",
            AlertKind::MerchantFundsLow => "merchant_funds_low",
            AlertKind::RefundFailed => "refund_failed",
            AlertKind::ReconciliationMismatch => "reconciliation_mismatch",
            AlertKind::Panic => "panic",
        }
    }

    fn title(self) -> &'static str {
        match self {
            AlertKind::Anomaly => "支付回调异常 / payment callback anomaly",
            AlertKind::TopUpFailed => "充值失败 / top-up failed",
            AlertKind::TopUpUnresolved => "充值结果未知 / top-up outcome unknown",
            AlertKind::MerchantFundsLow => "商户余额不足 / merchant balance too low for a refund",
            AlertKind::RefundFailed => "退款失败 / refund failed",
            AlertKind::ReconciliationMismatch => "对账不平 / books do not balance",
            AlertKind::Panic => "程序异常 / the service panicked",
        }
    }
}

#[derive(Clone)]
pub struct Alerter {
    inner: Arc<Inner>,
}

struct Inner {
    db: DatabaseConnection,
    http: reqwest::Client,
    url: Option<String>,
    max_per_minute: usize,
    sent: Mutex<VecDeque<Instant>>,
}

impl Alerter {
    pub fn new(db: DatabaseConnection, url: Option<String>, max_per_minute: u32) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap_or_default();
        Alerter {
            inner: Arc::new(Inner { db, http, url, max_per_minute: max_per_minute as usize, sent: Mutex::default() }),
        }
    }

    /// Records and sends in the background; returns at once.
    pub fn raise(&self, kind: AlertKind, order_number: &str, message: &str) {
        let this = self.clone();
        let (order_number, message) = (order_number.to_string(), message.chars().take(500).collect::<String>());
        tokio::spawn(async move {
            if let Err(error) = this.record_and_send(kind, &order_number, &message).await {
                tracing::error!(kind = kind.as_str(), order_number, %error, "alert could not be recorded");
            }
        });
    }

    async fn record_and_send(&self, kind: AlertKind, order_number: &str, message: &str) -> Result<(), DbErr> {
        let row = alert::ActiveModel {
            kind: Set(kind.as_str().into()),
            order_number: Set(order_number.into()),
            message: Set(message.into()),
            delivery: Set("pending".into()),
            created_at: Set(now_utc()),
            sent_at: Set(None),
            ..Default::default()
        };
        let row = match row.insert(&self.inner.db).await {
            Ok(row) => row,
            Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => return Ok(()),
            Err(e) => return Err(e),
        };
        tracing::warn!(kind = kind.as_str(), order_number, message, "alert raised");
        let delivery = match &self.inner.url {
            None => "disabled",
            Some(_) if !self.take_slot() => "rate_limited",
            Some(url) => self.send(url, kind, order_number, message).await,
        };
        let sent_at = (delivery == "sent").then(now_utc);
        alert::Entity::update_many()
            .col_expr(alert::Column::Delivery, Expr::value(delivery))
            .col_expr(alert::Column::SentAt, Expr::value(sent_at))
            .filter(alert::Column::Id.eq(row.id))
            .exec(&self.inner.db)
            .await?;
        Ok(())
    }

    fn take_slot(&self) -> bool {
        let Ok(mut sent) = self.inner.sent.lock() else { return false };
        let now = Instant::now();
        while sent.front().is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60)) {
            sent.pop_front();
        }
        if sent.len() >= self.inner.max_per_minute {
            return false;
        }
        sent.push_back(now);
        true
    }

    async fn send(&self, url: &str, kind: AlertKind, order_number: &str, message: &str) -> &'static str {
        let content = format!("**{}**\n> 订单 / order: `{order_number}`\n> {message}", kind.title());
        let body = serde_json::json!({"msgtype": "markdown", "markdown": {"content": content}});
        match self.inner.http.post(url).json(&body).send().await {
            Ok(response) if response.status().is_success() => {
                let answer: serde_json::Value = response.json().await.unwrap_or_default();
                if answer.get("errcode").and_then(|c| c.as_i64()).unwrap_or(0) == 0 {
                    "sent"
                } else {
                    tracing::warn!(%answer, "alert webhook refused the message");
                    "failed"
                }
            }
            Ok(response) => {
                tracing::warn!(status = response.status().as_u16(), "alert webhook answered an error");
                "failed"
            }
            Err(error) => {
                tracing::warn!(error = %error.without_url(), "alert webhook unreachable");
                "failed"
            }
        }
    }
}
