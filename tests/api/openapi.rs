use reqwest::StatusCode;
use serde_json::Value;

use wxtopup::domain::{Money, OrderNumber, Paging, PhoneNumber, DAY_PATTERN};
use wxtopup::error::ErrorCode;

use crate::helpers::{spawn_app, spawn_app_with, TestApp};

/// Every operation the service serves, outside the console and Swagger UI. The router and the document
/// come from one list; this one says what that list must be.
const OPERATIONS: &[(&str, &str)] = &[
    ("get", "/health"),
    ("get", "/metrics"),
    ("get", "/products"),
    ("post", "/orders"),
    ("get", "/orders"),
    ("get", "/orders/{orderNumber}"),
    ("post", "/payment/create"),
    ("post", "/payment/callback/{orderNumber}"),
    ("post", "/payment/refund-callback/{orderNumber}"),
    ("get", "/admin/orders"),
    ("get", "/admin/orders/{orderNumber}"),
    ("post", "/admin/orders/{orderNumber}/retry"),
    ("post", "/admin/orders/{orderNumber}/refund"),
    ("post", "/admin/orders/{orderNumber}/mark-delivered"),
    ("post", "/admin/refunds/{outRefundNo}/retry"),
    ("post", "/admin/refunds/{outRefundNo}/replace"),
    ("get", "/admin/reconciliation"),
    ("get", "/admin/alerts"),
    ("get", "/admin/stats"),
    ("get", "/admin/products"),
    ("post", "/admin/products"),
    ("patch", "/admin/products/{id}"),
    ("post", "/admin/products/reorder"),
    ("get", "/admin/products/{id}/changes"),
    ("post", "/jobs/compensate"),
    ("post", "/jobs/reconcile"),
    ("post", "/sandbox/orders/{orderNumber}/pay"),
];

/// A development instance with the sandbox and an admin token: its document lists every operation.
async fn everything_served() -> TestApp {
    spawn_app_with(&[("PAYMENT_SANDBOX", "true")]).await
}

async fn document(app: &TestApp) -> Value {
    app.client.get(app.url("/api/openapi.json")).send().await.unwrap().json().await.unwrap()
}

fn documented_operations(doc: &Value) -> Vec<(String, String)> {
    let mut operations: Vec<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| item.as_object().unwrap().keys().map(move |method| (method.clone(), path.clone())))
        .collect();
    operations.sort();
    operations
}

#[tokio::test]
async fn the_document_lists_exactly_the_operations_the_router_serves() {
    let app = everything_served().await;
    let doc = document(&app).await;
    let mut expected: Vec<(String, String)> =
        OPERATIONS.iter().map(|(method, path)| (method.to_string(), path.to_string())).collect();
    expected.sort();
    assert_eq!(documented_operations(&doc), expected);

    let mut ids: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .map(|op| op["operationId"].as_str().unwrap())
        .collect();
    ids.sort();
    let count = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), count, "operation ids are not unique");

    // Each documented operation is routed: without credentials or a body it is refused by its handler,
    // never answered by the router's fallback.
    for (method, path) in OPERATIONS {
        let url = app.url(
            &path.replace("{orderNumber}", "ORD1763900000000Ab3x").replace("{outRefundNo}", "R1").replace("{id}", "1"),
        );
        let request = match *method {
            "get" => app.client.get(url),
            "patch" => app.client.patch(url),
            _ => app.client.post(url),
        };
        let response = request.send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(
            !(status == StatusCode::NOT_FOUND && body["message"] == "no such endpoint"),
            "{method} {path} is documented but not served"
        );
    }
}

