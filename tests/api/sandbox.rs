use reqwest::StatusCode;
use serde_json::{json, Value};
use wxtopup::domain::Money;
use wxtopup::fulfilment::FulfilOutcome;
use wxtopup::jobs::reconcile::run_once;
use wxtopup::wechat::{RefundRequest, RefundState, TradeState};

use crate::helpers::{assert_error, spawn_app, spawn_app_with, TestApp, ADMIN_TOKEN, OPENID};

const SANDBOX: &[(&str, &str)] = &[("PAYMENT_SANDBOX", "true"), ("TOPUP_PROVIDER", "sandbox")];

/// Places an order for `phone` and asks for its prepay, as the mini-program would.
async fn order_with_sandbox_prepay(app: &TestApp, phone: &str) -> String {
    let response = app.post_as("/orders", OPENID, &json!({"productId": 1, "phoneNumber": phone})).await;
    let number = response.json::<Value>().await.unwrap()["orderNumber"].as_str().unwrap().to_string();
    let params: Value =
        app.post_as("/payment/create", OPENID, &json!({"orderNumber": number})).await.json().await.unwrap();
    assert!(params["paySign"].as_str().unwrap().starts_with("SANDBOX"));
    number
}

async fn pay(app: &TestApp, number: &str, body: Value) -> reqwest::Response {
    app.client.post(app.url(&format!("/sandbox/orders/{number}/pay"))).json(&body).send().await.unwrap()
}

#[tokio::test]
async fn paying_in_the_sandbox_runs_the_real_callback_and_delivers_the_top_up() {
    let app = spawn_app_with(SANDBOX).await;
    let number = order_with_sandbox_prepay(&app, "+97688112233").await;
    let response = pay(&app, &number, json!({})).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["callbackAnswers"], json!([{"status": 200, "errcode": 0}]));
    let order = app.wait_for_status(&number, "success").await;
    assert_eq!(order.transaction_id.as_deref(), body["transactionId"].as_str());
    let events = app.events(&number).await;
    assert_eq!(events[0].outcome, "accepted");
    assert!(events[0].headers.contains("x-wx-source"), "delivered with the platform's header");
    assert!(events[0].body.contains("\"subMchId\""), "in the platform's camelCase format");
}

