//! `Idempotency-Key` on the requests that create something (`POST /orders`, `POST /payment/create`,
//! `POST /admin/orders/{orderNumber}/refund`), with Stripe's semantics: the same key from the same
//! caller with the same body gets the first answer again (status and body, for 24 hours, marked
//! `Idempotent-Replayed: true`); with another body, 422 `IDEMPOTENCY_KEY_REUSED`; while the first is
//! still being handled, a repeat waits for its answer (409 `IDEMPOTENCY_KEY_IN_USE` if that takes longer
//! than a request may). Keys live in the database, so replicas agree. A request without a trusted
//! caller, or without the header, passes through untouched.
//!
//! Answers that say "try again" (5xx, 401, 408, 429) are not kept: the key is released, and the retry
//! is handled afresh. The first request runs to its end even if its caller hangs up, so its answer is
//! kept for the retry.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::NaiveDateTime;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, SqlErr};
use sha2::{Digest, Sha256};

use crate::app::AppState;
use crate::domain::now_utc;
use crate::entities::idempotency_key;
use crate::error::{from_db, ApiError, ErrorCode};

pub const HEADER: &str = "idempotency-key";
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// How long a key and its answer are kept.
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);
/// A key still "being handled" after this long belonged to a process that died: it is released.
const ABANDONED_AFTER: Duration = Duration::from_secs(120);
/// How long a repeat waits for the first request's answer.
const WAIT_FOR_FIRST: Duration = Duration::from_secs(8);
const POLL: Duration = Duration::from_millis(50);
const MAX_KEY_LENGTH: usize = 255;
/// Answers are small JSON documents.
const MAX_KEPT_ANSWER: usize = 64 * 1024;

/// The endpoints that take a key (POST only).
fn takes_key(path: &str) -> Option<Endpoint> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["orders"] | ["payment", "create"] => Some(Endpoint::Buyer),
        ["admin", "orders", number, "refund"] if !number.is_empty() => Some(Endpoint::Admin),
        _ => None,
    }
}

#[derive(Clone, Copy)]
enum Endpoint {
    Buyer,
    Admin,
}

/// A key as the header may carry it: 1 to 255 visible ASCII characters.
pub fn valid_key(key: &str) -> bool {
    (1..=MAX_KEY_LENGTH).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

fn hex_sha256(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let Some(endpoint) = takes_key(request.uri().path()) else {
        return next.run(request).await;
    };
    let Some(key) = request.headers().get(HEADER) else {
        return next.run(request).await;
    };
    let Some(key) = key.to_str().ok().filter(|k| valid_key(k)).map(str::to_string) else {
        return ApiError::new(ErrorCode::InvalidRequest, "Idempotency-Key must be 1 to 255 visible ASCII characters")
            .into_response();
    };
    let headers = request.headers();
    let caller = match endpoint {
        Endpoint::Buyer => super::identity::caller_from_headers(headers, state.settings.is_production())
            .map(|caller| format!("openid:{}", caller.openid)),
        Endpoint::Admin => state
            .settings
            .admin_token
            .as_deref()
            .filter(|expected| super::admin::bears_token(headers, expected))
            .map(|_| "admin".to_string()),
    };
    // No trusted caller: the handler refuses it, and nothing is kept.
    let Some(caller) = caller else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, crate::app::MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(error) => return body_error(&error).into_response(),
    };
    let path = parts.uri.path().to_string();
    let lookup = hex_sha256(&[caller.as_bytes(), path.as_bytes(), key.as_bytes()]);
    let request_hash = hex_sha256(&[&body]);
    let request = Request::from_parts(parts, Body::from(body));
    // The first request must finish, and its answer be kept, even if its caller hangs up.
    let handled = crate::lifecycle::to_completion(async move {
        handle(&state, lookup, request_hash, request, next).await.unwrap_or_else(|e| e.into_response())
    })
    .await;
    handled.unwrap_or_else(|interrupted| ApiError::from(interrupted).into_response())
}

fn body_error(error: &axum::Error) -> ApiError {
    let text = format!("{error:?}");
    if text.contains("LengthLimit") || text.contains("length limit") {
        ApiError::PayloadTooLarge
    } else if text.contains("TimeoutBody") || text.contains("timeout") {
        ApiError::RequestTimeout
    } else {
        ApiError::new(ErrorCode::InvalidRequest, "request body could not be read")
    }
}