#[tokio::test]
async fn the_openapi_document_lists_every_endpoint_and_error_code() {
    let app = everything_served().await;
    let doc = document(&app).await;
    for (method, path, statuses) in [
        (
            "post",
            "/payment/create",
            &["200", "400", "401", "404", "408", "409", "413", "415", "422", "429", "502", "503"][..],
        ),
        ("post", "/orders", &["200", "201", "400", "401", "404", "408", "409", "413", "415", "422", "429", "503"]),
        ("get", "/orders/{orderNumber}", &["200", "400", "401", "404", "408", "429", "503"]),
        ("get", "/admin/alerts", &["200", "400", "401", "404", "408", "429", "503"]),
        (
            "post",
            "/admin/orders/{orderNumber}/refund",
            &["200", "400", "401", "404", "408", "409", "413", "415", "422", "429", "503"],
        ),
        ("post", "/sandbox/orders/{orderNumber}/pay", &["200", "400", "404", "408", "409", "413", "422", "429", "503"]),
        ("post", "/payment/callback/{orderNumber}", &["200", "400", "401", "408", "413", "429", "502", "503"]),
        ("post", "/payment/refund-callback/{orderNumber}", &["200", "400", "401", "408", "413", "429", "502", "503"]),
    ] {
        let responses = doc["paths"][path][method]["responses"].as_object().unwrap();
        let documented: Vec<&str> = responses.keys().map(String::as_str).collect();
        assert_eq!(documented, statuses, "{method} {path}");
    }
    assert!(doc["paths"]["/orders"]["post"]["responses"]["429"]["headers"]["Retry-After"].is_object());
    let text = doc.to_string();
    for code in ["ORDER_NOT_PAYABLE", "WECHAT_ERROR", "INVALID_PHONE_NUMBER", "UNTRUSTED_SOURCE"] {
        assert!(text.contains(code), "{code} not documented");
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    assert!(doc["components"]["securitySchemes"]["openid"].is_object());
}

/// The backticked upper-case words of a description: the error codes it names.
fn codes_named_in(description: &str) -> Vec<&str> {
    description
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|word| word.len() > 1 && word.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
        .collect()
}

#[tokio::test]
async fn error_codes_come_from_one_list_and_each_response_names_codes_of_its_status() {
    let app = everything_served().await;
    let doc = document(&app).await;
    let listed: Vec<&str> = doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .expect("ErrorCode is an enum in the document")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(listed, ErrorCode::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>());
    assert_eq!(
        doc["components"]["schemas"]["ErrorBody"]["properties"]["code"]["$ref"],
        "#/components/schemas/ErrorCode"
    );

    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                for named in codes_named_in(response["description"].as_str().unwrap_or_default()) {
                    let code = ErrorCode::ALL
                        .iter()
                        .find(|c| c.as_str() == named)
                        .unwrap_or_else(|| panic!("{method} {path} {status}: {named} is not an error code"));
                    assert_eq!(code.status().as_str(), status, "{method} {path}: {named} is documented under {status}");
                }
            }
        }
    }
}

#[tokio::test]
async fn every_link_leads_to_an_operation_with_the_parameters_it_fills() {
    let app = everything_served().await;
    let doc = document(&app).await;
    let operations: Vec<&Value> =
        doc["paths"].as_object().unwrap().values().flat_map(|item| item.as_object().unwrap().values()).collect();
    let mut followed = 0;
    for operation in &operations {
        for response in operation["responses"].as_object().unwrap().values() {
            for (name, link) in response["links"].as_object().into_iter().flatten() {
                let id = link["operationId"].as_str().unwrap_or_else(|| panic!("{name}: {link}"));
                let target = operations.iter().find(|op| op["operationId"] == id).unwrap_or_else(|| panic!("{id}"));
                for parameter in link["parameters"].as_object().into_iter().flatten().map(|(p, _)| p) {
                    let declared = target["parameters"].as_array().unwrap();
                    assert!(declared.iter().any(|p| p["name"] == parameter.as_str()), "{id} has no {parameter}");
                }
                assert!(link["requestBody"].is_null() || target["requestBody"].is_object(), "{name}");
                followed += 1;
            }
        }
    }
    assert!(followed >= 10, "the order → payment → sandbox pay → refund links are documented");
}

fn parameter<'a>(doc: &'a Value, method: &str, path: &str, name: &str) -> &'a Value {
    let parameters = doc["paths"][path][method]["parameters"].as_array().unwrap();
    let parameter = parameters.iter().find(|p| p["name"] == name);
    &parameter.unwrap_or_else(|| panic!("{method} {path} has no parameter {name}"))["schema"]
}

fn property<'a>(doc: &'a Value, schema: &str, name: &str) -> &'a Value {
    &doc["components"]["schemas"][schema]["properties"][name]
}

#[tokio::test]
async fn parameters_carry_the_bounds_and_formats_the_code_enforces() {
    let app = everything_served().await;
    let doc = document(&app).await;
    for path in ["/orders", "/admin/orders", "/admin/alerts"] {
        let page = parameter(&doc, "get", path, "page");
        assert_eq!((page["minimum"].as_u64(), page["maximum"].as_u64()), (Some(1), Some(Paging::MAX_PAGE)), "{path}");
        let size = parameter(&doc, "get", path, "pageSize");
        assert_eq!((size["minimum"].as_u64(), size["maximum"].as_u64()), (Some(1), Some(Paging::MAX_SIZE)), "{path}");
    }
    for (path, name) in [("/admin/reconciliation", "date"), ("/admin/stats", "from"), ("/admin/stats", "to")] {
        let day = parameter(&doc, "get", path, name);
        assert_eq!((day["type"].as_str(), day["format"].as_str()), (Some("string"), Some("date")), "{path} {name}");
        assert_eq!(day["pattern"], DAY_PATTERN, "{path} {name}");
    }
    // Where a malformed order number can only be unknown, the document says which shape exists.
    for (method, path) in [
        ("get", "/orders/{orderNumber}"),
        ("get", "/admin/orders/{orderNumber}"),
        ("post", "/admin/orders/{orderNumber}/retry"),
        ("post", "/admin/orders/{orderNumber}/refund"),
        ("post", "/admin/orders/{orderNumber}/mark-delivered"),
        ("post", "/sandbox/orders/{orderNumber}/pay"),
    ] {
        assert_eq!(parameter(&doc, method, path, "orderNumber")["pattern"], OrderNumber::PATTERN, "{method} {path}");
    }
    // The callbacks store whatever number the platform sends (an unknown one is recorded as such).
    assert!(parameter(&doc, "post", "/payment/callback/{orderNumber}", "orderNumber")["pattern"].is_null());
    assert_eq!(property(&doc, "CreatePaymentRequest", "orderNumber")["pattern"], OrderNumber::PATTERN);
    assert_eq!(property(&doc, "CreateOrderRequest", "phoneNumber")["pattern"], PhoneNumber::PATTERN);
    let product = property(&doc, "CreateOrderRequest", "productId");
    assert_eq!((product["minimum"].as_i64(), product["maximum"].as_i64()), (Some(1), Some(i64::from(i32::MAX))));
    assert_eq!(property(&doc, "RefundOrderRequest", "amount")["pattern"], Money::PATTERN);
    assert_eq!(property(&doc, "RefundOrderRequest", "reason")["minLength"], 1);
    assert_eq!(property(&doc, "MarkDeliveredRequest", "note")["minLength"], 1);
}

