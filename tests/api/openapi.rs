use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::spawn_app;

#[tokio::test]
async fn the_openapi_document_lists_every_endpoint_and_error_code() {
    let app = spawn_app().await;
    let doc: Value = app.client.get(app.url("/api/openapi.json")).send().await.unwrap().json().await.unwrap();
    for path in [
        "/health",
        "/products",
        "/orders",
        "/orders/{orderNumber}",
        "/payment/create",
        "/payment/callback/{orderNumber}",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing from the OpenAPI document");
    }
    let create = &doc["paths"]["/payment/create"]["post"]["responses"];
    for status in ["200", "401", "404", "409", "502"] {
        assert!(create[status].is_object(), "/payment/create lacks {status}");
    }
    let text = doc.to_string();
    for code in ["ORDER_NOT_PAYABLE", "WECHAT_ERROR", "INVALID_PHONE_NUMBER", "UNTRUSTED_SOURCE"] {
        assert!(text.contains(code), "{code} not documented");
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    assert!(doc["components"]["securitySchemes"]["openid"].is_object());
}

#[tokio::test]
async fn swagger_ui_is_served_at_api() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/api/")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.unwrap().contains("swagger"));
}
