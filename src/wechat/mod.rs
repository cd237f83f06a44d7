//! The WeChat Cloud Hosting pay open API: one function per endpoint, the wire types, and the sandbox
//! double (whose state is the database's `sandbox_*` tables, so restarts and replicas agree). WeChat's
//! JSON never leaves this module; callers see the domain types below. Every call here is safe to
//! repeat: WeChat keys prepays by `out_trade_no`.

mod client;
mod notification;
mod sandbox;
pub mod subscribe;
mod wire;

use sea_orm::DatabaseConnection;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

use crate::config::WechatSettings;
use crate::domain::{Money, OrderNumber};

pub use client::OpenApiClient;
pub use notification::{NotificationError, PaymentNotice};
pub use sandbox::{Delivery, Sandbox, SandboxPayError, SandboxPayment, LATE_DELIVERY};

/// What the service asks WeChat to prepay.
#[derive(Clone, Debug)]
pub struct PrepayRequest {
    pub order_number: OrderNumber,
    pub description: String,
    pub openid: String,
    pub amount: Money,
    pub client_ip: IpAddr,
}

/// The parameters `wx.requestPayment` takes, exactly as WeChat produced them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentParams {
    pub app_id: String,
    pub time_stamp: String,
    pub nonce_str: String,
    pub package: String,
    pub sign_type: String,
    pub pay_sign: String,
}

/// A prepay WeChat accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepay {
    pub prepay_id: String,
    pub params: PaymentParams,
}

/// Why a call to the open API did not succeed. Messages are safe to show: they hold only what the
/// platform said about the request, never credentials.
#[derive(Debug, thiserror::Error)]
pub enum WechatError {
    #[error("WeChat Pay did not answer in time")]
    Timeout,
    #[error("WeChat Pay could not be reached")]
    Unreachable(#[source] reqwest::Error),
    #[error("WeChat Pay answered HTTP {0}")]
    HttpStatus(u16),
    #[error("WeChat Pay answered with an empty body; is the open API service switched on for this service version?")]
    EmptyBody,
    #[error("WeChat Pay answered with a body that cannot be read")]
    Malformed(String),
    #[error("WeChat open API error {errcode}: {errmsg}")]
    Api { errcode: i64, errmsg: String },
    #[error("WeChat Pay refused the request: {return_msg}")]
    Refused { return_msg: String },
    #[error("WeChat Pay refused the order: {err_code} {err_code_des}")]
    Business { err_code: String, err_code_des: String },
    #[error("WeChat Pay answered without a prepay id")]
    MissingPrepay,
}

impl WechatError {
    /// Worth sending again unchanged (same `out_trade_no` / `out_refund_no`): outages, timeouts, an answer
    /// that could not be read, an open-API `errcode`, and WeChat's own "try again" business codes. Never
    /// counted against an attempt budget.
    pub fn is_transient(&self) -> bool {
        match self {
            WechatError::Timeout
            | WechatError::Unreachable(_)
            | WechatError::HttpStatus(_)
            | WechatError::EmptyBody
            | WechatError::Malformed(_)
            | WechatError::Api { .. } => true,
            WechatError::Business { err_code, .. } => TRANSIENT_CODES.contains(&err_code.as_str()),
            WechatError::Refused { .. } | WechatError::MissingPrepay => false,
        }
    }

    /// `NOTENOUGH`: the merchant's balance cannot cover the refund; someone must top it up.
    pub fn needs_merchant_funds(&self) -> bool {
        matches!(self, WechatError::Business { err_code, .. } if err_code == "NOTENOUGH")
    }
}

/// Business codes WeChat Pay documents as "retry later" (v2 refund and order APIs).
const TRANSIENT_CODES: [&str; 4] = ["SYSTEMERROR", "FREQUENCY_LIMITED", "NOTENOUGH", "BIZERR_NEED_RETRY"];

/// The WeChat side the service talks to: the real open API, or the built-in sandbox.
#[derive(Clone)]
pub enum WechatPay {
    OpenApi(OpenApiClient),
    Sandbox(Sandbox),
}

impl WechatPay {
    /// The sandbox keeps its state in `db` (its own `sandbox_*` tables); the open API client does not
    /// use it.
    pub fn from_settings(settings: &WechatSettings, db: &DatabaseConnection) -> Result<Self, reqwest::Error> {
        if settings.sandbox {
            Ok(WechatPay::Sandbox(Sandbox::new(
                db.clone(),
                &settings.callback_path,
                &settings.refund_callback_path,
                settings.mch_id.as_deref(),
            )))
        } else {
            OpenApiClient::new(settings).map(WechatPay::OpenApi)
        }
    }

    /// `/_/pay/unifiedOrder`: creates (or, for the same order, re-creates) a prepay.
    pub async fn unified_order(&self, request: &PrepayRequest) -> Result<Prepay, WechatError> {
        match self {
            WechatPay::OpenApi(client) => client.unified_order(request).await,
            WechatPay::Sandbox(sandbox) => sandbox.unified_order(request).await,
        }
    }
}

/// `trade_state` of a queried payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TradeState {
    Success,
    Refund,
    NotPay,
    Closed,
    Revoked,
    UserPaying,
    PayError,
    /// WeChat has no payment for this order number (`ORDERNOTEXIST`).
    NotExist,
    Other(String),
}