#[tokio::test]
async fn a_sandbox_payment_body_that_is_not_json_or_of_the_wrong_shape_is_refused_like_any_other() {
    let app = spawn_app_with(SANDBOX).await;
    let number = order_with_sandbox_prepay(&app, "+97688112233").await;
    let url = app.url(&format!("/sandbox/orders/{number}/pay"));
    let not_json = app.client.post(&url).body("{").send().await.unwrap();
    assert_error(not_json, StatusCode::BAD_REQUEST, "INVALID_JSON").await;
    let wrong_shape = pay(&app, &number, json!({"deliver": "sometimes"})).await;
    assert_error(wrong_shape, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_BODY").await;
    let too_large = app.client.post(&url).body(vec![b' '; 200 * 1024]).send().await.unwrap();
    assert_eq!(too_large.headers()["content-type"], "application/json");
    assert_error(too_large, StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE").await;
    assert_eq!(app.order(&number).await.status.as_str(), "unpaid");
}

#[tokio::test]
async fn a_twice_delivered_sandbox_payment_makes_one_transition() {
    let app = spawn_app_with(SANDBOX).await;
    let number = order_with_sandbox_prepay(&app, "+97688112233").await;
    let body: Value = pay(&app, &number, json!({"deliver": "twice"})).await.json().await.unwrap();
    assert_eq!(body["callbackAnswers"].as_array().unwrap().len(), 2);
    app.wait_for_status(&number, "success").await;
    let outcomes: Vec<String> = app.events(&number).await.into_iter().map(|e| e.outcome).collect();
    assert_eq!(outcomes.iter().filter(|o| *o == "accepted").count(), 1, "{outcomes:?}");
    assert_eq!(app.attempts(&number).await.len(), 1);
}

#[tokio::test]
async fn a_sandbox_payment_never_called_back_is_found_by_reconciliation() {
    let app =
        spawn_app_with(&[("PAYMENT_SANDBOX", "true"), ("TOPUP_PROVIDER", "sandbox"), ("RECONCILE_GRACE_SECONDS", "1")])
            .await;
    let number = order_with_sandbox_prepay(&app, "+97688112233").await;
    let body: Value = pay(&app, &number, json!({"deliver": "never"})).await.json().await.unwrap();
    assert_eq!(body["callbackAnswers"], json!([]));
    assert_eq!(app.order(&number).await.status.as_str(), "unpaid");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await; // past the 1 s grace
    let report = run_once(&app.state).await.unwrap();
    assert_eq!(report.recovered, 1);
    app.wait_for_status(&number, "success").await;
}

#[tokio::test]
async fn a_wrong_amount_in_the_sandbox_is_rejected_then_reconciliation_finds_the_real_payment() {
    let mut settings = SANDBOX.to_vec();
    settings.push(("RECONCILE_GRACE_SECONDS", "1"));
    let app = spawn_app_with(&settings).await;
    let number = order_with_sandbox_prepay(&app, "+97688112233").await;
    pay(&app, &number, json!({"wrongAmount": true})).await;
    let order = app.order(&number).await;
    assert_eq!((order.status.as_str(), order.anomaly), ("unpaid", None));
    let events = app.events(&number).await;
    assert_eq!(events[0].outcome, "rejected");
    assert!(events[0].detail.as_deref().unwrap().contains("totalFee"));
    // WeChat (the sandbox) knows the payment was made with the right amount: reconciliation records it.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(wxtopup::jobs::reconcile::run_once(&app.state).await.unwrap().recovered, 1);
    app.wait_for_status(&number, "success").await;
}

#[tokio::test]
async fn a_refused_sandbox_top_up_is_refunded_through_the_refund_callback() {
    let app = spawn_app_with(SANDBOX).await;
    let number = order_with_sandbox_prepay(&app, "+97688112200").await;
    pay(&app, &number, json!({})).await;
    app.wait_for_status(&number, "refunded").await;
    // The simulated platform also reported the refund to the refund callback, which confirmed it.
    for _ in 0..100 {
        if app.events(&number).await.iter().any(|e| e.kind == "refund_callback" && e.outcome == "confirmed") {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("no confirmed refund callback: {:?}", app.events(&number).await);
}

#[tokio::test]
async fn a_prepay_made_before_a_restart_is_paid_after_it() {
    let app = spawn_app_with(SANDBOX).await;
    let number = order_with_sandbox_prepay(&app, "+97688112233").await;
    let app = app.restart_with(SANDBOX).await;
    let response = pay(&app, &number, json!({})).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["callbackAnswers"], json!([{"status": 200, "errcode": 0}]));
    let order = app.wait_for_status(&number, "success").await;
    assert_eq!(order.transaction_id.as_deref(), body["transactionId"].as_str());
}

#[tokio::test]
async fn a_payment_made_before_a_restart_is_refunded_after_it() {
    let app = spawn_app_with(SANDBOX).await;
    let number = order_with_sandbox_prepay(&app, "+97688112233").await;
    assert_eq!(pay(&app, &number, json!({})).await.status(), StatusCode::OK);
    app.wait_for_status(&number, "success").await;
    let app = app.restart_with(SANDBOX).await;
    let response = app
        .client
        .post(app.url(&format!("/admin/orders/{number}/refund")))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"reason": "refund after a restart"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!((body["status"].as_str(), body["lastError"].as_str()), (Some("success"), None), "{body}");
    assert_eq!(app.order(&number).await.status.as_str(), "refunded");
    assert_eq!(app.state.wechat.query_order(&number).await.unwrap().trade_state, TradeState::Refund);
}

#[tokio::test]
async fn two_sandbox_replicas_agree_on_a_payment() {
    let app = spawn_app_with(SANDBOX).await;
    let replica = app.spawn_replica_with(SANDBOX).await;
    let number = order_with_sandbox_prepay(&app, "+97688112233").await;
    // Paid through both at once: one payment, one transaction id, one transition.
    let (here, there) = tokio::join!(pay(&replica, &number, json!({})), pay(&app, &number, json!({})));
    assert_eq!((here.status(), there.status()), (StatusCode::OK, StatusCode::OK));
    let (here, there): (Value, Value) = (here.json().await.unwrap(), there.json().await.unwrap());
    assert_eq!(here["transactionId"], there["transactionId"]);
    let order = replica.wait_for_status(&number, "success").await;
    assert_eq!(order.transaction_id.as_deref(), here["transactionId"].as_str());
    let outcomes: Vec<String> = app.events(&number).await.into_iter().map(|e| e.outcome).collect();
    assert_eq!(outcomes.iter().filter(|o| *o == "accepted").count(), 1, "{outcomes:?}");
    let seen = app.state.wechat.query_order(&number).await.unwrap();
    assert_eq!((seen.trade_state, seen.transaction_id), (TradeState::Success, order.transaction_id));
}

#[tokio::test]
async fn racing_refunds_on_sandbox_replicas_never_refund_more_than_was_paid() {
    let app = spawn_app_with(SANDBOX).await;
    let replicas = [app.spawn_replica_with(SANDBOX).await, app.spawn_replica_with(SANDBOX).await];
    let number = order_with_sandbox_prepay(&app, "+97688112233").await;
    assert_eq!(pay(&app, &number, json!({"deliver": "never"})).await.status(), StatusCode::OK);
    let requests: Vec<RefundRequest> = (0..12)
        .map(|i| RefundRequest {
            order_number: number.clone(),
            out_refund_no: format!("R{number}{i:02}"),
            description: "x".into(),
            total: Money::from_fen(1200).unwrap(),
            refund: Money::from_fen(500).unwrap(),
            reason: "race".into(),
        })
        .collect();
    let sandboxes = [&app, &replicas[0], &replicas[1]];
    let answers =
        futures::future::join_all(requests.iter().enumerate().map(|(i, r)| sandboxes[i % 3].state.wechat.refund(r)))
            .await;
    // 5.00 twice fits in 12.00, a third time does not: every other answer is WeChat's refusal.
    assert_eq!(answers.iter().filter(|a| a.is_ok()).count(), 2, "{answers:?}");
    assert!(answers.iter().filter_map(|a| a.as_ref().err()).all(|e| e.to_string().contains("INVALID_REQUEST")));
    // A repeat of an accepted refund is accepted again and refunds nothing more.
    let accepted = requests.iter().zip(&answers).find(|(_, a)| a.is_ok()).unwrap().0;
    assert!(replicas[1].state.wechat.refund(accepted).await.is_ok());
    let mut found = 0;
    for request in &requests {
        if replicas[0].state.wechat.query_refund(&request.out_refund_no).await.unwrap() == RefundState::Success {
            found += 1;
        }
    }
    assert_eq!(found, 2);
}

#[tokio::test]
async fn the_sandbox_carrier_remembers_a_top_up_across_a_restart_and_is_not_sent_it_twice() {
    let app = spawn_app_with(SANDBOX).await;
    // `…02`: the submit arrives and is delivered, but its answer times out.
    let number = app.paid_order_in_db("+97688112202").await;
    assert_eq!(wxtopup::lifecycle::fulfil(&app.state, &number).await.unwrap(), FulfilOutcome::Retrying);
    let app = app.restart_with(SANDBOX).await;
    app.expire_lease(&number).await;
    let report = wxtopup::jobs::compensate::run_once(&app.state).await.unwrap();
    assert_eq!((report.scanned, report.succeeded), (1, 1));
    let actions: Vec<(String, String)> =
        app.attempts(&number).await.into_iter().map(|a| (a.action, a.outcome)).collect();
    let expected = [("submit", "unknown"), ("query", "delivered")];
    assert_eq!(actions, expected.map(|(a, o)| (a.to_string(), o.to_string())));
    assert_eq!(app.order(&number).await.status.as_str(), "success");
}

#[tokio::test]
async fn sandbox_payment_needs_a_prepay_and_an_order() {
    let app = spawn_app_with(SANDBOX).await;
    let number = app.place_order(OPENID).await;
    assert_error(pay(&app, &number, json!({})).await, StatusCode::CONFLICT, "NO_PREPAY").await;
    assert_error(pay(&app, "ORD0000000000000zzzz", json!({})).await, StatusCode::NOT_FOUND, "ORDER_NOT_FOUND").await;
    assert_error(
        pay(&app, &number, json!({"deliver": "sometimes"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_BODY",
    )
    .await;
}

#[tokio::test]
async fn the_sandbox_endpoint_does_not_exist_outside_sandbox_mode() {
    let app = spawn_app().await;
    let number = app.place_order(OPENID).await;
    assert_error(pay(&app, &number, json!({})).await, StatusCode::NOT_FOUND, "NOT_FOUND").await;
}

#[tokio::test]
async fn the_console_is_served_in_development_with_its_token() {
    let app = spawn_app().await;
    let page = app.client.get(app.url("/console")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(page.text().await.unwrap().contains("/console/app.js"));
    let script = app.client.get(app.url("/console/app.js")).send().await.unwrap();
    assert!(script.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
    let config: Value = app.client.get(app.url("/console/config.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(config["development"], true);
    assert_eq!(config["adminToken"], ADMIN_TOKEN);
}

#[tokio::test]
async fn in_production_the_console_never_hands_out_the_token_and_is_off_without_one() {
    let app = spawn_app_with(&[("APP_ENV", "production")]).await;
    let config: Value = app.client.get(app.url("/console/config.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(config["adminToken"], Value::Null);
    let off = spawn_app_with(&[("APP_ENV", "production"), ("ADMIN_TOKEN", "")]).await;
    let response = off.client.get(off.url("/console")).send().await.unwrap();
    assert_error(response, StatusCode::NOT_FOUND, "NOT_FOUND").await;
}
