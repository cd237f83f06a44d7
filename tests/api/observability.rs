use reqwest::StatusCode;
use serde_json::{json, Value};
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};
use wxtopup::jobs::reconcile::run_once;

use crate::helpers::{
    assert_error, carrier_answer, mount_submit, mount_wechat, paid_notification, query_order_answer, spawn_app,
    spawn_app_with, TestApp, OPENID,
};

#[tokio::test]
async fn every_response_carries_a_request_id_kept_from_the_caller_or_made() {
    let app = spawn_app().await;
    let given = app.client.get(app.url("/health")).header("X-Request-Id", "req-123").send().await.unwrap();
    assert_eq!(given.headers()["x-request-id"], "req-123");
    let made = app.client.get(app.url("/products")).send().await.unwrap();
    let id = made.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 16);
    let junk = app.client.get(app.url("/health")).header("X-Request-Id", "x".repeat(200)).send().await.unwrap();
    assert_eq!(junk.headers()["x-request-id"].len(), 16, "an oversized id is replaced");
}

#[tokio::test]
async fn metrics_need_the_admin_token_and_count_requests_callbacks_and_orders() {
    let app = spawn_app().await;
    mount_submit(&app, ResponseTemplate::new(200).set_body_json(carrier_answer("success")), 1).await;
    let number = app.place_order(OPENID).await;
    app.deliver_callback(&number, &paid_notification(&number)).await;
    app.wait_for_status(&number, "success").await;

    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_error(response, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    let response = app.admin_get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    for expected in [
        "http_requests_total{route=\"/orders\",method=\"POST\",status=\"201\"}",
        "http_request_duration_seconds_bucket{route=\"/orders\",method=\"POST\"",
        "payment_callbacks_total{outcome=\"accepted\"}",
        "wechat_calls_total{endpoint=\"queryorder\",outcome=\"ok\"}",
        "fulfilment_attempts_total{action=\"submit\",outcome=\"delivered\"}",
        "orders{status=\"success\"} 1",
        "orders{status=\"unpaid\"} 0",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
}

async fn webhook() -> MockServer {
    MockServer::start().await
}

/// The alerts once at least `count` are recorded and none is still being sent (they are written in the
/// background).
async fn alerts(app: &TestApp, count: usize) -> Vec<Value> {
    for _ in 0..250 {
        let page: Value = app.admin_get("/admin/alerts").await.json().await.unwrap();
        let items = page["items"].as_array().unwrap().clone();
        if items.len() >= count && items.iter().all(|a| a["delivery"] != "pending") {
            return items;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("alerts never settled");
}

/// A callback WeChat confirms with another amount than the order's: a verified anomaly.
async fn anomalous_payment(app: &TestApp) -> String {
    let number = app.place_order(OPENID).await;
    app.deliver_callback(&number, &paid_notification(&number)).await;
    number
}

#[tokio::test]
async fn an_anomaly_wechat_confirms_alerts_the_group_once() {
    let hook = webhook().await;
    let app = spawn_app_with(&[("ALERT_WEBHOOK_URL", &format!("{}/cgi-bin/webhook/send?key=k", hook.uri()))]).await;
    mount_wechat(&app, "queryorder", query_order_answer("SUCCESS", 1100), 2).await;
    // Mounted first: the alert is sent in the background, possibly before the callback is answered.
    Mock::given(method("POST"))
        .and(path("/cgi-bin/webhook/send"))
        .and(body_partial_json(json!({"msgtype": "markdown"})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"errcode": 0, "errmsg": "ok"})))
        .expect(1)
        .mount(&hook)
        .await;
    let number = anomalous_payment(&app).await;
    // The same anomaly again: recorded on the order, not alerted twice.
    app.deliver_callback(&number, &paid_notification(&number)).await;
    let items = alerts(&app, 1).await;
    assert_eq!(items.len(), 1);
    assert_eq!((items[0]["kind"].as_str(), items[0]["orderNumber"].as_str()), (Some("anomaly"), Some(number.as_str())));
    let sent = hook.received_requests().await.unwrap();
    let content =
        serde_json::from_slice::<Value>(&sent[0].body).unwrap()["markdown"]["content"].as_str().unwrap().to_string();
    assert!(content.contains(&number), "{content}");
}

#[tokio::test]
async fn a_callback_wechat_contradicts_writes_nothing_on_the_order_and_raises_no_alert() {
    let app = spawn_app().await;
    mount_wechat(&app, "queryorder", query_order_answer("NOTPAY", 1200), 1).await;
    let number = app.place_order(OPENID).await;
    let response = app.deliver_callback(&number, &paid_notification(&number)).await;
    assert_eq!(response.json::<Value>().await.unwrap()["errcode"], 0);
    let order = app.order(&number).await;
    assert_eq!((order.status.as_str(), order.anomaly), ("unpaid", None));
    assert_eq!(app.events(&number).await[0].outcome, "rejected");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(crate::helpers::alert_kinds(&app, &number).await.is_empty(), "anyone can POST a callback");
}

#[tokio::test]
async fn alerts_are_rate_limited_and_recorded_anyway() {
    let hook = webhook().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"errcode": 0})))
        .expect(1)
        .mount(&hook)
        .await;
    let app = spawn_app_with(&[("ALERT_WEBHOOK_URL", &hook.uri()), ("ALERT_MAX_PER_MINUTE", "1")]).await;
    mount_wechat(&app, "queryorder", query_order_answer("SUCCESS", 1100), 2).await;
    anomalous_payment(&app).await;
    anomalous_payment(&app).await;
    let mut deliveries: Vec<String> =
        alerts(&app, 2).await.iter().map(|a| a["delivery"].as_str().unwrap().to_string()).collect();
    deliveries.sort();
    assert_eq!(deliveries, vec!["rate_limited", "sent"]);
}

