use futures::future::join_all;
use reqwest::StatusCode;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{json, Value};
use std::time::Duration;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};
use wxtopup::entities::notification;

use crate::helpers::{
    carrier_answer, mount_query, mount_submit, mount_wechat, paid_notification, query_refund_answer, refund_accepted,
    spawn_app_with, TestApp, OPENID,
};

const SEND: &str = "/cgi-bin/message/subscribe/send";
const TEMPLATES: [(&str, &str); 3] = [
    ("SUBSCRIBE_TEMPLATE_DELIVERED", "tmpl-delivered"),
    ("SUBSCRIBE_TEMPLATE_REFUNDING", "tmpl-refunding"),
    ("SUBSCRIBE_TEMPLATE_REFUNDED", "tmpl-refunded"),
];

fn delivered() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(carrier_answer("success"))
}

async fn notifications(app: &TestApp, number: &str) -> Vec<notification::Model> {
    notification::Entity::find().filter(notification::Column::OrderNumber.eq(number)).all(&app.db).await.unwrap()
}

/// Waits until the order's `event` message is no longer being sent for the first time.
async fn settled(app: &TestApp, number: &str, event: &str) -> notification::Model {
    for _ in 0..200 {
        let found = notifications(app, number).await.into_iter().find(|n| n.event == event);
        if let Some(n) = found.filter(|n| n.status != "pending" || n.last_error.is_some()) {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no settled {event} notification for {number}: {:?}", notifications(app, number).await);
}

async fn mount_send(app: &TestApp, answer: ResponseTemplate, times: u64) {
    Mock::given(method("POST")).and(path(SEND)).respond_with(answer).expect(times).mount(&app.wechat).await;
}

async fn sent_bodies(app: &TestApp) -> Vec<Value> {
    let requests = app.wechat.received_requests().await.unwrap_or_default();
    requests.iter().filter(|r| r.url.path() == SEND).map(|r| serde_json::from_slice(&r.body).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_delivered_message_however_many_callbacks_and_replicas() {
    let app = spawn_app_with(&TEMPLATES).await;
    let replica = app.spawn_replica_with(&TEMPLATES).await;
    mount_submit(&app, delivered(), 1).await;
    mount_query(&app, delivered(), 0).await;
    // Either instance may be the one that delivers; between them, one message goes out.
    for instance in [&app, &replica] {
        Mock::given(method("POST"))
            .and(path(SEND))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"errcode": 0, "errmsg": "ok"})))
            .mount(&instance.wechat)
            .await;
    }
    let number = app.place_order(OPENID).await;
    let notice = paid_notification(&number);
    let deliveries = (0..20).map(|i| {
        if i % 2 == 0 {
            app.deliver_callback(&number, &notice)
        } else {
            replica.deliver_callback(&number, &notice)
        }
    });
    assert!(join_all(deliveries).await.iter().all(|r| r.status() == StatusCode::OK));
    app.wait_for_status(&number, "success").await;
    let message = settled(&app, &number, "delivered").await;
    assert_eq!(message.status, "sent");
    assert_eq!(notifications(&app, &number).await.len(), 1, "one message per order and event");

    let mut sent = sent_bodies(&app).await;
    sent.extend(sent_bodies(&replica).await);
    assert_eq!(sent.len(), 1, "{sent:?}");
    let body = &sent[0];
    assert_eq!(body["touser"], OPENID);
    assert_eq!(body["template_id"], "tmpl-delivered");
    assert_eq!(body["data"]["thing1"]["value"], "Unitel 5,000 MNT");
    assert_eq!(body["data"]["amount2"]["value"], "12.00元");
    assert_eq!(body["data"]["character_string3"]["value"], number.as_str());
    assert_eq!(body["miniprogram_state"], "formal");
}

