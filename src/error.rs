//! The one HTTP error type: `{"code": "...", "message": "..."}`, the code from the one list of them,
//! [`ErrorCode`], which also gives the status.

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::services::ServiceError;
use crate::wechat::WechatError;

/// Declares [`ErrorCode`] from one table: variant, HTTP status, the code as sent, what it means.
macro_rules! error_codes {
    ($($variant:ident => $status:ident, $code:literal, $meaning:literal;)*) => {
        /// Every machine-readable `code` an error answer can carry. The table below is the one list: the
        /// status of every error comes from it, and the OpenAPI document's `ErrorCode` schema is rendered
        /// from it.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($variant,)*
        }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The stable string clients match on.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }

            pub fn status(self) -> StatusCode {
                match self {
                    $(ErrorCode::$variant => StatusCode::$status,)*
                }
            }

            pub fn meaning(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $meaning,)*
                }
            }
        }
    };
}

error_codes! {
    InvalidRequest => BAD_REQUEST, "INVALID_REQUEST",
        "a query or path parameter is invalid, or a body breaks a rule the schema cannot state (a blank reason)";
    InvalidJson => BAD_REQUEST, "INVALID_JSON", "the body is not valid JSON";
    InvalidPhoneNumber => BAD_REQUEST, "INVALID_PHONE_NUMBER", "phoneNumber is not an optional + and 6 to 15 digits";
    InvalidRefundAmount => BAD_REQUEST, "INVALID_REFUND_AMOUNT",
        "the refund amount is malformed, zero, or more than is left to refund";
    Unauthorized => UNAUTHORIZED, "UNAUTHORIZED", "no trusted caller identity, or a wrong or missing bearer token";
    UntrustedSource => UNAUTHORIZED, "UNTRUSTED_SOURCE",
        "a platform callback that did not come through WeChat Cloud Hosting (no X-WX-SOURCE)";
    NotFound => NOT_FOUND, "NOT_FOUND",
        "no such endpoint (also the admin endpoints without ADMIN_TOKEN, and the sandbox when it is off)";
    OrderNotFound => NOT_FOUND, "ORDER_NOT_FOUND", "no such order, or another user's";
    ProductNotFound => NOT_FOUND, "PRODUCT_NOT_FOUND", "no such product";
    RefundNotFound => NOT_FOUND, "REFUND_NOT_FOUND", "no refund with that number";
    MethodNotAllowed => METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED", "the path exists, but not with this method";
    OrderNotPayable => CONFLICT, "ORDER_NOT_PAYABLE", "the order is not unpaid (paid, closed, or expired)";
    OrderNotRetryable => CONFLICT, "ORDER_NOT_RETRYABLE", "only failed or unresolved orders can be retried";
    OrderNotUnresolved => CONFLICT, "ORDER_NOT_UNRESOLVED", "only unresolved orders can be marked delivered";
    OrderNotRefundable => CONFLICT, "ORDER_NOT_REFUNDABLE",
        "the order's state allows no refund, or nothing is left to refund";
    PartialRefundUndelivered => CONFLICT, "PARTIAL_REFUND_UNDELIVERED",
        "an order that was not delivered can only be refunded whole";
    RefundNeedsProof => CONFLICT, "REFUND_NEEDS_PROOF",
        "an unresolved order is refunded only on the carrier's proof of non-delivery, or with force";
    RefundNotRetryable => CONFLICT, "REFUND_NOT_RETRYABLE", "only failed refunds can be retried";
    RefundNotReplaceable => CONFLICT, "REFUND_NOT_REPLACEABLE",
        "a failed refund is replaced only when WeChat proves it never paid it (no such refund, or closed)";
    ProductUnavailable => CONFLICT, "PRODUCT_UNAVAILABLE", "the product is not on sale (disabled by an operator)";
    ProductCodeTaken => CONFLICT, "PRODUCT_CODE_TAKEN", "another product already has this code";
    IdempotencyKeyInUse => CONFLICT, "IDEMPOTENCY_KEY_IN_USE",
        "a request with this Idempotency-Key is still being handled; retry shortly";
    OrderChanged => CONFLICT, "ORDER_CHANGED", "the order changed while the request was handled; try again";
    NoPrepay => CONFLICT, "NO_PREPAY", "sandbox: the order has no prepay yet; call /payment/create first";
    RequestTimeout => REQUEST_TIMEOUT, "REQUEST_TIMEOUT",
        "the request's headers, body or whole handling took longer than allowed";
    PayloadTooLarge => PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", "the body is larger than 100 KiB";
    UnsupportedMediaType => UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE", "the body is not sent as application/json";
    IdempotencyKeyReused => UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED",
        "this Idempotency-Key was used with another request body";
    InvalidBody => UNPROCESSABLE_ENTITY, "INVALID_BODY", "well-formed JSON of the wrong shape: a field missing or mistyped";
    RateLimited => TOO_MANY_REQUESTS, "RATE_LIMITED",
        "too many requests from this caller or address, or confirmations for this order; see Retry-After";
    InternalError => INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", "an unexpected failure; details are logged, not returned";
    WechatError => BAD_GATEWAY, "WECHAT_ERROR", "WeChat Pay refused or failed";
    ServiceUnavailable => SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE", "the database does not answer; try again";
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl utoipa::PartialSchema for ErrorCode {
    /// Asked for once per documented error answer while the router is built: made once, then copied.
    /// Formatting the table each time was a third of a cold start's instructions (callgrind).
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
        use utoipa::openapi::RefOr;
        static SCHEMA: std::sync::OnceLock<RefOr<Schema>> = std::sync::OnceLock::new();
        SCHEMA
            .get_or_init(|| {
                let table: String = ErrorCode::ALL
                    .iter()
                    .map(|c| format!("\n| `{}` | {} | {} |", c.as_str(), c.status().as_u16(), c.meaning()))
                    .collect();
                ObjectBuilder::new()
                    .schema_type(SchemaType::Type(Type::String))
                    .enum_values(Some(ErrorCode::ALL.iter().map(|c| c.as_str())))
                    .description(Some(format!(
                        "Stable, machine-readable.\n\n| code | status | meaning |\n|---|---|---|{table}"
                    )))
                    .into()
            })
            .clone()
    }
}

