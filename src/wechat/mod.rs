//! The WeChat Cloud Hosting pay open API: one function per endpoint, the wire types, and the sandbox
//! double. WeChat's JSON never leaves this module; callers see the domain types below. Every call here
//! is safe to repeat: WeChat keys prepays by `out_trade_no`.

mod client;
mod notification;
mod sandbox;
mod wire;

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

use crate::config::WechatSettings;
use crate::domain::{Money, OrderNumber};

pub use client::OpenApiClient;
pub use notification::{NotificationError, PaymentNotice};
pub use sandbox::Sandbox;

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

/// The WeChat side the service talks to: the real open API, or the built-in sandbox.
#[derive(Clone)]
pub enum WechatPay {
    OpenApi(OpenApiClient),
    Sandbox(Sandbox),
}

impl WechatPay {
    pub fn from_settings(settings: &WechatSettings) -> Result<Self, reqwest::Error> {
        if settings.sandbox {
            Ok(WechatPay::Sandbox(Sandbox))
        } else {
            OpenApiClient::new(settings).map(WechatPay::OpenApi)
        }
    }

    /// `/_/pay/unifiedOrder`: creates (or, for the same order, re-creates) a prepay.
    pub async fn unified_order(&self, request: &PrepayRequest) -> Result<Prepay, WechatError> {
        match self {
            WechatPay::OpenApi(client) => client.unified_order(request).await,
            WechatPay::Sandbox(sandbox) => Ok(sandbox.unified_order(request)),
        }
    }
}
