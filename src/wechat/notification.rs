//! The payment-result callback body. Keys are camelCase; the documented example has numbers for
//! `totalFee`, but nothing promises it, so numeric strings are accepted too.

use serde_json::Value;

use crate::domain::{beijing_to_utc, Money};

/// The fields of a payment callback this service acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentNotice {
    pub return_code: Option<String>,
    pub result_code: Option<String>,
    pub out_trade_no: Option<String>,
    /// `totalFee` (fen on the wire), when it is a valid amount.
    pub total: Option<Money>,
    pub sub_mch_id: Option<String>,
    pub transaction_id: Option<String>,
    /// `timeEnd` (`yyyyMMddHHmmss`, Beijing time on the wire) in UTC, when readable.
    pub paid_at: Option<chrono::NaiveDateTime>,
}

/// The body is not a JSON object.
#[derive(Debug, thiserror::Error)]
#[error("callback body is not a JSON object: {0}")]
pub struct NotificationError(String);

impl PaymentNotice {
    pub fn parse(body: &[u8]) -> Result<Self, NotificationError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| NotificationError(e.to_string()))?;
        let Value::Object(map) = value else {
            return Err(NotificationError("not an object".into()));
        };
        let text = |key: &str| match map.get(key) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let fen = |key: &str| match map.get(key) {
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        };
        Ok(PaymentNotice {
            return_code: text("returnCode"),
            result_code: text("resultCode"),
            out_trade_no: text("outTradeNo"),
            total: fen("totalFee").and_then(|fen| Money::from_fen(fen).ok()),
            sub_mch_id: text("subMchId"),
            transaction_id: text("transactionId"),
            paid_at: text("timeEnd").as_deref().and_then(beijing_to_utc),
        })
    }

    /// The notice read as if it were WeChat's answer: only where confirmation is switched off
    /// (`CALLBACK_VERIFY=false`, development).
    pub fn as_payment_status(&self) -> super::PaymentStatus {
        super::PaymentStatus {
            trade_state: if self.is_success() { super::TradeState::Success } else { super::TradeState::NotPay },
            total: self.total,
            transaction_id: self.transaction_id.clone().filter(|t| !t.is_empty()),
            paid_at: self.paid_at,
        }
    }

    /// `returnCode` and `resultCode` are both `SUCCESS`.
    pub fn is_success(&self) -> bool {
        self.return_code.as_deref() == Some("SUCCESS") && self.result_code.as_deref() == Some("SUCCESS")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let body = br#"{"returnCode":"SUCCESS","appid":"wxd2565e6a04246fd1","mchId":"1800780001","subMchId":"1712734762","resultCode":"SUCCESS","totalFee":1,"cashFee":1,"transactionId":"4200004561202203217657282768","outTradeNo":"2021WERUN1647839289398","timeEnd":"20220321132007"}"#;
        let n = PaymentNotice::parse(body).unwrap();
        assert!(n.is_success());
        assert_eq!(n.total, Some(Money::from_fen(1).unwrap()));
        assert_eq!(n.sub_mch_id.as_deref(), Some("1712734762"));
        assert_eq!(n.out_trade_no.as_deref(), Some("2021WERUN1647839289398"));
        assert_eq!(n.paid_at.unwrap().to_string(), "2022-03-21 05:20:07");
    }

    #[test]
    fn accepts_a_fee_sent_as_a_string() {
        let n = PaymentNotice::parse(br#"{"totalFee":"1200"}"#).unwrap();
        assert_eq!(n.total, Some(Money::from_fen(1200).unwrap()));
        assert!(!n.is_success());
    }

    #[test]
    fn an_amount_that_is_not_money_is_no_amount() {
        assert_eq!(PaymentNotice::parse(br#"{"totalFee":-5}"#).unwrap().total, None);
        assert_eq!(PaymentNotice::parse(br#"{"totalFee":99999999999999999}"#).unwrap().total, None);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_or_are_refused(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = PaymentNotice::parse(&body).map(|n| n.as_payment_status());
        }

        #[test]
        fn any_json_object_of_the_known_keys_parses(
            fee in proptest::prelude::any::<i64>(),
            time in "\\PC{0,20}",
            trade in "\\PC{0,40}",
        ) {
            let body = serde_json::json!({"returnCode": "SUCCESS", "resultCode": "SUCCESS", "totalFee": fee,
                "timeEnd": time, "outTradeNo": trade, "transactionId": trade});
            let n = PaymentNotice::parse(body.to_string().as_bytes()).unwrap();
            proptest::prop_assert!(n.total.is_none_or(|m| m.to_fen() == fee));
        }
    }

    #[test]
    fn refuses_non_objects() {
        assert!(PaymentNotice::parse(b"not json").is_err());
        assert!(PaymentNotice::parse(b"[1,2]").is_err());
    }
}