impl ToSchema for ErrorCode {}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"code": "ORDER_NOT_FOUND", "message": "order not found"}))]
pub struct ErrorBody {
    pub code: ErrorCode,
    /// Human-readable; never carries internal details.
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A refusal with its own code and message; the status is the code's.
    #[error("{message}")]
    Refused { code: ErrorCode, message: String },
    /// 401: no trusted caller identity.
    #[error("caller identity is missing or not trusted")]
    Unauthorized,
    /// 401: a platform callback that did not come through WeChat Cloud Hosting (no `X-WX-SOURCE`).
    #[error("callbacks are accepted only from WeChat Cloud Hosting")]
    UntrustedSource,
    /// 405: the path exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 408: the request (headers, body, or the whole of it) took longer than allowed.
    #[error("the request took too long")]
    RequestTimeout,
    /// 429: too many requests from this caller, address or for this order; retry after the seconds
    /// given (also in `Retry-After`).
    #[error("too many requests; retry in {0} s")]
    RateLimited(u64),
    /// 413: the body is larger than 100 KiB.
    #[error("request body is larger than 100 KiB")]
    PayloadTooLarge,
    /// 415: the body is not declared as JSON.
    #[error("request body must be sent as application/json")]
    UnsupportedMediaType,
    /// 422: well-formed JSON of the wrong shape.
    #[error("{0}")]
    InvalidBody(String),
    /// 502: WeChat Pay refused or failed.
    #[error(transparent)]
    Wechat(#[from] WechatError),
    /// 503: the database is unreachable.
    #[error("service temporarily unavailable")]
    Unavailable,
    /// 500: anything unexpected; details are logged, not returned.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError::Refused { code, message: message.into() }
    }

