//! HTTP edges: extract, convert to domain types, call one service function, answer a DTO.

pub mod admin;
pub mod catalog;
pub mod console;
pub mod docs;
pub mod extract;
pub mod health;
pub mod idempotency;
pub mod identity;
pub mod metrics;
pub mod orders;
pub mod payment;
pub mod products;
pub mod sandbox;

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::ErrorBody;

/// The document's frame: info, tags, shared schemas and security. The paths are added by `app::router`
/// from the same list that serves them.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "wxtopup",
        description = "Top-ups sold through a WeChat mini-program and paid with WeChat Pay on WeChat Cloud Hosting.\n\n\
            Mini-program calls arrive through `wx.cloud.callContainer`, which injects the caller's identity as \
            `X-WX-OPENID` (trusted only together with `X-WX-SOURCE` in production). In development, \
            `X-Mock-Openid` works too. Amounts are decimal strings in yuan. A query parameter that is not \
            listed is refused (400), so a misspelt one is not silently ignored. Every error is \
            `{\"code\", \"message\"}` with a code from `ErrorCode`; any operation can also answer 500 \
            `INTERNAL_ERROR` for a fault of its own (logged, never detailed in the answer)."
    ),
    components(schemas(ErrorBody)),
    modifiers(&SecurityAddon),
    tags(
        (name = "orders", description = "The caller's orders"),
        (name = "payment", description = "WeChat Pay: prepay for the mini-program, callback from the platform"),
        (name = "catalog", description = "What is on sale"),
        (name = "admin", description = "Operators (bearer ADMIN_TOKEN; off when no token is set)"),
        (name = "sandbox", description = "Only with PAYMENT_SANDBOX=true: play the user and the platform"),
        (name = "service", description = "Operations"),
    )
)]
pub struct ApiDoc;

/// Every operation of an OpenAPI document (as JSON), for the passes that amend the served document.
pub(crate) fn operations_mut(doc: &mut serde_json::Value) -> Vec<&mut serde_json::Map<String, serde_json::Value>> {
    doc.get_mut("paths")
        .and_then(serde_json::Value::as_object_mut)
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(serde_json::Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(serde_json::Value::as_object_mut)
        .collect()
}

/// The document as served. utoipa 5 writes a response link's `operationId` and `requestBody` as
/// `operation_id` and `request_body` (its `Link` lacks the camel-case rename), which no tool reads;
/// they are renamed here so the links (order → payment → sandbox pay → refund) can be followed.
pub fn document(openapi: utoipa::openapi::OpenApi) -> serde_json::Value {
    // A derived Serialize with string keys only: this cannot fail.
    let mut doc = serde_json::to_value(openapi).expect("the OpenAPI document serialises");
    let responses = operations_mut(&mut doc)
        .into_iter()
        .filter_map(|operation| operation.get_mut("responses")?.as_object_mut())
        .flat_map(|responses| responses.values_mut());
    for response in responses {
        let links = response.get_mut("links").and_then(|links| links.as_object_mut());
        for link in links.into_iter().flat_map(|links| links.values_mut()).filter_map(|l| l.as_object_mut()) {
            let renames =
                [("operation_id", "operationId"), ("operation_ref", "operationRef"), ("request_body", "requestBody")];
            for (from, to) in renames {
                if let Some(value) = link.remove(from) {
                    link.insert(to.into(), value);
                }
            }
        }
    }
    add_limits(&mut doc);
    add_idempotency(&mut doc);
    doc
}

/// The operations that take an `Idempotency-Key` (see [`idempotency`]): the header, and the answers
/// it adds to each.
const IDEMPOTENT_OPERATIONS: [&str; 3] = ["create_order", "create_payment", "refund_order"];

fn add_idempotency(doc: &mut serde_json::Value) {
    use serde_json::{json, Value};
    let header = json!({
        "name": "Idempotency-Key", "in": "header", "required": false,
        "description": "Makes a repeat of this request (a double tap, a retry after a lost answer) get the first \
            answer instead of acting again: the same key from the same caller with the same body, for 24 hours; \
            a replay carries `Idempotent-Replayed: true`. Answers that ask to try again (401, 408, 429, 5xx) are \
            not kept.",
        "schema": {"type": "string", "pattern": "^[!-~]{1,255}$", "minLength": 1, "maxLength": 255},
    });
    let error = json!({"$ref": "#/components/schemas/ErrorBody"});
    let additions = [
        ("400", "`INVALID_REQUEST`: the Idempotency-Key is not 1 to 255 visible ASCII characters"),
        ("409", "`IDEMPOTENCY_KEY_IN_USE`: the first request with this key is still being handled"),
        ("422", "`IDEMPOTENCY_KEY_REUSED`: this key came with another body"),
    ];
    let idempotent = operations_mut(doc).into_iter().filter(|operation| {
        operation.get("operationId").and_then(Value::as_str).is_some_and(|id| IDEMPOTENT_OPERATIONS.contains(&id))
    });
    for operation in idempotent {
        if let Some(parameters) = operation.get_mut("parameters").and_then(Value::as_array_mut) {
            parameters.push(header.clone());
        } else {
            operation.insert("parameters".into(), json!([header.clone()]));
        }
        let Some(responses) = operation.get_mut("responses").and_then(Value::as_object_mut) else { continue };
        for (status, text) in additions {
            let response = responses
                .entry(status)
                .or_insert_with(|| json!({"description": "", "content": {"application/json": {"schema": error}}}));
            let description = response["description"].as_str().unwrap_or_default();
            let joined = if description.is_empty() { text.to_string() } else { format!("{description}; {text}") };
            response["description"] = Value::String(joined);
        }
    }
}

/// Every operation can answer 408 (a client too slow: `HTTP_*_TIMEOUT_SECONDS`) and 429 (the rate
/// limits: per openid, per order's confirmations, or per address without a verified caller).
fn add_limits(doc: &mut serde_json::Value) {
    use serde_json::json;
    let error = json!({"$ref": "#/components/schemas/ErrorBody"});
    let timeout = json!({"description": "`REQUEST_TIMEOUT`: the headers, the body or the whole request took too long",
        "content": {"application/json": {"schema": error}}});
    let limited = json!({"description": "`RATE_LIMITED`: too many requests; retry after `Retry-After` seconds",
        "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer", "minimum": 1}}},
        "content": {"application/json": {"schema": error}}});
    let responses =
        operations_mut(doc).into_iter().filter_map(|operation| operation.get_mut("responses")?.as_object_mut());
    for responses in responses {
        responses.entry("408").or_insert_with(|| timeout.clone());
        responses.entry("429").or_insert_with(|| limited.clone());
    }
}

struct SecurityAddon;

impl Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "openid",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-WX-OPENID",
                "Injected by wx.cloud.callContainer (with X-WX-SOURCE). In development, X-Mock-Openid also works.",
            ))),
        );
        components.add_security_scheme(
            "admin",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some("ADMIN_TOKEN")).build(),
            ),
        );
    }
}
