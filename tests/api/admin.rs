use reqwest::StatusCode;
use serde_json::{json, Value};
use wiremock::ResponseTemplate;

use crate::helpers::{
    assert_error, carrier_answer, mount_query, mount_submit, paid_notification, spawn_app, spawn_app_with, OPENID,
};

#[tokio::test]
async fn admin_endpoints_do_not_exist_without_a_token_and_refuse_a_wrong_one() {
    let off = spawn_app_with(&[("ADMIN_TOKEN", "")]).await;
    let response = off.client.get(off.url("/admin/orders")).bearer_auth("x").send().await.unwrap();
    assert_error(response, StatusCode::NOT_FOUND, "NOT_FOUND").await;

    let app = spawn_app().await;
    let response = app.client.get(app.url("/admin/orders")).send().await.unwrap();
    assert_error(response, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    let response = app.client.get(app.url("/admin/orders")).bearer_auth("test-admin-tokem").send().await.unwrap();
    assert_error(response, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    // A user's identity headers are no admin credential.
    let response = app.get_as("/admin/orders", OPENID).await;
    assert_error(response, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
}

#[tokio::test]
async fn operators_filter_orders_by_status_and_anomaly() {
    let app = spawn_app_with(&[("AUTO_REFUND_ON_FAILURE", "false")]).await;
    mount_submit(&app, ResponseTemplate::new(400).set_body_json(json!({"message": "barred number"})), 1).await;
    let failed = app.paid_order_in_db("+97688112233").await;
    wxtopup::lifecycle::fulfil(&app.state, &failed).await.unwrap();
    let odd = app.place_order(OPENID).await;
    // WeChat itself reports another amount: a verified anomaly.
    crate::helpers::mount_wechat(&app, "queryorder", crate::helpers::query_order_answer("SUCCESS", 1100), 1).await;
    app.deliver_callback(&odd, &paid_notification(&odd)).await;
    app.place_order(OPENID).await;

    let page: Value = app.admin_get("/admin/orders?status=failed").await.json().await.unwrap();
    assert_eq!(page["total"], 1);
    assert_eq!(page["items"][0]["orderNumber"], failed.as_str());
    assert!(page["items"][0]["failureReason"].as_str().unwrap().contains("barred number"));
    let page: Value = app.admin_get("/admin/orders?anomaly=true").await.json().await.unwrap();
    assert_eq!(page["total"], 1);
    assert_eq!(page["items"][0]["orderNumber"], odd.as_str());
    let page: Value = app.admin_get(&format!("/admin/orders?q={odd}")).await.json().await.unwrap();
    assert_eq!(page["total"], 1);
    let page: Value = app.admin_get("/admin/orders").await.json().await.unwrap();
    assert_eq!(page["total"], 3);
    let response = app.admin_get("/admin/orders?status=lost").await;
    assert_error(response, StatusCode::BAD_REQUEST, "INVALID_REQUEST").await;
}

#[tokio::test]
async fn one_order_shows_its_payment_events_and_carrier_attempts() {
    let app = spawn_app().await;
    mount_submit(&app, ResponseTemplate::new(200).set_body_json(carrier_answer("success")), 1).await;
    let number = app.place_order(OPENID).await;
    app.deliver_callback(&number, &paid_notification(&number)).await;
    app.deliver_callback(&number, &paid_notification(&number)).await;
    app.wait_for_status(&number, "success").await;

    let history: Value = app.admin_get(&format!("/admin/orders/{number}")).await.json().await.unwrap();
    assert_eq!(history["order"]["status"], "success");
    assert_eq!(history["order"]["openid"], OPENID);
    let outcomes: Vec<&str> =
        history["paymentEvents"].as_array().unwrap().iter().map(|e| e["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, vec!["accepted", "duplicate"]);
    assert_eq!(history["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(history["attempts"][0]["action"], "submit");
    assert_eq!(history["attempts"][0]["outcome"], "delivered");

    let response = app.admin_get("/admin/orders/ORD0000000000000zzzz").await;
    assert_error(response, StatusCode::NOT_FOUND, "ORDER_NOT_FOUND").await;
}

#[tokio::test]
async fn retrying_a_failed_order_queries_first_and_delivers_once() {
    let app = spawn_app_with(&[("AUTO_REFUND_ON_FAILURE", "false")]).await;
    mount_submit(&app, ResponseTemplate::new(422).set_body_json(json!({"message": "carrier maintenance"})), 1).await;
    let number = app.paid_order_in_db("+97688112233").await;
    wxtopup::lifecycle::fulfil(&app.state, &number).await.unwrap();
    assert_eq!(app.order(&number).await.status.as_str(), "failed");
    app.carrier.reset().await;
    mount_query(&app, ResponseTemplate::new(404), 1).await;
    mount_submit(&app, ResponseTemplate::new(200).set_body_json(carrier_answer("success")), 1).await;

    let response = app.admin_post(&format!("/admin/orders/{number}/retry")).await;
    assert_eq!(response.status(), StatusCode::OK);
    app.wait_for_status(&number, "success").await;

    let response = app.admin_post(&format!("/admin/orders/{number}/retry")).await;
    assert_error(response, StatusCode::CONFLICT, "ORDER_NOT_RETRYABLE").await;
}
