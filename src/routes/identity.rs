//! Who is calling. Cloud hosting injects the mini-program user's openid; a request over the public
//! domain can carry any header it likes, so in production the openid counts only next to `X-WX-SOURCE`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use std::net::IpAddr;

use crate::app::AppState;
use crate::error::ApiError;

/// Present on every call that came through WeChat.
pub const SOURCE_HEADER: &str = "x-wx-source";
const PRODUCTION_HEADERS: &[&str] = &["x-wx-openid", "x-wx-from-openid"];
const DEVELOPMENT_HEADERS: &[&str] = &["x-wx-openid", "x-wx-from-openid", "x-mock-openid"];

/// The mini-program user making the request.
#[derive(Clone, Debug)]
pub struct Caller {
    pub openid: String,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        caller_from_headers(&parts.headers, state.settings.is_production()).ok_or(ApiError::Unauthorized)
    }
}

/// The request came through WeChat Cloud Hosting: `X-WX-SOURCE` is present and not empty (an empty
/// value is as good as absent: anyone can send one).
pub fn from_platform(headers: &HeaderMap) -> bool {
    headers.get(SOURCE_HEADER).and_then(|v| v.to_str().ok()).is_some_and(|v| !v.trim().is_empty())
}

pub(crate) fn caller_from_headers(headers: &HeaderMap, production: bool) -> Option<Caller> {
    let candidates = if production {
        if !from_platform(headers) {
            return None;
        }
        PRODUCTION_HEADERS
    } else {
        DEVELOPMENT_HEADERS
    };
    candidates
        .iter()
        .filter_map(|name| headers.get(*name)?.to_str().ok())
        .map(str::trim)
        .find(|openid| !openid.is_empty())
        .filter(|openid| is_openid(openid))
        .map(|openid| Caller { openid: openid.to_string() })
}

/// The request carries a caller this service trusts: the admin token, or an openid it would accept.
pub fn has_verified_caller(headers: &HeaderMap, settings: &crate::config::Settings) -> bool {
    let admin = settings.admin_token.as_deref().is_some_and(|expected| super::admin::bears_token(headers, expected));
    admin || caller_from_headers(headers, settings.is_production()).is_some()
}

/// Openids are 28 URL-safe characters today; allow some room, nothing else.
fn is_openid(s: &str) -> bool {
    s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The payer's IP for `spbill_create_ip`: `X-Original-Forwarded-For` (current docs), then
/// `X-Forwarded-For` (older docs), first entry; else the configured server IP.
pub fn client_ip(headers: &HeaderMap, fallback: IpAddr) -> IpAddr {
    ["x-original-forwarded-for", "x-forwarded-for"]
        .iter()
        .filter_map(|name| headers.get(*name)?.to_str().ok())
        .filter_map(|value| value.split(',').next()?.trim().parse().ok())
        .next()
        .unwrap_or(fallback)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn production_needs_the_source_header() {
        assert!(caller_from_headers(&headers(&[("x-wx-openid", "o1")]), true).is_none());
        let caller = caller_from_headers(&headers(&[("x-wx-openid", "o1"), ("x-wx-source", "x")]), true).unwrap();
        assert_eq!(caller.openid, "o1");
    }

    #[test]
    fn resource_reuse_uses_the_from_openid() {
        let caller = caller_from_headers(&headers(&[("x-wx-from-openid", "o2"), ("x-wx-source", "x")]), true).unwrap();
        assert_eq!(caller.openid, "o2");
    }

    #[test]
    fn mock_openid_only_in_development() {
        assert_eq!(caller_from_headers(&headers(&[("x-mock-openid", "dev")]), false).unwrap().openid, "dev");
        assert!(caller_from_headers(&headers(&[("x-mock-openid", "dev"), ("x-wx-source", "x")]), true).is_none());
    }

    #[test]
    fn odd_openids_are_refused() {
        assert!(caller_from_headers(&headers(&[("x-mock-openid", "a b")]), false).is_none());
        assert!(caller_from_headers(&headers(&[("x-mock-openid", "' or 1=1")]), false).is_none());
    }

    #[test]
    fn client_ip_prefers_the_original_forwarded_for() {
        let fallback: IpAddr = "127.0.0.1".parse().unwrap();
        let h = headers(&[("x-original-forwarded-for", "59.37.125.120, 10.0.0.1"), ("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(client_ip(&h, fallback).to_string(), "59.37.125.120");
        assert_eq!(client_ip(&headers(&[("x-forwarded-for", "1.2.3.4")]), fallback).to_string(), "1.2.3.4");
        assert_eq!(client_ip(&headers(&[("x-forwarded-for", "garbage")]), fallback), fallback);
    }
}
