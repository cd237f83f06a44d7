//! WeChat Pay v2 fields as the cloud-hosting open API carries them (snake_case JSON).

use serde::{Deserialize, Serialize};

#[derive(Serialize)]
pub struct Container<'a> {
    pub service: &'a str,
    pub path: String,
}

#[derive(Serialize)]
pub struct UnifiedOrderRequest<'a> {
    pub body: String,
    pub openid: &'a str,
    pub out_trade_no: &'a str,
    pub spbill_create_ip: String,
    pub env_id: &'a str,
    pub sub_mch_id: &'a str,
    pub total_fee: i64,
    pub callback_type: u8,
    pub container: Container<'a>,
}

/// `{"errcode", "errmsg", "respdata"}`; the shape of an `errcode != 0` answer is undocumented, so
/// everything is optional.
#[derive(Deserialize)]
pub struct Envelope<T> {
    pub errcode: Option<i64>,
    pub errmsg: Option<String>,
    pub respdata: Option<T>,
}

#[derive(Deserialize)]
/// The v2 status fields (`return_code`, `result_code`, …) are read by the client for every endpoint.
pub struct UnifiedOrderResponse {
    pub prepay_id: Option<String>,
    pub payment: Option<Payment>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payment {
    pub app_id: Option<String>,
    pub time_stamp: Option<serde_json::Value>,
    pub nonce_str: Option<String>,
    pub package: Option<String>,
    pub sign_type: Option<String>,
    pub pay_sign: Option<String>,
}

#[derive(Serialize)]
pub struct OrderRef<'a> {
    pub out_trade_no: &'a str,
    pub sub_mch_id: &'a str,
}

#[derive(Deserialize)]
pub struct QueryOrderResponse {
    pub trade_state: Option<String>,
    pub total_fee: Option<serde_json::Value>,
    pub transaction_id: Option<String>,
    pub time_end: Option<String>,
}

/// closeorder answers only the v2 status fields.
#[derive(Deserialize)]
pub struct Empty {}

#[derive(Serialize)]
pub struct RefundRequest<'a> {
    pub body: String,
    pub out_trade_no: &'a str,
    pub out_refund_no: &'a str,
    pub env_id: &'a str,
    pub sub_mch_id: &'a str,
    pub total_fee: i64,
    pub refund_fee: i64,
    pub refund_desc: String,
    pub callback_type: u8,
    pub container: Container<'a>,
}

#[derive(Deserialize)]
pub struct RefundResponse {
    pub refund_id: Option<String>,
}

#[derive(Serialize)]
pub struct RefundRef<'a> {
    pub out_refund_no: &'a str,
    pub sub_mch_id: &'a str,
}
