use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    assert_error, mount_unified_order, spawn_app, unified_order_success, TestApp, OPENID, OTHER_OPENID,
};

async fn create_order(app: &TestApp, openid: &str, key: &str, phone: &str) -> reqwest::Response {
    app.as_user(app.client.post(app.url("/orders")), openid)
        .header("Idempotency-Key", key)
        .json(&json!({"productId": app.product_id, "phoneNumber": phone}))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_orders_with_one_key_make_one_order_and_the_same_answer() {
    let app = spawn_app().await;
    let answers = join_all((0..20).map(|_| create_order(&app, OPENID, "tap-1", "+97688112233"))).await;
    let mut bodies = Vec::new();
    let mut replayed = 0;
    for answer in answers {
        assert_eq!(answer.status(), StatusCode::CREATED);
        replayed += usize::from(answer.headers().get("idempotent-replayed").is_some());
        bodies.push(answer.json::<Value>().await.unwrap());
    }
    assert_eq!(app.order_count().await, 1, "one order, however many taps");
    assert!(bodies.iter().all(|b| b == &bodies[0]), "every tap gets the first answer");
    assert_eq!(replayed, 19);
}

#[tokio::test]
async fn a_key_reused_with_another_body_is_refused_and_keys_are_per_buyer() {
    let app = spawn_app().await;
    assert_eq!(create_order(&app, OPENID, "tap-2", "+97688112233").await.status(), StatusCode::CREATED);
    let reused = create_order(&app, OPENID, "tap-2", "+97688119999").await;
    assert_error(reused, StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED").await;
    let other = create_order(&app, OTHER_OPENID, "tap-2", "+97688119999").await;
    assert_eq!(other.status(), StatusCode::CREATED, "another buyer's key is another key");
    assert!(other.headers().get("idempotent-replayed").is_none());
    assert_eq!(app.order_count().await, 2);
    let fresh = create_order(&app, OPENID, "tap-3", "+97688112233").await;
    assert_eq!(fresh.status(), StatusCode::CREATED, "a new key is a new order");
    assert_eq!(app.order_count().await, 3);
}

#[tokio::test]
async fn a_refusal_is_replayed_but_a_failure_to_try_again_is_not_kept() {
    let app = spawn_app().await;
    let bad = create_order(&app, OPENID, "tap-4", "not-a-number").await;
    assert_error(bad, StatusCode::BAD_REQUEST, "INVALID_PHONE_NUMBER").await;
    let again = create_order(&app, OPENID, "tap-4", "not-a-number").await;
    assert_eq!(again.headers().get("idempotent-replayed").unwrap(), "true");
    assert_error(again, StatusCode::BAD_REQUEST, "INVALID_PHONE_NUMBER").await;

    // WeChat down: 502, not kept; the retry with the same key gets a prepay.
    let number = app.place_order(OPENID).await;
    let pay = |key: &'static str| {
        app.as_user(app.client.post(app.url("/payment/create")), OPENID)
            .header("Idempotency-Key", key)
            .json(&json!({"orderNumber": number}))
            .send()
    };
    mount_unified_order(&app, wiremock::ResponseTemplate::new(500), 1).await;
    assert_eq!(pay("pay-1").await.unwrap().status(), StatusCode::BAD_GATEWAY);
    app.wechat.reset().await;
    mount_unified_order(&app, wiremock::ResponseTemplate::new(200).set_body_json(unified_order_success()), 1).await;
    let paid = pay("pay-1").await.unwrap();
    assert_eq!(paid.status(), StatusCode::OK);
    let first: Value = paid.json().await.unwrap();
    let replay = pay("pay-1").await.unwrap();
    assert_eq!(replay.headers().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(replay.json::<Value>().await.unwrap(), first, "the same prepay, without asking WeChat again");
}

#[tokio::test]
async fn a_malformed_key_is_refused_and_an_untrusted_caller_is_refused_by_the_endpoint() {
    let app = spawn_app().await;
    let long = "k".repeat(256);
    let refused = create_order(&app, OPENID, &long, "+97688112233").await;
    assert_error(refused, StatusCode::BAD_REQUEST, "INVALID_REQUEST").await;
    let anonymous = app
        .client
        .post(app.url("/orders"))
        .header("Idempotency-Key", "tap-5")
        .json(&json!({"productId": app.product_id, "phoneNumber": "+97688112233"}))
        .send()
        .await
        .unwrap();
    assert_error(anonymous, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    assert_eq!(app.order_count().await, 0);
}

#[tokio::test]
async fn an_operator_refund_sent_twice_with_one_key_refunds_once() {
    let app = spawn_app().await;
    let number = app.paid_order_in_db("+97688112233").await;
    crate::helpers::mount_wechat(&app, "refund", crate::helpers::refund_accepted(), 1).await;
    let refund = || {
        app.client
            .post(app.url(&format!("/admin/orders/{number}/refund")))
            .bearer_auth(crate::helpers::ADMIN_TOKEN)
            .header("Idempotency-Key", "refund-1")
            .json(&json!({"reason": "customer asked"}))
            .send()
    };
    let first = refund().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let first: Value = first.json().await.unwrap();
    let second = refund().await.unwrap();
    assert_eq!(second.headers().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(second.json::<Value>().await.unwrap()["outRefundNo"], first["outRefundNo"]);
    let order = app.order(&number).await;
    assert_eq!(wxtopup::domain::Money::from_stored(order.refund_requested).to_string(), "12.00");
}