impl TradeState {
    pub fn parse(s: &str) -> Self {
        match s {
            "SUCCESS" => TradeState::Success,
            "REFUND" => TradeState::Refund,
            "NOTPAY" => TradeState::NotPay,
            "CLOSED" => TradeState::Closed,
            "REVOKED" => TradeState::Revoked,
            "USERPAYING" => TradeState::UserPaying,
            "PAYERROR" => TradeState::PayError,
            other => TradeState::Other(other.to_string()),
        }
    }

    /// For people: the state as WeChat names it.
    pub fn describe(&self) -> String {
        match self {
            TradeState::Success => "SUCCESS (paid)".into(),
            TradeState::Refund => "REFUND (paid, then refunded)".into(),
            TradeState::NotPay => "NOTPAY (not paid)".into(),
            TradeState::Closed => "CLOSED".into(),
            TradeState::Revoked => "REVOKED".into(),
            TradeState::UserPaying => "USERPAYING (payment in progress)".into(),
            TradeState::PayError => "PAYERROR (payment failed)".into(),
            TradeState::NotExist => "ORDERNOTEXIST (no payment under this order number)".into(),
            TradeState::Other(other) => format!("{other:?} (unknown state)"),
        }
    }

    /// The money arrived (`REFUND` means it arrived and some went back).
    pub fn is_paid(&self) -> bool {
        matches!(self, TradeState::Success | TradeState::Refund)
    }
}

/// What `/_/pay/queryorder` says about an order's payment, in the service's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentStatus {
    pub trade_state: TradeState,
    /// `total_fee`, when present and a valid amount.
    pub total: Option<Money>,
    pub transaction_id: Option<String>,
    /// `time_end` (Beijing time on the wire) in UTC, when present and readable.
    pub paid_at: Option<chrono::NaiveDateTime>,
}

impl PaymentStatus {
    pub(crate) fn from_wire(
        trade_state: TradeState,
        total_fee: Option<i64>,
        transaction_id: Option<String>,
        time_end: Option<&str>,
    ) -> Self {
        PaymentStatus {
            trade_state,
            total: total_fee.and_then(|fen| Money::from_fen(fen).ok()),
            transaction_id: transaction_id.filter(|t| !t.is_empty()),
            paid_at: time_end.and_then(crate::domain::beijing_to_utc),
        }
    }

    pub(crate) fn not_exist() -> Self {
        PaymentStatus::from_wire(TradeState::NotExist, None, None, None)
    }
}

/// What `/_/pay/closeorder` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseOutcome {
    /// Closed now: the payment can no longer happen.
    Closed,
    /// `ORDERCLOSED`: it was closed already.
    AlreadyClosed,
    /// `ORDERNOTEXIST`: WeChat never had a payment under this number.
    NotFound,
    /// `ORDERPAID`: the user paid; query it.
    Paid,
}

impl CloseOutcome {
    /// The payment cannot happen any more: the order may be closed locally.
    pub fn cannot_be_paid(self) -> bool {
        matches!(self, CloseOutcome::Closed | CloseOutcome::AlreadyClosed | CloseOutcome::NotFound)
    }
}

/// A refund to ask WeChat for. `out_refund_no` is stored before the call and reused on every retry.
#[derive(Clone, Debug)]
pub struct RefundRequest {
    pub order_number: String,
    pub out_refund_no: String,
    pub description: String,
    pub total: Money,
    pub refund: Money,
    pub reason: String,
}

/// Where a refund stands at WeChat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefundState {
    Success,
    Processing,
    /// `CHANGE`: the money could not go back to the payer's account; needs a human.
    Change,
    /// `REFUNDCLOSE`.
    Closed,
    /// WeChat has no refund with this `out_refund_no`.
    NotFound,
    Other(String),
}

impl RefundState {
    pub fn parse(s: &str) -> Self {
        match s {
            "SUCCESS" => RefundState::Success,
            "PROCESSING" => RefundState::Processing,
            "CHANGE" => RefundState::Change,
            "REFUNDCLOSE" => RefundState::Closed,
            other => RefundState::Other(other.to_string()),
        }
    }
}

impl WechatPay {
    /// `/_/pay/queryorder` by `out_trade_no`.
    pub async fn query_order(&self, order_number: &str) -> Result<PaymentStatus, WechatError> {
        match self {
            WechatPay::OpenApi(client) => client.query_order(order_number).await,
            WechatPay::Sandbox(sandbox) => sandbox.query_order(order_number).await,
        }
    }

    /// `/_/pay/closeorder`. WeChat refuses within 5 minutes of the prepay; callers wait that long.
    pub async fn close_order(&self, order_number: &str) -> Result<CloseOutcome, WechatError> {
        match self {
            WechatPay::OpenApi(client) => client.close_order(order_number).await,
            WechatPay::Sandbox(sandbox) => sandbox.close_order(order_number).await,
        }
    }

    /// `/_/pay/refund`: asks for a (partial) refund; returns WeChat's refund id when it gives one.
    pub async fn refund(&self, request: &RefundRequest) -> Result<Option<String>, WechatError> {
        match self {
            WechatPay::OpenApi(client) => client.refund(request).await,
            WechatPay::Sandbox(sandbox) => sandbox.refund(request).await,
        }
    }

    /// `/_/pay/queryrefund` by `out_refund_no` (querying by order number has been seen to answer empty
    /// lists).
    pub async fn query_refund(&self, out_refund_no: &str) -> Result<RefundState, WechatError> {
        match self {
            WechatPay::OpenApi(client) => client.query_refund(out_refund_no).await,
            WechatPay::Sandbox(sandbox) => sandbox.query_refund(out_refund_no).await,
        }
    }
}
