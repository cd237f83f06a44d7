use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{is_paid, mount_slow_query, paid_notification, spawn_app, spawn_app_with, OPENID};

async fn ack(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errcode"], 0, "{body}");
    body
}

#[tokio::test]
async fn a_valid_callback_marks_the_order_paid_with_beijing_time_converted_to_utc() {
    let app = spawn_app().await;
    let number = app.place_order(OPENID).await;
    let body = ack(app.deliver_callback(&number, &paid_notification(&number)).await).await;
    assert_eq!(body, json!({"errcode": 0, "errmsg": "ok"}));

    let order = app.order(&number).await;
    assert!(is_paid(&order.status), "{}", order.status);
    assert_eq!(order.transaction_id.as_deref(), Some("4200004561202203217657282768"));
    assert_eq!(order.paid_at.unwrap().to_string(), "2022-03-21 05:20:07");

    let api: Value = app.get_as(&format!("/orders/{number}"), OPENID).await.json().await.unwrap();
    assert!(is_paid(&api["status"].as_str().unwrap().parse().unwrap()));
    assert_eq!(api["paidAt"], "2022-03-21T05:20:07Z");
    assert_eq!(api["transactionId"], "4200004561202203217657282768");

    let events = app.events(&number).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].outcome, "accepted");
    assert!(events[0].body.contains("4200004561202203217657282768"));
    assert!(events[0].headers.contains("x-wx-source"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_duplicate_callbacks_make_exactly_one_transition() {
    let app = spawn_app().await;
    let number = app.place_order(OPENID).await;
    let notification = paid_notification(&number);
    let answers = join_all((0..50).map(|_| app.deliver_callback(&number, &notification))).await;
    for response in answers {
        let body = ack(response).await;
        assert_eq!(body, json!({"errcode": 0, "errmsg": "ok"}));
    }
    let events = app.events(&number).await;
    assert_eq!(events.len(), 50);
    assert_eq!(events.iter().filter(|e| e.outcome == "accepted").count(), 1);
    assert_eq!(events.iter().filter(|e| e.outcome == "duplicate").count(), 49);
    let order = app.order(&number).await;
    assert!(is_paid(&order.status), "{}", order.status);
    assert_eq!(order.anomaly, None);
}

/// Copies of one callback that arrive while the first is still asking WeChat wait for it, then find
/// the order paid: one `queryorder` however many copies (WeChat rate-limits the query).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn copies_of_a_callback_in_flight_together_ask_wechat_once() {
    let app = spawn_app().await;
    let number = app.place_order(OPENID).await;
    mount_slow_query(&app, "SUCCESS").await;
    let notification = paid_notification(&number);
    let answers = join_all((0..10).map(|_| app.deliver_callback(&number, &notification))).await;
    for response in answers {
        ack(response).await;
    }
    let requests = app.wechat.received_requests().await.unwrap();
    let queries = requests.iter().filter(|r| r.url.path() == "/_/pay/queryorder").count();
    assert_eq!(queries, 1, "one queryorder for 10 copies of one callback");
    let events = app.events(&number).await;
    assert_eq!(events.iter().filter(|e| e.outcome == "accepted").count(), 1);
    assert_eq!(events.iter().filter(|e| e.outcome == "duplicate").count(), 9);
}

async fn assert_anomaly(change: impl FnOnce(&mut Value), expected_detail: &str) {
    let app = spawn_app().await;
    let number = app.place_order(OPENID).await;
    let mut notification = paid_notification(&number);
    change(&mut notification);
    ack(app.deliver_callback(&number, &notification).await).await;
    let order = app.order(&number).await;
    assert_eq!(order.status.as_str(), "unpaid", "a mismatch must never mark the order paid");
    assert_eq!(order.transaction_id, None);
    assert_eq!(order.anomaly, None, "an unsigned body never writes on the order");
    let events = app.events(&number).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].outcome, "rejected");
    assert!(events[0].detail.as_deref().unwrap_or_default().contains(expected_detail), "{:?}", events[0].detail);
}

#[tokio::test]
async fn a_callback_with_the_wrong_amount_is_rejected() {
    assert_anomaly(|n| n["totalFee"] = json!(1), "totalFee").await;
}

#[tokio::test]
async fn a_callback_for_another_merchant_is_rejected() {
    assert_anomaly(|n| n["subMchId"] = json!("9999999999"), "subMchId").await;
}

#[tokio::test]
async fn a_callback_naming_another_order_is_rejected() {
    assert_anomaly(|n| n["outTradeNo"] = json!("ORD1111111111111abcd"), "outTradeNo").await;
}

#[tokio::test]
async fn a_callback_without_a_transaction_id_is_rejected() {
    assert_anomaly(|n| n["transactionId"] = json!(""), "transactionId").await;
}