    pub fn status(&self) -> StatusCode {
        self.code().status()
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::Refused { code, .. } => *code,
            ApiError::Unauthorized => ErrorCode::Unauthorized,
            ApiError::UntrustedSource => ErrorCode::UntrustedSource,
            ApiError::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            ApiError::RequestTimeout => ErrorCode::RequestTimeout,
            ApiError::RateLimited(_) => ErrorCode::RateLimited,
            ApiError::PayloadTooLarge => ErrorCode::PayloadTooLarge,
            ApiError::UnsupportedMediaType => ErrorCode::UnsupportedMediaType,
            ApiError::InvalidBody(_) => ErrorCode::InvalidBody,
            ApiError::Wechat(_) => ErrorCode::WechatError,
            ApiError::Unavailable => ErrorCode::ServiceUnavailable,
            ApiError::Internal => ErrorCode::InternalError,
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody { code: self.code(), message: self.to_string() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        if let ApiError::RateLimited(seconds) = self {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(seconds));
        }
        response
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        use ErrorCode as C;
        let (code, message) = match error {
            ServiceError::OrderNotFound => (C::OrderNotFound, "order not found".to_string()),
            ServiceError::ProductNotFound => (C::ProductNotFound, "product not found".into()),
            ServiceError::ProductUnavailable => (C::ProductUnavailable, "this product is not on sale".into()),
            ServiceError::ProductCodeTaken => (C::ProductCodeTaken, "another product already has this code".into()),
            ServiceError::InvalidProduct(e) => (C::InvalidRequest, e.to_string()),
            ServiceError::OrderNotPayable(status) => {
                (C::OrderNotPayable, format!("order is {status}; only unpaid orders can be paid"))
            }
            ServiceError::OrderNotRetryable(status) => {
                (C::OrderNotRetryable, format!("order is {status}; only failed or unresolved orders can be retried"))
            }
            ServiceError::OrderNotSettleable(status) => {
                (C::OrderNotUnresolved, format!("order is {status}; only unresolved orders can be marked delivered"))
            }
            ServiceError::OrderNotRefundable(status) => (
                C::OrderNotRefundable,
                format!("order is {status}; only paid orders that are not being delivered can be refunded"),
            ),
            ServiceError::NothingToRefund(status) => {
                (C::OrderNotRefundable, format!("order is {status}; nothing is left to refund"))
            }
            ServiceError::PartialRefundUndelivered => {
                (C::PartialRefundUndelivered, "an order that was not delivered can only be refunded whole".into())
            }
            ServiceError::RefundNeedsProof => (
                C::RefundNeedsProof,
                "the carrier has not proved the top-up was not delivered; retry it, mark it delivered, or force the refund with a reason".into(),
            ),
            ServiceError::RefundNotFound => (C::RefundNotFound, "refund not found".into()),
            ServiceError::RefundNotRetryable(status) => {
                (C::RefundNotRetryable, format!("refund is {status}; only failed refunds can be retried"))
            }
            ServiceError::RefundNotReplaceable(answer) => (
                C::RefundNotReplaceable,
                format!(
                    "WeChat's answer ({answer}) does not prove the refund was never paid; retry it under the same \
                     number, or settle it in the WeChat Pay merchant platform"
                ),
            ),
            ServiceError::RefundAmount(left) => (
                C::InvalidRefundAmount,
                format!("refund amount must be more than 0.00 and at most {left}, the amount not yet refunded"),
            ),
            ServiceError::OrderChanged => {
                (C::OrderChanged, "the order changed while the request was handled; try again".into())
            }
            ServiceError::Wechat(e) => return ApiError::Wechat(e),
            ServiceError::Database(e) => return from_db(e),
        };
        ApiError::new(code, message)
    }
}

impl From<crate::lifecycle::Interrupted> for ApiError {
    fn from(_: crate::lifecycle::Interrupted) -> Self {
        ApiError::Internal
    }
}

