use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_error, spawn_app, spawn_app_with, OPENID};

#[tokio::test]
async fn requests_without_identity_are_401() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/orders")).send().await.unwrap();
    assert_error(response, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    let response = app
        .client
        .post(app.url("/orders"))
        .json(&json!({"productId": app.product_id, "phoneNumber": "12345678"}))
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    assert_eq!(app.order_count().await, 0);
}

#[tokio::test]
async fn development_accepts_the_mock_openid_header() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/orders")).header("X-Mock-Openid", "dev-user").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn production_ignores_openid_headers_without_x_wx_source() {
    let app = spawn_app_with(&[("APP_ENV", "production")]).await;
    for header in ["X-WX-OPENID", "X-WX-FROM-OPENID", "X-Mock-Openid"] {
        let response = app
            .client
            .post(app.url("/orders"))
            .header(header, OPENID)
            .json(&json!({"productId": app.product_id, "phoneNumber": "12345678"}))
            .send()
            .await
            .unwrap();
        assert_error(response, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    }
    let response = app
        .client
        .get(app.url("/orders"))
        .header("X-Mock-Openid", OPENID)
        .header("X-WX-SOURCE", "x")
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    assert_eq!(app.order_count().await, 0);
}

#[tokio::test]
async fn production_trusts_the_openid_that_came_through_wechat() {
    let app = spawn_app_with(&[("APP_ENV", "production")]).await;
    let response = app
        .client
        .post(app.url("/orders"))
        .header("X-WX-OPENID", OPENID)
        .header("X-WX-SOURCE", "wx_client")
        .json(&json!({"productId": app.product_id, "phoneNumber": "12345678"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    // Resource reuse: the openid arrives as X-WX-FROM-OPENID.
    let response = app
        .client
        .get(app.url("/orders"))
        .header("X-WX-FROM-OPENID", OPENID)
        .header("X-WX-SOURCE", "wx_client")
        .send()
        .await
        .unwrap();
    let page: serde_json::Value = response.json().await.unwrap();
    assert_eq!(page["total"], 1);
}

#[tokio::test]
async fn production_treats_an_empty_x_wx_source_as_absent() {
    let app = spawn_app_with(&[("APP_ENV", "production")]).await;
    for source in ["", " "] {
        let response = app
            .client
            .get(app.url("/orders"))
            .header("X-WX-OPENID", OPENID)
            .header("X-WX-SOURCE", source)
            .send()
            .await
            .unwrap();
        assert_error(response, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
        let number = "ORD1763900000000Ab3x";
        let callback = app
            .client
            .post(app.url(&format!("/payment/callback/{number}")))
            .header("X-WX-SOURCE", source)
            .json(&crate::helpers::paid_notification(number))
            .send()
            .await
            .unwrap();
        assert_eq!(callback.status(), StatusCode::UNAUTHORIZED, "an empty X-WX-SOURCE is not the platform");
    }
}
