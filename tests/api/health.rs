use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{assert_error, spawn_app};

#[tokio::test]
async fn health_reports_ok_while_the_database_answers() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["database"], "ok");
}

#[tokio::test]
async fn health_is_503_when_the_database_is_gone() {
    let app = spawn_app().await;
    app.db.clone().close().await.unwrap();
    let response = app.client.get(app.url("/health")).send().await.unwrap();
    assert_error(response, StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE").await;
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_json_errors() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/nope")).send().await.unwrap();
    assert_error(response, StatusCode::NOT_FOUND, "NOT_FOUND").await;
    let response = app.client.delete(app.url("/products")).send().await.unwrap();
    assert_error(response, StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED").await;
}