/// Logs the database error once and answers without its details.
pub fn from_db(error: sea_orm::DbErr) -> ApiError {
    use sea_orm::DbErr;
    match error {
        DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => {
            tracing::error!(%error, "database unavailable");
            ApiError::Unavailable
        }
        other => {
            tracing::error!(error = %other, "database error");
            ApiError::Internal
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(e) => ApiError::InvalidBody(e.body_text()),
            JsonRejection::JsonSyntaxError(_) => {
                ApiError::new(ErrorCode::InvalidJson, "request body is not valid JSON")
            }
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
            JsonRejection::BytesRejection(e) => from_bytes_rejection(e.status(), &e.body_text()),
            other => from_bytes_rejection(other.status(), &other.body_text()),
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        from_bytes_rejection(rejection.status(), &rejection.body_text())
    }
}

fn from_bytes_rejection(status: StatusCode, text: &str) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge
    } else if text.contains("designated timeout") {
        // tower-http's body timeout (HTTP_BODY_TIMEOUT_SECONDS).
        ApiError::RequestTimeout
    } else {
        ApiError::new(ErrorCode::InvalidRequest, "request body could not be read")
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::new(ErrorCode::InvalidRequest, rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::new(ErrorCode::InvalidRequest, rejection.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn codes_are_unique_upper_snake_case_and_errors() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "{s} listed twice");
            assert!(s.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'), "{s}");
            assert!(code.status().is_client_error() || code.status().is_server_error(), "{s}");
            assert!(!code.meaning().is_empty(), "{s}");
        }
    }

    /// Every upper-case string given as a `code` in the sources (a hand-made error body, or an example in
    /// the OpenAPI annotations) must be a listed code: an error code cannot be produced or documented
    /// without being in [`ErrorCode`].
    #[test]
    fn every_code_string_in_the_sources_is_listed() {
        let listed: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        let mut found = Vec::new();
        let mut files = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                found.extend(code_strings(&text).into_iter().map(|code| (path.display().to_string(), code)));
            }
        }
        assert!(found.iter().any(|(_, code)| code == "ORDER_NOT_FOUND"), "the scan finds the examples");
        for (file, code) in found {
            assert!(listed.contains(&code.as_str()), "{file}: {code} is not an ErrorCode");
        }
    }

    /// The upper-case literals right after a `code` key, quoted or not, with a colon; `code` inside a
    /// longer identifier (`returnCode`, `err_code`) does not count.
    fn code_strings(text: &str) -> Vec<String> {
        let mut found = Vec::new();
        for (at, _) in text.match_indices("code") {
            let before = text[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let rest = text[at + 4..].strip_prefix('"').unwrap_or(&text[at + 4..]);
            let Some(rest) = rest.trim_start().strip_prefix(':') else { continue };
            let Some(rest) = rest.trim_start().strip_prefix('"') else { continue };
            let literal: String = rest.chars().take_while(|c| c.is_ascii_uppercase() || *c == '_').collect();
            if literal.len() > 1 && rest[literal.len()..].starts_with('"') {
                found.push(literal);
            }
        }
        found
    }

    #[test]
    fn the_scan_reads_both_spellings_and_skips_longer_names() {
        // Spelt with KEY here, so the scan of this file does not find these.
        let text = r#"json!({"KEY": "A_B"}) KEY: "C_D" "KEY":"E_F" returnKEY":"SUCCESS" err_KEY: "X_Y""#;
        assert_eq!(code_strings(&text.replace("KEY", "code")), ["A_B", "C_D", "E_F"]);
    }

    #[test]
    fn the_document_schema_lists_every_code() {
        let utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::Object(schema)) =
            <ErrorCode as utoipa::PartialSchema>::schema()
        else {
            panic!("ErrorCode is an inline string schema");
        };
        let values: Vec<String> = schema.enum_values.unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
        assert_eq!(values, ErrorCode::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>());
        assert!(schema.description.unwrap().contains("| `ORDER_NOT_FOUND` | 404 | no such order, or another user's |"));
    }
}