async fn handle(
    state: &AppState,
    lookup: String,
    request_hash: String,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let db = &state.db;
    let waiting_since = std::time::Instant::now();
    loop {
        let now = now_utc();
        let claim = idempotency_key::ActiveModel {
            lookup: Set(lookup.clone()),
            request_hash: Set(request_hash.clone()),
            status: Set(None),
            body: Set(None),
            created_at: Set(now),
            completed_at: Set(None),
            ..Default::default()
        };
        match claim.insert(db).await {
            Ok(claimed) => return Ok(first(state, claimed.id, request, next).await),
            Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {}
            Err(e) => return Err(from_db(e)),
        }
        let Some(kept) = idempotency_key::Entity::find()
            .filter(idempotency_key::Column::Lookup.eq(&lookup))
            .one(db)
            .await
            .map_err(from_db)?
        else {
            // Released in between: claim it again.
            continue;
        };
        if older_than(kept.created_at, now, RETENTION)
            || (kept.status.is_none() && older_than(kept.created_at, now, ABANDONED_AFTER))
        {
            release(state, kept.id, kept.created_at).await;
            continue;
        }
        if kept.request_hash != request_hash {
            return Err(ApiError::new(
                ErrorCode::IdempotencyKeyReused,
                "this Idempotency-Key was used with another request body; use a new key for a new request",
            ));
        }
        if let Some(status) = kept.status {
            return Ok(replay(status, kept.body.unwrap_or_default()));
        }
        if waiting_since.elapsed() > WAIT_FOR_FIRST {
            return Err(ApiError::new(
                ErrorCode::IdempotencyKeyInUse,
                "a request with this Idempotency-Key is still being handled; retry shortly",
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn older_than(at: NaiveDateTime, now: NaiveDateTime, age: Duration) -> bool {
    chrono::Duration::from_std(age).is_ok_and(|age| now.signed_duration_since(at) > age)
}

/// Handles the first request with this key, then keeps its answer (or releases the key).
async fn first(state: &AppState, id: i64, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let retryable = status.is_server_error()
        || matches!(status, StatusCode::UNAUTHORIZED | StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS);
    let (parts, body) = response.into_parts();
    let body: Bytes = match axum::body::to_bytes(body, MAX_KEPT_ANSWER).await {
        Ok(body) => body,
        Err(error) => {
            tracing::error!(%error, "an answer could not be read to keep it for its idempotency key");
            release_by_id(state, id).await;
            return ApiError::Internal.into_response();
        }
    };
    if retryable {
        release_by_id(state, id).await;
    } else {
        let kept = idempotency_key::Entity::update_many()
            .col_expr(idempotency_key::Column::Status, Expr::value(i32::from(status.as_u16())))
            .col_expr(idempotency_key::Column::Body, Expr::value(String::from_utf8_lossy(&body).into_owned()))
            .col_expr(idempotency_key::Column::CompletedAt, Expr::value(now_utc()))
            .filter(idempotency_key::Column::Id.eq(id))
            .exec(&state.db)
            .await;
        if let Err(error) = kept {
            // The answer still goes out; a repeat waits, then finds the key abandoned and runs again,
            // which the handlers' own guards make safe (an order is paid once, a refund counted once).
            tracing::error!(%error, "an idempotency key's answer could not be kept");
        }
    }
    Response::from_parts(parts, Body::from(body))
}

fn replay(status: i32, body: String) -> Response {
    let status = u16::try_from(status).ok().and_then(|s| StatusCode::from_u16(s).ok()).unwrap_or(StatusCode::OK);
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    response
}

async fn release(state: &AppState, id: i64, created_at: NaiveDateTime) {
    let released = idempotency_key::Entity::delete_many()
        .filter(idempotency_key::Column::Id.eq(id))
        .filter(idempotency_key::Column::CreatedAt.eq(created_at))
        .exec(&state.db)
        .await;
    if let Err(error) = released {
        tracing::warn!(%error, "an expired idempotency key could not be released");
    }
}

async fn release_by_id(state: &AppState, id: i64) {
    if let Err(error) = idempotency_key::Entity::delete_by_id(id).exec(&state.db).await {
        tracing::warn!(%error, "an idempotency key could not be released; it lapses after two minutes");
    }
}

/// Forgets the keys older than [`RETENTION`] (the compensation sweep calls it).
pub async fn forget_expired(db: &sea_orm::DatabaseConnection) -> Result<u64, sea_orm::DbErr> {
    let Ok(age) = chrono::Duration::from_std(RETENTION) else { return Ok(0) };
    let cutoff = now_utc() - age;
    let deleted =
        idempotency_key::Entity::delete_many().filter(idempotency_key::Column::CreatedAt.lt(cutoff)).exec(db).await?;
    Ok(deleted.rows_affected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_creating_endpoints_take_a_key() {
        assert!(matches!(takes_key("/orders"), Some(Endpoint::Buyer)));
        assert!(matches!(takes_key("/payment/create"), Some(Endpoint::Buyer)));
        assert!(matches!(takes_key("/admin/orders/ORD1/refund"), Some(Endpoint::Admin)));
        assert!(takes_key("/admin/orders//refund").is_none());
        assert!(takes_key("/orders/ORD1").is_none());
        assert!(takes_key("/payment/callback/ORD1").is_none());
    }

    #[test]
    fn keys_are_bounded_visible_ascii() {
        assert!(valid_key("tap-1764630000-3f2a"));
        assert!(!valid_key(""));
        assert!(!valid_key("has space"));
        assert!(!valid_key(&"k".repeat(256)));
        assert!(valid_key(&"k".repeat(255)));
        assert!(!valid_key("ключ"));
    }

    #[test]
    fn the_hash_separates_its_parts() {
        assert_ne!(hex_sha256(&[b"ab", b"c"]), hex_sha256(&[b"a", b"bc"]));
        assert_eq!(hex_sha256(&[b"x"]).len(), 64);
    }
}
