//! `/api` (Swagger UI) and `/api/openapi.json`: the document shows what this instance serves to the
//! one asking. Admin operations (and the schemas only they use) are listed for a caller bearing
//! `ADMIN_TOKEN`, and for everyone in development, where the console hands the token out anyway; the
//! sandbox operation only when the sandbox is on; nothing of the admin surface when no token is set.

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::Value;
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::config::Settings;

pub const DOCUMENT_PATH: &str = "/api/openapi.json";

/// The tags whose operations only some instances or callers see.
const ADMIN_TAG: &str = "admin";
const SANDBOX_TAG: &str = "sandbox";

#[derive(Clone)]
struct Documents {
    /// Builds the document of the routes served. It is built and turned into the two answers below on
    /// the first request for either, not at start: that is milliseconds of a cold start no buyer needs.
    source: fn() -> utoipa::openapi::OpenApi,
    built: Arc<OnceLock<Built>>,
    admin: bool,
    sandbox: bool,
    /// `None`: everyone gets `full` (development) or nobody does (no token: `full` has no admin part).
    admin_token: Option<String>,
}

struct Built {
    /// What an operator sees, serialised once.
    full: Arc<[u8]>,
    /// What anyone else sees.
    public: Arc<[u8]>,
}

impl Documents {
    fn built(&self) -> &Built {
        self.built.get_or_init(|| {
            let document = super::document((self.source)());
            let full = document_for(document.clone(), Audience { admin: self.admin, sandbox: self.sandbox });
            let public = document_for(document, Audience { admin: false, sandbox: self.sandbox });
            let serialise = |doc: &Value| -> Arc<[u8]> { serde_json::to_vec(doc).unwrap_or_default().into() };
            Built { full: serialise(&full), public: serialise(&public) }
        })
    }
}

/// Swagger UI at `/api`, reading the document at [`DOCUMENT_PATH`].
pub fn router(document: fn() -> utoipa::openapi::OpenApi, settings: &Settings) -> Router {
    let documents = Documents {
        source: document,
        built: Arc::default(),
        admin: settings.admin_token.is_some(),
        sandbox: settings.wechat.sandbox,
        admin_token: if settings.is_production() { settings.admin_token.clone() } else { None },
    };
    let ui = SwaggerUi::new("/api").config(Config::from(DOCUMENT_PATH));
    Router::new().route(DOCUMENT_PATH, get(serve).with_state(documents)).merge(Router::from(ui))
}

async fn serve(State(documents): State<Documents>, headers: HeaderMap) -> Response {
    let full = documents.admin_token.as_deref().is_none_or(|expected| super::admin::bears_token(&headers, expected));
    let built = documents.built();
    let body = if full { &built.full } else { &built.public };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            // The answer depends on the caller: no shared cache may hand an operator's to anyone else.
            (header::VARY, HeaderValue::from_static("authorization")),
            (header::CACHE_CONTROL, HeaderValue::from_static("private, no-cache")),
        ],
        body.to_vec(),
    )
        .into_response()
}

/// Who a document is for.
#[derive(Clone, Copy, Debug)]
pub struct Audience {
    /// Show the admin operations.
    pub admin: bool,
    /// Show the sandbox operation.
    pub sandbox: bool,
}

/// The document cut down to what `audience` may call: operations tagged for another audience go, then
/// paths left empty, tags no operation uses, and schemas nothing left refers to.
pub fn document_for(mut doc: Value, audience: Audience) -> Value {
    let hidden = |tags: Option<&Value>| {
        let tags = tags.and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str);
        tags.into_iter().any(|tag| (tag == ADMIN_TAG && !audience.admin) || (tag == SANDBOX_TAG && !audience.sandbox))
    };
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for item in paths.values_mut().filter_map(Value::as_object_mut) {
            item.retain(|_, operation| !hidden(operation.get("tags")));
        }
        paths.retain(|_, item| item.as_object().is_some_and(|item| !item.is_empty()));
    }
    prune_links(&mut doc);
    let used_tags: Vec<String> = doc["paths"]
        .as_object()
        .into_iter()
        .flat_map(|paths| paths.values())
        .filter_map(Value::as_object)
        .flat_map(|item| item.values())
        .filter_map(|operation| operation.get("tags")?.as_array())
        .flatten()
        .filter_map(|tag| Some(tag.as_str()?.to_string()))
        .collect();
    if let Some(tags) = doc.get_mut("tags").and_then(Value::as_array_mut) {
        tags.retain(|tag| tag["name"].as_str().is_some_and(|name| used_tags.iter().any(|used| used == name)));
    }
    prune_schemas(&mut doc);
    doc
}