#[tokio::test]
async fn a_buyer_who_did_not_subscribe_is_recorded_quietly_and_a_failing_send_never_touches_the_order() {
    let app = spawn_app_with(&TEMPLATES).await;
    mount_submit(&app, delivered(), 2).await;
    mount_query(&app, delivered(), 0).await;
    mount_send(&app, ResponseTemplate::new(200).set_body_json(json!({"errcode": 43101, "errmsg": "user refuse"})), 1)
        .await;
    let first = app.place_order(OPENID).await;
    app.deliver_callback(&first, &paid_notification(&first)).await;
    assert_eq!(settled(&app, &first, "delivered").await.status, "unsubscribed");
    assert_eq!(app.order(&first).await.status.as_str(), "success");

    // WeChat down: the message waits for the sweep; the order is delivered all the same.
    app.wechat.reset().await;
    Mock::given(method("POST"))
        .and(path("/_/pay/queryorder"))
        .respond_with(ResponseTemplate::new(200).set_body_json(crate::helpers::query_order_answer("SUCCESS", 1200)))
        .mount(&app.wechat)
        .await;
    mount_send(&app, ResponseTemplate::new(503), 1).await;
    let second = app.place_order(OPENID).await;
    app.deliver_callback(&second, &paid_notification(&second)).await;
    let waiting = settled(&app, &second, "delivered").await;
    assert_eq!((waiting.status.as_str(), waiting.attempts), ("pending", 1));
    assert_eq!(app.order(&second).await.status.as_str(), "success");

    app.wechat.reset().await;
    mount_send(&app, ResponseTemplate::new(200).set_body_json(json!({"errcode": 0})), 1).await;
    notification::Entity::update_many()
        .col_expr(notification::Column::NextAttemptAt, Expr::value(wxtopup::domain::now_utc()))
        .filter(notification::Column::Id.eq(waiting.id))
        .exec(&app.db)
        .await
        .unwrap();
    assert_eq!(app.state.notifier.retry_due().await.unwrap(), 1);
    let sent = notifications(&app, &second).await.remove(0);
    assert_eq!((sent.status.as_str(), sent.attempts), ("sent", 2));
    assert_eq!(app.state.notifier.retry_due().await.unwrap(), 0, "a sent message is not sent again");
}

#[tokio::test]
async fn a_refused_top_up_tells_the_buyer_the_money_is_coming_back_then_that_it_came() {
    let app = spawn_app_with(&TEMPLATES).await;
    mount_submit(&app, ResponseTemplate::new(200).set_body_json(carrier_answer("failed")), 1).await;
    mount_query(&app, delivered(), 0).await;
    mount_send(&app, ResponseTemplate::new(200).set_body_json(json!({"errcode": 0})), 2).await;
    let number = app.place_order(OPENID).await;
    let out_refund_no = format!("R{number}01");
    mount_wechat(&app, "refund", refund_accepted(), 1).await;
    // The refund's own first query finds it processing; the one the refund callback makes, done.
    Mock::given(method("POST"))
        .and(path("/_/pay/queryrefund"))
        .respond_with(ResponseTemplate::new(200).set_body_json(query_refund_answer(&out_refund_no, "PROCESSING")))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&app.wechat)
        .await;
    mount_wechat(&app, "queryrefund", query_refund_answer(&out_refund_no, "SUCCESS"), 1).await;
    app.deliver_callback(&number, &paid_notification(&number)).await;
    assert_eq!(settled(&app, &number, "refunding").await.status, "sent");
    for _ in 0..200 {
        let requests = app.wechat.received_requests().await.unwrap_or_default();
        if requests.iter().any(|r| r.url.path() == "/_/pay/queryrefund") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(app.order(&number).await.status.as_str(), "refunding");

    let notice = json!({"returnCode": "SUCCESS", "outTradeNo": number, "outRefundNo": out_refund_no});
    let answer = app
        .client
        .post(app.url(&format!("/payment/refund-callback/{number}")))
        .header("X-WX-SOURCE", "wx_callback")
        .json(&notice)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(app.order(&number).await.status.as_str(), "refunded");
    assert_eq!(settled(&app, &number, "refunded").await.status, "sent");
    let templates: Vec<String> = sent_bodies(&app).await.iter().map(|b| b["template_id"].to_string()).collect();
    assert_eq!(templates, ["\"tmpl-refunding\"", "\"tmpl-refunded\""]);
}

