use rand::distr::Alphanumeric;
use rand::Rng;

use super::{PaymentParams, Prepay, PrepayRequest};

/// The simulated WeChat side used when `PAYMENT_SANDBOX=true`: no network, clearly fake parameters
/// (`paySign` starts with `SANDBOX`) that `wx.requestPayment` would refuse.
#[derive(Clone, Debug, Default)]
pub struct Sandbox;

impl Sandbox {
    pub fn unified_order(&self, request: &PrepayRequest) -> Prepay {
        let nonce: String = rand::rng().sample_iter(&Alphanumeric).take(16).map(char::from).collect();
        let prepay_id = format!("sandbox_{}", request.order_number);
        Prepay {
            params: PaymentParams {
                app_id: "wxsandbox0000000000".into(),
                time_stamp: chrono::Utc::now().timestamp().to_string(),
                nonce_str: nonce.clone(),
                package: format!("prepay_id={prepay_id}"),
                sign_type: "MD5".into(),
                pay_sign: format!("SANDBOX-{nonce}"),
            },
            prepay_id,
        }
    }
}