/// Drops the response links that lead to an operation no longer in the document.
fn prune_links(doc: &mut Value) {
    let ids: Vec<String> = super::operations_mut(doc)
        .iter()
        .filter_map(|operation| Some(operation.get("operationId")?.as_str()?.to_string()))
        .collect();
    let responses = super::operations_mut(doc)
        .into_iter()
        .filter_map(|operation| operation.get_mut("responses")?.as_object_mut())
        .flat_map(|responses| responses.values_mut())
        .filter_map(Value::as_object_mut);
    for response in responses {
        if let Some(links) = response.get_mut("links").and_then(Value::as_object_mut) {
            links.retain(|_, link| {
                link.get("operationId").and_then(Value::as_str).is_some_and(|id| ids.iter().any(|known| known == id))
            });
            if links.is_empty() {
                response.remove("links");
            }
        }
    }
}

const SCHEMA_REF: &str = "#/components/schemas/";

/// Drops the component schemas that nothing outside them refers to, directly or through other schemas.
fn prune_schemas(doc: &mut Value) {
    let Some(schemas) = doc.pointer("/components/schemas").and_then(Value::as_object).cloned() else {
        return;
    };
    let mut outside = doc.clone();
    if let Some(components) = outside.get_mut("components").and_then(Value::as_object_mut) {
        components.remove("schemas");
    }
    let mut reachable: Vec<String> = Vec::new();
    let mut pending = Vec::new();
    collect_refs(&outside, &mut pending);
    while let Some(name) = pending.pop() {
        if reachable.contains(&name) {
            continue;
        }
        if let Some(schema) = schemas.get(&name) {
            collect_refs(schema, &mut pending);
        }
        reachable.push(name);
    }
    if let Some(schemas) = doc.pointer_mut("/components/schemas").and_then(Value::as_object_mut) {
        schemas.retain(|name, _| reachable.contains(name));
    }
}

fn collect_refs(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value.as_str().and_then(|r| r.strip_prefix(SCHEMA_REF))) {
                    ("$ref", Some(name)) => into.push(name.to_string()),
                    _ => collect_refs(value, into),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_refs(item, into)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({
            "paths": {
                "/orders": {"get": {"tags": ["orders"], "operationId": "list", "responses": {"200": {
                    "links": {"Refund": {"operationId": "adminList"}, "Self": {"operationId": "list"}},
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/OrderList"}}}}}}},
                "/admin/orders": {"get": {"tags": ["admin"], "operationId": "adminList", "responses": {"200": {"content": {"application/json":
                    {"schema": {"$ref": "#/components/schemas/AdminOrder"}}}}}}},
                "/sandbox/pay": {"post": {"tags": ["sandbox"], "responses": {}}},
            },
            "components": {"schemas": {
                "OrderList": {"type": "array", "items": {"$ref": "#/components/schemas/Order"}},
                "Order": {"type": "object"},
                "AdminOrder": {"allOf": [{"$ref": "#/components/schemas/Order"}, {"$ref": "#/components/schemas/Attempt"}]},
                "Attempt": {"type": "object"},
            }},
            "tags": [{"name": "orders"}, {"name": "admin"}, {"name": "sandbox"}],
        })
    }

    fn keys(value: &Value) -> Vec<&str> {
        let mut keys: Vec<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        keys
    }

    #[test]
    fn the_public_document_has_no_admin_operation_tag_or_schema() {
        let public = document_for(doc(), Audience { admin: false, sandbox: false });
        assert_eq!(keys(&public["paths"]), ["/orders"]);
        assert_eq!(keys(&public["components"]["schemas"]), ["Order", "OrderList"]);
        assert_eq!(public["tags"], json!([{"name": "orders"}]));
        assert_eq!(keys(&public["paths"]["/orders"]["get"]["responses"]["200"]["links"]), ["Self"]);
    }

    #[test]
    fn the_full_document_keeps_what_admin_operations_refer_to_through_other_schemas() {
        let full = document_for(doc(), Audience { admin: true, sandbox: true });
        assert_eq!(keys(&full["paths"]), ["/admin/orders", "/orders", "/sandbox/pay"]);
        assert_eq!(keys(&full["components"]["schemas"]), ["AdminOrder", "Attempt", "Order", "OrderList"]);
        assert_eq!(full["tags"].as_array().unwrap().len(), 3);
        assert_eq!(keys(&full["paths"]["/orders"]["get"]["responses"]["200"]["links"]), ["Refund", "Self"]);
    }
}
