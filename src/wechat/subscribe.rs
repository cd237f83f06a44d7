//! `subscribeMessage.send` over the cloud hosting open API (no access token on the private link):
//! `POST {base}/cgi-bin/message/subscribe/send` with `touser`, `template_id`, `page`, `data`
//! (`{"key": {"value": "..."}}`), `miniprogram_state` and `lang`; the answer is `{errcode, errmsg}`.
//! The API must be enabled in the cloud hosting console's open API list.

use serde::{Deserialize, Serialize};

/// One message, as sent.
#[derive(Serialize)]
pub struct SubscribeMessage<'a> {
    pub touser: &'a str,
    pub template_id: &'a str,
    pub page: &'a str,
    pub data: &'a serde_json::Value,
    pub miniprogram_state: &'a str,
    pub lang: &'a str,
}

/// What WeChat did with a message.
#[derive(Debug, PartialEq, Eq)]
pub enum SendOutcome {
    Sent,
    /// 43101: the buyer did not subscribe (or used up the subscription): nothing to retry.
    NotSubscribed,
    /// A refusal that sending again will not change (a bad template id or field, an unknown openid).
    Refused(String),
    /// Worth trying again later (unreachable, timeout, busy, rate limited, an unreadable answer).
    Transient(String),
}

#[derive(Deserialize)]
struct Answer {
    errcode: Option<i64>,
    errmsg: Option<String>,
}

/// errcodes WeChat documents as "try again": -1 system busy; 45009 and 45011 call limits.
const TRANSIENT_ERRCODES: [i64; 3] = [-1, 45009, 45011];

pub async fn send(http: &reqwest::Client, base: &str, message: &SubscribeMessage<'_>) -> SendOutcome {
    let url = format!("{base}/cgi-bin/message/subscribe/send");
    let response = match http.post(url).json(message).send().await {
        Ok(response) => response,
        Err(error) if error.is_timeout() => return SendOutcome::Transient("WeChat did not answer in time".into()),
        Err(_) => return SendOutcome::Transient("WeChat could not be reached".into()),
    };
    let status = response.status();
    let Ok(bytes) = response.bytes().await else {
        return SendOutcome::Transient("the answer could not be read".into());
    };
    if !status.is_success() {
        return SendOutcome::Transient(format!("WeChat answered HTTP {}", status.as_u16()));
    }
    outcome(&bytes)
}

fn outcome(bytes: &[u8]) -> SendOutcome {
    let Ok(answer) = serde_json::from_slice::<Answer>(bytes) else {
        return SendOutcome::Transient("the answer is not JSON".into());
    };
    let message = |code: i64| format!("errcode {code}: {}", answer.errmsg.as_deref().unwrap_or_default());
    match answer.errcode {
        None | Some(0) => SendOutcome::Sent,
        Some(43101) => SendOutcome::NotSubscribed,
        Some(code) if TRANSIENT_ERRCODES.contains(&code) => SendOutcome::Transient(message(code)),
        Some(code) => SendOutcome::Refused(message(code)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_map_to_what_they_mean() {
        assert_eq!(outcome(br#"{"errcode":0,"errmsg":"ok"}"#), SendOutcome::Sent);
        assert_eq!(
            outcome(br#"{"errcode":43101,"errmsg":"user refuse to accept the msg"}"#),
            SendOutcome::NotSubscribed
        );
        assert!(
            matches!(outcome(br#"{"errcode":47003,"errmsg":"argument invalid! data.thing1.value"}"#), SendOutcome::Refused(m) if m.contains("47003"))
        );
        assert!(matches!(outcome(br#"{"errcode":40037,"errmsg":"invalid template_id"}"#), SendOutcome::Refused(_)));
        assert!(matches!(outcome(br#"{"errcode":-1,"errmsg":"system error"}"#), SendOutcome::Transient(_)));
        assert!(matches!(outcome(b"<html>"), SendOutcome::Transient(_)));
    }
}