#[tokio::test]
async fn without_templates_nothing_is_recorded_and_the_sandbox_records_without_sending() {
    let quiet = crate::helpers::spawn_app().await;
    mount_submit(&quiet, delivered(), 1).await;
    mount_query(&quiet, delivered(), 0).await;
    let number = quiet.place_order(OPENID).await;
    quiet.deliver_callback(&number, &paid_notification(&number)).await;
    quiet.wait_for_status(&number, "success").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(notifications(&quiet, &number).await.is_empty());
    assert!(sent_bodies(&quiet).await.is_empty());

    let sandbox = spawn_app_with(&[("PAYMENT_SANDBOX", "true"), ("TOPUP_PROVIDER", "sandbox")]).await;
    let number = sandbox.place_order(OPENID).await;
    let prepay = sandbox.post_as("/payment/create", OPENID, &json!({"orderNumber": number})).await;
    assert_eq!(prepay.status(), StatusCode::OK);
    let paid = sandbox.client.post(sandbox.url(&format!("/sandbox/orders/{number}/pay"))).json(&json!({})).send().await;
    assert_eq!(paid.unwrap().status(), StatusCode::OK);
    sandbox.wait_for_status(&number, "success").await;
    let recorded = settled(&sandbox, &number, "delivered").await;
    assert_eq!((recorded.status.as_str(), recorded.template_id.as_str()), ("recorded", "sandbox-delivered"));
    assert!(sent_bodies(&sandbox).await.is_empty(), "the sandbox sends nothing");
}

#[tokio::test]
async fn the_operator_sees_the_buyer_notifications_in_the_order_history() {
    let app = spawn_app_with(&TEMPLATES).await;
    mount_submit(&app, delivered(), 1).await;
    mount_query(&app, delivered(), 0).await;
    mount_send(&app, ResponseTemplate::new(200).set_body_json(json!({"errcode": 0})), 1).await;
    let number = app.place_order(OPENID).await;
    app.deliver_callback(&number, &paid_notification(&number)).await;
    settled(&app, &number, "delivered").await;
    let history: Value = app.admin_get(&format!("/admin/orders/{number}")).await.json().await.unwrap();
    let told = &history["notifications"][0];
    assert_eq!((told["event"].as_str(), told["status"].as_str()), (Some("delivered"), Some("sent")));
    assert_eq!(told["data"]["character_string3"]["value"], number.as_str());
    assert!(told["sentAt"].is_string());
}

#[tokio::test]
async fn the_buyer_sees_what_they_were_told_and_only_that() {
    let app = spawn_app_with(&TEMPLATES).await;
    mount_submit(&app, delivered(), 1).await;
    mount_query(&app, delivered(), 0).await;
    mount_send(&app, ResponseTemplate::new(200).set_body_json(json!({"errcode": 0})), 1).await;
    let number = app.place_order(OPENID).await;
    let before: Value = app.get_as(&format!("/orders/{number}"), OPENID).await.json().await.unwrap();
    assert_eq!(before["notifications"], json!([]));
    app.deliver_callback(&number, &paid_notification(&number)).await;
    settled(&app, &number, "delivered").await;
    let order: Value = app.get_as(&format!("/orders/{number}"), OPENID).await.json().await.unwrap();
    assert_eq!(order["orderNumber"], number.as_str());
    assert_eq!(order["status"], "success");
    let told = order["notifications"].as_array().unwrap();
    assert_eq!(told.len(), 1, "{order}");
    assert_eq!((told[0]["event"].as_str(), told[0]["status"].as_str()), (Some("delivered"), Some("sent")));
    assert!(told[0]["sentAt"].is_string());
    // The buyer's view carries no template ids, message data or WeChat's error texts.
    let keys: Vec<&str> = told[0].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["createdAt", "event", "sentAt", "status"]);
    // Another buyer learns nothing about it.
    let other = app.get_as(&format!("/orders/{number}"), "another-openid").await;
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_order_an_operator_marks_delivered_tells_the_buyer_it_arrived() {
    let app = spawn_app_with(&TEMPLATES).await;
    mount_send(&app, ResponseTemplate::new(200).set_body_json(json!({"errcode": 0})), 1).await;
    let number = app.paid_order_in_db("+97688112233").await;
    app.set(&number, vec![(wxtopup::entities::order::Column::Status, Expr::value("unresolved"))]).await;
    let marked = app
        .admin_post_json(&format!("/admin/orders/{number}/mark-delivered"), &json!({"note": "carrier portal shows it"}))
        .await;
    assert_eq!(marked.status(), StatusCode::OK);
    assert_eq!(settled(&app, &number, "delivered").await.status, "sent");
    assert_eq!(sent_bodies(&app).await[0]["template_id"], "tmpl-delivered");
}