#[tokio::test]
async fn a_broken_webhook_never_fails_the_flow() {
    let hook = webhook().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(500)).mount(&hook).await;
    let app = spawn_app_with(&[("ALERT_WEBHOOK_URL", &hook.uri())]).await;
    mount_wechat(&app, "queryorder", query_order_answer("SUCCESS", 1100), 1).await;
    let number = app.place_order(OPENID).await;
    let response = app.deliver_callback(&number, &paid_notification(&number)).await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errcode"], 0);
    assert_eq!(alerts(&app, 1).await[0]["delivery"], "failed");
}

#[tokio::test]
async fn a_failed_top_up_and_unbalanced_books_are_alerted() {
    let app = spawn_app_with(&[("AUTO_REFUND_ON_FAILURE", "false")]).await;
    mount_submit(&app, ResponseTemplate::new(400).set_body_json(json!({"message": "barred"})), 1).await;
    let number = app.paid_order_in_db("+97688112233").await;
    wxtopup::lifecycle::fulfil(&app.state, &number).await.unwrap();
    let report = run_once(&app.state).await.unwrap();
    assert_eq!(report.mismatches, 1);
    let mut kinds: Vec<String> = Vec::new();
    for _ in 0..200 {
        kinds = alerts(&app, 1).await.iter().map(|a| a["kind"].as_str().unwrap().to_string()).collect();
        if kinds.len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    kinds.sort();
    assert_eq!(kinds, vec!["reconciliation_mismatch", "topup_failed"]);
    assert_eq!(alerts(&app, 2).await[0]["delivery"], "disabled", "no webhook configured: recorded only");
}

#[tokio::test]
async fn statistics_count_the_funnel_amounts_and_hours() {
    let app = spawn_app_with(&[("AUTO_REFUND_ON_FAILURE", "false")]).await;
    Mock::given(method("POST"))
        .and(path("/topups"))
        .and(body_partial_json(json!({"phoneNumber": "+97688110000"})))
        .respond_with(ResponseTemplate::new(400))
        .mount(&app.carrier)
        .await;
    mount_submit(&app, ResponseTemplate::new(200).set_body_json(carrier_answer("success")), 1).await;
    let delivered = app.paid_order_in_db("+97688112233").await;
    let failed = app.paid_order_in_db("+97688110000").await;
    app.place_order(OPENID).await;
    wxtopup::lifecycle::fulfil(&app.state, &delivered).await.unwrap();
    wxtopup::lifecycle::fulfil(&app.state, &failed).await.unwrap();

    let stats: Value = app.admin_get("/admin/stats").await.json().await.unwrap();
    assert_eq!((stats["placed"].as_u64(), stats["paid"].as_u64()), (Some(3), Some(2)), "{stats}");
    assert_eq!((stats["delivered"].as_u64(), stats["failed"].as_u64()), (Some(1), Some(1)), "{stats}");
    assert_eq!(stats["paidTotal"], "24.00");
    assert_eq!(stats["deliveredTotal"], "12.00");
    assert!((stats["paymentSuccessRate"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9);
    assert_eq!(stats["topUpSuccessRate"], 0.5);
    assert!(stats["topUpLatencyP50Ms"].as_i64().is_some());
    let hours: u64 = stats["ordersByHour"].as_array().unwrap().iter().map(|h| h.as_u64().unwrap()).sum();
    assert_eq!(hours, 3);

    let response = app.admin_get("/admin/stats?from=2026-02-01&to=2026-01-01").await;
    assert_error(response, StatusCode::BAD_REQUEST, "INVALID_REQUEST").await;
}
