//! The one HTTP error type: `{"code": "...", "message": "..."}` with a stable code per variant.

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::services::ServiceError;
use crate::wechat::WechatError;

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"code": "ORDER_NOT_FOUND", "message": "order not found"}))]
pub struct ErrorBody {
    /// Stable, machine-readable: `INVALID_REQUEST`, `INVALID_JSON`, `INVALID_PHONE_NUMBER`, `UNAUTHORIZED`, `UNTRUSTED_SOURCE`,
    /// `NOT_FOUND`, `ORDER_NOT_FOUND`, `PRODUCT_NOT_FOUND`, `ORDER_NOT_PAYABLE`, `ORDER_NOT_RETRYABLE`, `ORDER_NOT_REFUNDABLE`, `ORDER_CHANGED`, `INVALID_REFUND_AMOUNT`,
    /// `METHOD_NOT_ALLOWED`, `REQUEST_TIMEOUT`, `RATE_LIMITED`,
    /// `PAYLOAD_TOO_LARGE`, `UNSUPPORTED_MEDIA_TYPE`, `INVALID_BODY`, `WECHAT_ERROR`,
    /// `SERVICE_UNAVAILABLE`, `INTERNAL_ERROR`.
    pub code: &'static str,
    /// Human-readable; never carries internal details.
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: a parameter or field is invalid. `code` names which kind.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// 401: no trusted caller identity.
    #[error("caller identity is missing or not trusted")]
    Unauthorized,
    /// 401: a platform callback that did not come through WeChat Cloud Hosting (no `X-WX-SOURCE`).
    #[error("callbacks are accepted only from WeChat Cloud Hosting")]
    UntrustedSource,
    /// 404: the resource does not exist, or belongs to someone else.
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    /// 405: the path exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409: the order's state does not allow this.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
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
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest { code, message: message.into() }
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::NotFound { code, message: message.into() }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized | ApiError::UntrustedSource => StatusCode::UNAUTHORIZED,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::InvalidBody(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Wechat(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. } | ApiError::NotFound { code, .. } | ApiError::Conflict { code, .. } => {
                code
            }
            ApiError::Unauthorized => "UNAUTHORIZED",
            ApiError::UntrustedSource => "UNTRUSTED_SOURCE",
            ApiError::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ApiError::RequestTimeout => "REQUEST_TIMEOUT",
            ApiError::RateLimited(_) => "RATE_LIMITED",
            ApiError::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ApiError::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            ApiError::InvalidBody(_) => "INVALID_BODY",
            ApiError::Wechat(_) => "WECHAT_ERROR",
            ApiError::Unavailable => "SERVICE_UNAVAILABLE",
            ApiError::Internal => "INTERNAL_ERROR",
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
        match error {
            ServiceError::OrderNotFound => ApiError::not_found("ORDER_NOT_FOUND", "order not found"),
            ServiceError::ProductNotFound => {
                ApiError::not_found("PRODUCT_NOT_FOUND", "product not found or not on sale")
            }
            ServiceError::OrderNotPayable(status) => ApiError::Conflict {
                code: "ORDER_NOT_PAYABLE",
                message: format!("order is {status}; only unpaid orders can be paid"),
            },
            ServiceError::OrderNotRetryable(status) => ApiError::Conflict {
                code: "ORDER_NOT_RETRYABLE",
                message: format!("order is {status}; only failed or unresolved orders can be retried"),
            },
            ServiceError::OrderNotSettleable(status) => ApiError::Conflict {
                code: "ORDER_NOT_UNRESOLVED",
                message: format!("order is {status}; only unresolved orders can be marked delivered"),
            },
            ServiceError::OrderNotRefundable(status) => ApiError::Conflict {
                code: "ORDER_NOT_REFUNDABLE",
                message: format!("order is {status}; only paid orders that are not being delivered can be refunded"),
            },
            ServiceError::PartialRefundUndelivered => ApiError::Conflict {
                code: "PARTIAL_REFUND_UNDELIVERED",
                message: "an order that was not delivered can only be refunded whole".into(),
            },
            ServiceError::RefundNeedsProof => ApiError::Conflict {
                code: "REFUND_NEEDS_PROOF",
                message: "the carrier has not proved the top-up was not delivered; retry it, mark it delivered, or force the refund with a reason".into(),
            },
            ServiceError::RefundNotFound => ApiError::not_found("REFUND_NOT_FOUND", "refund not found"),
            ServiceError::RefundNotRetryable(status) => ApiError::Conflict {
                code: "REFUND_NOT_RETRYABLE",
                message: format!("refund is {status}; only failed refunds can be retried"),
            },
            ServiceError::RefundAmount(left) => ApiError::bad_request(
                "INVALID_REFUND_AMOUNT",
                format!("refund amount must be more than 0.00 and at most {left}, the amount not yet refunded"),
            ),
            ServiceError::OrderChanged => ApiError::Conflict {
                code: "ORDER_CHANGED",
                message: "the order changed while the request was handled; try again".into(),
            },
            ServiceError::Wechat(e) => ApiError::Wechat(e),
            ServiceError::Database(e) => from_db(e),
        }
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
                ApiError::bad_request("INVALID_JSON", "request body is not valid JSON")
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
        ApiError::bad_request("INVALID_REQUEST", "request body could not be read")
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::bad_request("INVALID_REQUEST", rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::bad_request("INVALID_REQUEST", rejection.body_text())
    }
}