#[tokio::test]
async fn swagger_ui_is_served_at_api() {
    let app = everything_served().await;
    let response = app.client.get(app.url("/api/")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.unwrap().contains("swagger"));
}

/// The binary embeds only part of Swagger UI's distribution (see `.cargo/config.toml`): every script,
/// stylesheet and icon the page loads must still be there, whole.
#[tokio::test]
async fn every_file_the_swagger_ui_page_loads_is_served() {
    let app = everything_served().await;
    let page = app.client.get(app.url("/api/")).send().await.unwrap().text().await.unwrap();
    let assets: Vec<&str> = page
        .split(['"', '\''])
        .filter_map(|part| part.strip_prefix("./").or(Some(part)))
        .filter(|part| [".js", ".css", ".png"].iter().any(|ext| part.ends_with(ext)) && !part.contains('/'))
        .collect();
    for expected in ["swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css"] {
        assert!(assets.contains(&expected), "the page no longer loads {expected}: {assets:?}");
    }
    for asset in assets {
        let response = app.client.get(app.url(&format!("/api/{asset}"))).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "/api/{asset}");
        let body = response.bytes().await.unwrap();
        assert!(body.len() > 100, "/api/{asset} is served with {} bytes", body.len());
    }
}

fn paths(doc: &Value) -> Vec<String> {
    documented_operations(doc).into_iter().map(|(_, path)| path).collect()
}

fn lists_admin(doc: &Value) -> bool {
    let admin_path = paths(doc).iter().any(|p| p.starts_with("/admin/") || p.starts_with("/jobs/"));
    let admin_tag = doc["tags"].as_array().unwrap().iter().any(|t| t["name"] == "admin");
    let admin_schema = doc["components"]["schemas"].as_object().unwrap().contains_key("AdminOrderResponse");
    assert_eq!(admin_path, admin_tag, "the admin tag goes with its operations");
    assert_eq!(admin_path, admin_schema, "schemas only admin operations use go with them");
    admin_path
}

#[tokio::test]
async fn in_production_the_document_lists_admin_operations_only_for_the_admin_token() {
    let app = spawn_app_with(&[("APP_ENV", "production")]).await;
    let anyone = app.client.get(app.url("/api/openapi.json")).send().await.unwrap();
    assert_eq!(anyone.status(), StatusCode::OK);
    assert_eq!(anyone.headers().get("vary").unwrap(), "authorization");
    let public: Value = anyone.json().await.unwrap();
    assert!(!lists_admin(&public), "{:?}", paths(&public));
    assert!(paths(&public).contains(&"/orders".to_string()));
    assert!(!paths(&public).iter().any(|p| p.starts_with("/sandbox/")), "no sandbox here");

    let wrong = app.client.get(app.url("/api/openapi.json")).bearer_auth("not-the-token").send().await.unwrap();
    assert!(!lists_admin(&wrong.json().await.unwrap()));

    let operator = app.client.get(app.url("/api/openapi.json")).bearer_auth(crate::helpers::ADMIN_TOKEN);
    let full: Value = operator.send().await.unwrap().json().await.unwrap();
    assert!(lists_admin(&full));
    assert!(paths(&full).contains(&"/admin/orders/{orderNumber}/refund".to_string()));
}

#[tokio::test]
async fn without_an_admin_token_the_document_has_no_admin_surface_even_in_development() {
    let app = spawn_app_with(&[("ADMIN_TOKEN", "")]).await;
    assert!(!lists_admin(&document(&app).await));
    let with_token = spawn_app().await;
    assert!(lists_admin(&document(&with_token).await), "development shows everything it serves");
}