#[tokio::test]
async fn a_callback_naming_another_transaction_for_a_paid_order_is_ignored_when_wechat_disagrees() {
    let app = spawn_app().await;
    let number = app.place_order(OPENID).await;
    ack(app.deliver_callback(&number, &paid_notification(&number)).await).await;
    let mut other = paid_notification(&number);
    other["transactionId"] = json!("4200000000000000000000000001");
    ack(app.deliver_callback(&number, &other).await).await;
    let order = app.order(&number).await;
    assert!(is_paid(&order.status), "{}", order.status);
    assert_eq!(order.transaction_id.as_deref(), Some("4200004561202203217657282768"));
    assert_eq!(order.anomaly, None, "an unsigned body that WeChat contradicts raises nothing");
    let events = app.events(&number).await;
    assert_eq!(events[1].outcome, "contradicted");
}

#[tokio::test]
async fn a_verified_callback_stores_what_wechat_says_not_what_the_body_says() {
    let app = spawn_app().await;
    let number = app.place_order(OPENID).await;
    let mut forged = paid_notification(&number);
    forged["transactionId"] = json!("FORGED");
    forged["timeEnd"] = json!("19990101000000");
    ack(app.deliver_callback(&number, &forged).await).await;
    let order = app.order(&number).await;
    assert!(is_paid(&order.status), "{}", order.status);
    // queryorder's answer (the default mock) is the source of truth.
    assert_eq!(order.transaction_id.as_deref(), Some("4200004561202203217657282768"));
    assert_eq!(order.paid_at.unwrap().to_string(), "2022-03-21 05:20:07");
}

#[tokio::test]
async fn a_failed_result_does_not_mark_the_order_paid() {
    let app = spawn_app().await;
    let number = app.place_order(OPENID).await;
    let mut notification = paid_notification(&number);
    notification["resultCode"] = json!("FAIL");
    ack(app.deliver_callback(&number, &notification).await).await;
    assert_eq!(app.order(&number).await.status.as_str(), "unpaid");
    assert_eq!(app.events(&number).await[0].outcome, "not_success");
}

#[tokio::test]
async fn malformed_json_is_400_and_stored_for_audit() {
    let app = spawn_app().await;
    let number = app.place_order(OPENID).await;
    let response = app
        .client
        .post(app.url(&format!("/payment/callback/{number}")))
        .header("X-WX-SOURCE", "wx_callback")
        .header("content-type", "application/json")
        .body("{\"returnCode\": SUCC")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "INVALID_JSON");
    assert_ne!(body["errcode"], 0);
    assert_eq!(app.order(&number).await.status.as_str(), "unpaid");
    let events = app.events(&number).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].outcome, "malformed");
}

#[tokio::test]
async fn a_callback_for_an_unknown_order_is_acknowledged_and_recorded() {
    let app = spawn_app().await;
    let number = "ORD1111111111111abcd";
    ack(app.deliver_callback(number, &paid_notification(number)).await).await;
    assert_eq!(app.events(number).await[0].outcome, "unknown_order");
    assert_eq!(app.order_count().await, 0);
}

#[tokio::test]
async fn production_refuses_callbacks_without_x_wx_source_and_changes_nothing() {
    let app = spawn_app_with(&[("APP_ENV", "production")]).await;
    let number = app.place_order(OPENID).await;
    let response = app
        .client
        .post(app.url(&format!("/payment/callback/{number}")))
        .json(&paid_notification(&number))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert_ne!(body["errcode"], 0);
    assert_eq!(body["code"], "UNTRUSTED_SOURCE");
    assert_eq!(app.order(&number).await.status.as_str(), "unpaid");
    assert!(app.events(&number).await.is_empty());

    ack(app.deliver_callback(&number, &paid_notification(&number)).await).await;
    assert!(is_paid(&app.order(&number).await.status));
}

#[tokio::test]
async fn a_database_failure_asks_the_platform_to_redeliver() {
    let app = spawn_app().await;
    let number = app.place_order(OPENID).await;
    app.db.clone().close().await.unwrap();
    let response = app.deliver_callback(&number, &paid_notification(&number)).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.unwrap();
    assert_ne!(body["errcode"], 0);
    assert_eq!(body["code"], "SERVICE_UNAVAILABLE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_duplicate_callbacks_for_many_orders_is_acknowledged_every_time() {
    let app = spawn_app().await;
    let mut numbers = Vec::new();
    for _ in 0..20 {
        numbers.push(app.place_order(OPENID).await);
    }
    let deliveries: Vec<(String, Value)> =
        numbers.iter().flat_map(|n| std::iter::repeat_n((n.clone(), paid_notification(n)), 20)).collect();
    let answers = join_all(deliveries.iter().map(|(n, body)| app.deliver_callback(n, body))).await;
    let refused: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).filter(|s| *s != 200).collect();
    assert!(refused.is_empty(), "{} of 400 deliveries refused: {refused:?}", refused.len());
    for number in &numbers {
        let events = app.events(number).await;
        assert_eq!(events.iter().filter(|e| e.outcome == "accepted").count(), 1, "{number}");
        assert!(is_paid(&app.order(number).await.status));
    }
}
