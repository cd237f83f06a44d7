use reqwest::StatusCode;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};
use wxtopup::jobs::reconcile::run_once;

use crate::helpers::{
    assert_books_balance, assert_error, books_for, carrier_answer, mount_submit, mount_wechat, paid_notification,
    query_refund_answer, refund_accepted, spawn_app, spawn_app_with, TestApp, ADMIN_TOKEN, OPENID,
};

/// An order paid by callback and delivered.
async fn delivered_order(app: &TestApp) -> String {
    mount_submit(app, ResponseTemplate::new(200).set_body_json(carrier_answer("success")), 1).await;
    let number = app.place_order(OPENID).await;
    app.deliver_callback(&number, &paid_notification(&number)).await;
    app.wait_for_status(&number, "success").await;
    number
}

async fn refund(app: &TestApp, number: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/admin/orders/{number}/refund")))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn refund_requests(requests: &[wiremock::Request]) -> Vec<Value> {
    requests
        .iter()
        .filter(|r| r.url.path() == "/_/pay/refund")
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

#[tokio::test]
async fn an_operator_refunds_a_delivered_order_in_full() {
    let app = spawn_app().await;
    let number = delivered_order(&app).await;
    let out_refund_no = format!("R{number}01");
    mount_wechat(&app, "refund", refund_accepted(), 1).await;
    mount_wechat(&app, "queryrefund", query_refund_answer(&out_refund_no, "SUCCESS"), 1).await;

    let response = refund(&app, &number, json!({"reason": "customer changed their mind"})).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["outRefundNo"], out_refund_no.as_str());
    assert_eq!(body["amount"], "12.00");
    assert_eq!(body["status"], "success");
    assert_eq!(app.order(&number).await.status.as_str(), "refunded");

    let sent = refund_requests(&app.wechat.received_requests().await.unwrap());
    assert_eq!(sent[0]["out_trade_no"], number.as_str());
    assert_eq!(sent[0]["total_fee"], 1200);
    assert_eq!(sent[0]["refund_fee"], 1200);
    assert_eq!(sent[0]["sub_mch_id"], crate::helpers::MCH_ID);
    assert!(sent[0].get("mch_id").is_none() && sent[0].get("sign").is_none());
    let books = assert_books_balance(&app, &number).await;
    assert_eq!((books["paidTotal"].as_str(), books["refundedTotal"].as_str()), (Some("12.00"), Some("12.00")));
}

#[tokio::test]
async fn partial_refunds_never_add_up_to_more_than_was_paid() {
    let app = spawn_app().await;
    let number = delivered_order(&app).await;
    Mock::given(method("POST"))
        .and(path("/_/pay/refund"))
        .respond_with(ResponseTemplate::new(200).set_body_json(refund_accepted()))
        .expect(2)
        .mount(&app.wechat)
        .await;
    // WeChat answers SUCCESS for whichever refund is asked about.
    Mock::given(method("POST"))
        .and(path("/_/pay/queryrefund"))
        .respond_with(|request: &wiremock::Request| {
            let asked: Value = serde_json::from_slice(&request.body).unwrap();
            let no = asked["out_refund_no"].as_str().unwrap().to_string();
            ResponseTemplate::new(200).set_body_json(query_refund_answer(&no, "SUCCESS"))
        })
        .mount(&app.wechat)
        .await;

    let first: Value =
        refund(&app, &number, json!({"reason": "partial", "amount": "5.00"})).await.json().await.unwrap();
    assert_eq!((first["amount"].as_str(), first["status"].as_str()), (Some("5.00"), Some("success")));
    // Delivered, with a refund: the buyer sees the top-up and the part that came back.
    let seen: Value = app.get_as(&format!("/orders/{number}"), OPENID).await.json().await.unwrap();
    assert_eq!((seen["status"].as_str(), seen["refundAmount"].as_str()), (Some("success"), Some("5.00")));
    assert_books_balance(&app, &number).await;
    let too_much = refund(&app, &number, json!({"reason": "partial", "amount": "7.01"})).await;
    assert_error(too_much, StatusCode::BAD_REQUEST, "INVALID_REFUND_AMOUNT").await;
    let sub_fen = refund(&app, &number, json!({"reason": "partial", "amount": "0.001"})).await;
    assert_error(sub_fen, StatusCode::BAD_REQUEST, "INVALID_REFUND_AMOUNT").await;
    let rest: Value = refund(&app, &number, json!({"reason": "the rest"})).await.json().await.unwrap();
    assert_eq!(
        (rest["amount"].as_str(), rest["outRefundNo"].as_str()),
        (Some("7.00"), Some(format!("R{number}02").as_str()))
    );
    let nothing_left = refund(&app, &number, json!({"reason": "again"})).await;
    assert_error(nothing_left, StatusCode::CONFLICT, "ORDER_NOT_REFUNDABLE").await;
    let order = app.order(&number).await;
    assert_eq!(order.status.as_str(), "refunded");
    assert_books_balance(&app, &number).await;
}

#[tokio::test]
async fn refunding_an_order_with_nothing_left_is_a_conflict_whatever_the_amount() {
    let app = spawn_app().await;
    let number = delivered_order(&app).await;
    let out_refund_no = format!("R{number}01");
    mount_wechat(&app, "refund", refund_accepted(), 1).await;
    mount_wechat(&app, "queryrefund", query_refund_answer(&out_refund_no, "SUCCESS"), 1).await;
    let whole: Value = refund(&app, &number, json!({"reason": "all of it"})).await.json().await.unwrap();
    assert_eq!(whole["status"], "success");

    // The order's refunds add up to its payment: no amount could be right, so this is its state.
    for body in [json!({"reason": "again"}), json!({"reason": "again", "amount": "1.00"})] {
        let again = refund(&app, &number, body).await;
        assert_error(again, StatusCode::CONFLICT, "ORDER_NOT_REFUNDABLE").await;
    }
    let order = app.order(&number).await;
    assert_eq!((order.status.as_str(), order.refund_seq), ("refunded", 1));
    assert_eq!(order.refund_requested.round_dp(2), rust_decimal::Decimal::from(12));
    assert_books_balance(&app, &number).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refund_requests_cannot_overdraw_the_payment() {
    let app = spawn_app().await;
    let number = delivered_order(&app).await;
    Mock::given(method("POST"))
        .and(path("/_/pay/refund"))
        .respond_with(ResponseTemplate::new(200).set_body_json(refund_accepted()))
        .mount(&app.wechat)
        .await;
    Mock::given(method("POST")).and(path("/_/pay/queryrefund")).respond_with(ResponseTemplate::new(200).set_body_json(json!({"errcode": 0, "respdata": {"return_code": "SUCCESS", "result_code": "SUCCESS", "refund_status_0": "PROCESSING"}}))).mount(&app.wechat).await;
    let attempts =
        futures::future::join_all((0..10).map(|_| refund(&app, &number, json!({"reason": "race", "amount": "5.00"}))))
            .await;
    let accepted = attempts.iter().filter(|r| r.status() == StatusCode::OK).count();
    assert!(accepted <= 2, "{accepted} refunds of 5.00 accepted for a 12.00 payment");
    let order = app.order(&number).await;
    let requested: rust_decimal::Decimal = order.refund_requested;
    assert!(requested <= rust_decimal::Decimal::from(12), "{requested}");
    assert_eq!(rust_decimal::Decimal::from(5 * accepted as i64), requested.round_dp(2));
}

#[tokio::test]
async fn a_refund_retry_reuses_the_same_out_refund_no() {
    let app = spawn_app().await;
    let number = delivered_order(&app).await;
    Mock::given(method("POST"))
        .and(path("/_/pay/refund"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .expect(1)
        .mount(&app.wechat)
        .await;
    mount_wechat(&app, "refund", refund_accepted(), 1).await;
    mount_wechat(&app, "queryrefund", query_refund_answer(&format!("R{number}01"), "SUCCESS"), 1).await;

    let first: Value = refund(&app, &number, json!({"reason": "retry me"})).await.json().await.unwrap();
    assert_eq!(first["status"], "pending");
    assert!(first["lastError"].as_str().unwrap().contains("503"));
    // Backed off: the next pass leaves it alone until its time comes.
    assert_eq!(run_once(&app.state).await.unwrap().refunds_completed, 0);
    make_refunds_due(&app).await;
    let report = run_once(&app.state).await.unwrap();
    assert_eq!(report.refunds_completed, 1);
    let sent = refund_requests(&app.wechat.received_requests().await.unwrap());
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0]["out_refund_no"], sent[1]["out_refund_no"]);
    assert_eq!(app.order(&number).await.status.as_str(), "refunded");
}

fn refusal(code: &str) -> Value {
    json!({"errcode": 0, "errmsg": "ok", "respdata": {"return_code": "SUCCESS", "result_code": "FAIL",
        "err_code": code, "err_code_des": "refused"}})
}

/// Moves every refund's backoff into the past.
async fn make_refunds_due(app: &TestApp) {
    use sea_orm::{sea_query::Expr, EntityTrait};
    use wxtopup::entities::refund;
    let past = wxtopup::domain::now_utc() - chrono::Duration::seconds(1);
    refund::Entity::update_many()
        .col_expr(refund::Column::NextAttemptAt, Expr::value(past))
        .exec(&app.db)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_refund_refused_for_lack_of_funds_waits_and_alerts_instead_of_failing() {
    let app = spawn_app_with(&[("REFUND_MAX_ATTEMPTS", "2")]).await;
    let number = delivered_order(&app).await;
    mount_wechat(&app, "refund", refusal("NOTENOUGH"), 4).await;
    let first: Value = refund(&app, &number, json!({"reason": "no money"})).await.json().await.unwrap();
    assert_eq!(first["status"], "pending");
    for _ in 0..3 {
        make_refunds_due(&app).await;
        run_once(&app.state).await.unwrap();
    }
    let history: Value = app.admin_get(&format!("/admin/orders/{number}")).await.json().await.unwrap();
    let row = &history["refunds"][0];
    assert_eq!(row["status"], "pending", "a retryable refusal never burns the budget: {row}");
    assert_eq!(row["attempts"], 4);
    assert!(row["lastError"].as_str().unwrap().contains("NOTENOUGH"));
    crate::helpers::wait_for_alert(&app, "merchant_funds_low", &number).await;
    // Still owed to the payer: in flight, not a mismatch.
    assert_books_balance(&app, &number).await;
}

#[tokio::test]
async fn a_refund_refused_for_good_ends_failed_and_an_operator_retry_sends_the_same_number() {
    let app = spawn_app_with(&[("REFUND_MAX_ATTEMPTS", "2")]).await;
    let number = delivered_order(&app).await;
    Mock::given(method("POST"))
        .and(path("/_/pay/refund"))
        .respond_with(ResponseTemplate::new(200).set_body_json(refusal("PARAM_ERROR")))
        .up_to_n_times(2)
        .expect(2)
        .mount(&app.wechat)
        .await;
    refund(&app, &number, json!({"reason": "refused"})).await;
    make_refunds_due(&app).await;
    run_once(&app.state).await.unwrap();
    let history: Value = app.admin_get(&format!("/admin/orders/{number}")).await.json().await.unwrap();
    assert_eq!(history["refunds"][0]["status"], "failed");
    let books = books_for(&app, &number).await;
    assert_eq!(books["balanced"], false);
    assert!(books["mismatches"][0]["reason"].as_str().unwrap().contains("refund failed"));
    crate::helpers::wait_for_alert(&app, "refund_failed", &number).await;

    // The operator fixes the cause and retries: WeChat is asked first, then the same number is sent.
    let out_refund_no = format!("R{number}01");
    Mock::given(method("POST"))
        .and(path("/_/pay/queryrefund"))
        .respond_with(ResponseTemplate::new(200).set_body_json(refusal("REFUNDNOTEXIST")))
        .up_to_n_times(1)
        .expect(1)
        .mount(&app.wechat)
        .await;
    mount_wechat(&app, "refund", refund_accepted(), 1).await;
    mount_wechat(&app, "queryrefund", query_refund_answer(&out_refund_no, "SUCCESS"), 1).await;
    let retried = app.admin_post(&format!("/admin/refunds/{out_refund_no}/retry")).await;
    assert_eq!(retried.status(), StatusCode::OK);
    let retried: Value = retried.json().await.unwrap();
    assert_eq!(retried["status"], "success");
    let sent = refund_requests(&app.wechat.received_requests().await.unwrap());
    assert!(sent.iter().all(|r| r["out_refund_no"] == out_refund_no.as_str()), "{sent:?}");
    assert_eq!(app.order(&number).await.status.as_str(), "refunded");
    assert_books_balance(&app, &number).await;
    // A refund that is not failed cannot be retried.
    let again = app.admin_post(&format!("/admin/refunds/{out_refund_no}/retry")).await;
    assert_error(again, StatusCode::CONFLICT, "REFUND_NOT_RETRYABLE").await;
}

#[tokio::test]
async fn a_failed_top_up_is_refunded_automatically() {
    let app = spawn_app().await;
    mount_submit(&app, ResponseTemplate::new(400).set_body_json(json!({"message": "number barred"})), 1).await;
    let number = app.place_order(OPENID).await;
    mount_wechat(&app, "refund", refund_accepted(), 1).await;
    mount_wechat(&app, "queryrefund", query_refund_answer(&format!("R{number}01"), "SUCCESS"), 1).await;
    app.deliver_callback(&number, &paid_notification(&number)).await;
    app.wait_for_status(&number, "refunded").await;
    let history: Value = app.admin_get(&format!("/admin/orders/{number}")).await.json().await.unwrap();
    assert_eq!(history["refunds"][0]["source"], "auto_failed");
    assert_books_balance(&app, &number).await;
    // The sweep finds nothing more to refund.
    assert_eq!(run_once(&app.state).await.unwrap().refunds_opened, 0);
}

#[tokio::test]
async fn a_failed_top_up_left_unrefunded_is_a_mismatch_until_the_job_refunds_it() {
    let app = spawn_app_with(&[("AUTO_REFUND_ON_FAILURE", "false")]).await;
    mount_submit(&app, ResponseTemplate::new(400), 1).await;
    let number = app.place_order(OPENID).await;
    app.deliver_callback(&number, &paid_notification(&number)).await;
    app.wait_for_status(&number, "failed").await;
    let books = books_for(&app, &number).await;
    assert_eq!(books["balanced"], false);
    assert!(books["mismatches"][0]["reason"].as_str().unwrap().contains("not been refunded"));
    assert_eq!(books["inFlightTotal"], "0.00");
    // Nothing was delivered: an operator refunds all of it, never a part.
    let partial = refund(&app, &number, json!({"reason": "part", "amount": "2.00"})).await;
    assert_error(partial, StatusCode::CONFLICT, "PARTIAL_REFUND_UNDELIVERED").await;
    assert_eq!(app.order(&number).await.status.as_str(), "failed");
}

#[tokio::test]
async fn the_refund_notification_is_stored_and_confirmed_by_query() {
    let app = spawn_app().await;
    let number = delivered_order(&app).await;
    let out_refund_no = format!("R{number}01");
    mount_wechat(&app, "refund", refund_accepted(), 1).await;
    Mock::given(method("POST"))
        .and(path("/_/pay/queryrefund"))
        .respond_with(ResponseTemplate::new(200).set_body_json(query_refund_answer(&out_refund_no, "PROCESSING")))
        .up_to_n_times(1)
        .mount(&app.wechat)
        .await;
    // Later answers use the list shape also seen through cloud hosting.
    let list = json!({"errcode": 0, "errmsg": "ok", "respdata": {"return_code": "SUCCESS", "result_code": "SUCCESS",
        "refund_list": [{"out_refund_no": out_refund_no, "refund_status": "SUCCESS"}]}});
    mount_wechat(&app, "queryrefund", list, 1).await;

    let first: Value = refund(&app, &number, json!({"reason": "r"})).await.json().await.unwrap();
    assert_eq!(first["status"], "submitted");
    let notification = json!({"returnCode": "SUCCESS", "outTradeNo": number, "outRefundNo": out_refund_no,
        "refundStatus": "SUCCESS", "refundFee": 1200});
    let response = app
        .client
        .post(app.url(&format!("/payment/refund-callback/{number}")))
        .header("X-WX-SOURCE", "wx_callback")
        .json(&notification)
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errcode"], 0);
    assert_eq!(app.order(&number).await.status.as_str(), "refunded");
    let events = app.events(&number).await;
    let stored = events.iter().find(|e| e.kind == "refund_callback").unwrap();
    assert_eq!(stored.outcome, "confirmed");
    assert!(stored.body.contains("refundStatus"));
}

#[tokio::test]
async fn a_forged_refund_notification_changes_nothing_by_itself() {
    let app = spawn_app().await;
    let number = delivered_order(&app).await;
    mount_wechat(&app, "refund", refund_accepted(), 1).await;
    mount_wechat(&app, "queryrefund", query_refund_answer(&format!("R{number}01"), "PROCESSING"), 2).await;
    refund(&app, &number, json!({"reason": "r"})).await;
    let response = app
        .client
        .post(app.url(&format!("/payment/refund-callback/{number}")))
        .header("X-WX-SOURCE", "x")
        .json(&json!({"refundStatus": "SUCCESS"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(app.order(&number).await.status.as_str(), "refunding", "only queryrefund may settle a refund");
}

#[tokio::test]
async fn unpaid_and_in_delivery_orders_cannot_be_refunded() {
    let app = spawn_app_with(&[("TOPUP_TIMEOUT_MS", "3000"), ("FULFILMENT_LEASE_SECONDS", "60")]).await;
    mount_wechat(&app, "refund", refund_accepted(), 0).await;
    let unpaid = app.place_order(OPENID).await;
    assert_error(refund(&app, &unpaid, json!({"reason": "r"})).await, StatusCode::CONFLICT, "ORDER_NOT_REFUNDABLE")
        .await;
    let busy = app.paid_order_in_db("+97688112233").await;
    app.set(&busy, vec![(wxtopup::entities::order::Column::Status, sea_orm::sea_query::Expr::value("recharging"))])
        .await;
    assert_error(refund(&app, &busy, json!({"reason": "r"})).await, StatusCode::CONFLICT, "ORDER_NOT_REFUNDABLE").await;
    assert_error(
        refund(&app, "ORD0000000000000zzzz", json!({"reason": "r"})).await,
        StatusCode::NOT_FOUND,
        "ORDER_NOT_FOUND",
    )
    .await;
    assert_error(refund(&app, &busy, json!({"reason": " "})).await, StatusCode::BAD_REQUEST, "INVALID_REQUEST").await;
}

#[tokio::test]
async fn a_refund_amount_is_a_decimal_string_of_yuan_with_at_most_two_decimals() {
    let app = spawn_app().await;
    let number = delivered_order(&app).await;
    mount_wechat(&app, "refund", refund_accepted(), 0).await;
    for amount in ["1.500", "1e1", "+1", "1_0", " 1", ""] {
        let response = refund(&app, &number, json!({"reason": "r", "amount": amount})).await;
        assert_error(response, StatusCode::BAD_REQUEST, "INVALID_REFUND_AMOUNT").await;
    }
    let number_not_string = refund(&app, &number, json!({"reason": "r", "amount": 5})).await;
    assert_error(number_not_string, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_BODY").await;
    let order = app.order(&number).await;
    assert_eq!((order.status.as_str(), order.refund_seq), ("success", 0));
}

#[tokio::test]
async fn a_closed_order_that_was_never_paid_is_not_refunded() {
    let app = spawn_app().await;
    mount_wechat(&app, "refund", refund_accepted(), 0).await;
    let number = app.place_order(OPENID).await;
    app.set(&number, vec![(wxtopup::entities::order::Column::Status, sea_orm::sea_query::Expr::value("closed"))]).await;
    let response = refund(&app, &number, json!({"reason": "r"})).await;
    assert_error(response, StatusCode::CONFLICT, "ORDER_NOT_REFUNDABLE").await;
    let order = app.order(&number).await;
    assert_eq!((order.status.as_str(), order.refund_seq), ("closed", 0));
    assert!(order.refund_requested.is_zero());
}

#[tokio::test]
async fn the_reconciliation_report_refuses_a_bad_date() {
    let app = spawn_app().await;
    let response = app.admin_get("/admin/reconciliation?date=2026-13-01").await;
    assert_error(response, StatusCode::BAD_REQUEST, "INVALID_REQUEST").await;
    let today: Value = app.admin_get("/admin/reconciliation").await.json().await.unwrap();
    assert_eq!(today["paidCount"], 0);
    assert_eq!(today["balanced"], true);
}

#[tokio::test]
async fn a_refund_wechat_accepted_is_not_overwritten_by_a_concurrent_refusal() {
    let app = spawn_app_with(&[("REFUND_MAX_ATTEMPTS", "1")]).await;
    let number = delivered_order(&app).await;
    // The first request to arrive is refused at once; the second is accepted, slowly.
    Mock::given(method("POST"))
        .and(path("/_/pay/refund"))
        .respond_with(ResponseTemplate::new(200).set_body_json(refusal("PARAM_ERROR")))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&app.wechat)
        .await;
    Mock::given(method("POST"))
        .and(path("/_/pay/refund"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(refund_accepted())
                .set_delay(std::time::Duration::from_millis(300)),
        )
        .with_priority(2)
        .mount(&app.wechat)
        .await;
    mount_wechat(&app, "queryrefund", query_refund_answer(&format!("R{number}01"), "SUCCESS"), 1).await;
    let opened = wxtopup::services::refunds::open_refund(
        &app.db,
        &number,
        None,
        "race",
        wxtopup::services::refunds::RefundSource::Operator,
    )
    .await
    .unwrap();
    let policy = wxtopup::lifecycle::refund_policy(&app.state);
    let (a, b) = futures::future::join(
        wxtopup::services::refunds::drive_refund(&app.db, &app.state.wechat, &opened, &policy),
        wxtopup::services::refunds::drive_refund(&app.db, &app.state.wechat, &opened, &policy),
    )
    .await;
    a.unwrap();
    b.unwrap();
    let rows = wxtopup::services::refunds::refunds_of(&app.db, &number).await.unwrap();
    assert_eq!(rows[0].status.as_str(), "success", "WeChat accepted it: {:?}", rows[0]);
    assert_eq!(app.order(&number).await.status.as_str(), "refunded");
}

#[tokio::test]
async fn a_failed_refund_is_asked_about_again_and_settles_if_wechat_did_it_after_all() {
    let app = spawn_app_with(&[("REFUND_MAX_ATTEMPTS", "1")]).await;
    let number = delivered_order(&app).await;
    mount_wechat(&app, "refund", refusal("PARAM_ERROR"), 1).await;
    let first: Value = refund(&app, &number, json!({"reason": "refused"})).await.json().await.unwrap();
    assert_eq!(first["status"], "failed");
    // Not asked again before its backoff…
    mount_wechat(&app, "queryrefund", query_refund_answer(&format!("R{number}01"), "SUCCESS"), 1).await;
    run_once(&app.state).await.unwrap();
    assert_eq!(app.order(&number).await.status.as_str(), "refunding");
    // …then asked, and WeChat's word wins. It is never sent again without an operator.
    make_refunds_due(&app).await;
    let report = run_once(&app.state).await.unwrap();
    assert_eq!(report.refunds_completed, 1);
    assert_eq!(app.order(&number).await.status.as_str(), "refunded");
    assert_eq!(refund_requests(&app.wechat.received_requests().await.unwrap()).len(), 1);
}

#[tokio::test]
async fn a_failed_refund_wechat_proves_it_never_paid_is_replaced_once_for_the_same_amount() {
    use wiremock::matchers::body_string_contains;
    let app = spawn_app_with(&[("REFUND_MAX_ATTEMPTS", "1")]).await;
    let number = delivered_order(&app).await;
    let (first, second) = (format!("R{number}01"), format!("R{number}02"));
    Mock::given(method("POST"))
        .and(path("/_/pay/refund"))
        .and(body_string_contains(first.as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(refusal("PARAM_ERROR")))
        .expect(1)
        .mount(&app.wechat)
        .await;
    let failed: Value = refund(&app, &number, json!({"reason": "refused"})).await.json().await.unwrap();
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed_refund_orders(&app).await, [number.as_str()], "the operator finds orders whose refund failed");

    // CHANGE: the money left but could not reach the payer. Not proof it was never paid: nothing moves.
    let asked = |status: &str| {
        Mock::given(method("POST"))
            .and(path("/_/pay/queryrefund"))
            .and(body_string_contains(first.as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_json(query_refund_answer(&first, status)))
            .up_to_n_times(1)
            .expect(1)
    };
    asked("CHANGE").mount(&app.wechat).await;
    let refused = app.admin_post(&format!("/admin/refunds/{first}/replace")).await;
    let body = assert_error(refused, StatusCode::CONFLICT, "REFUND_NOT_REPLACEABLE").await;
    assert!(body["message"].as_str().unwrap().contains("CHANGE"), "{body}");
    let history: Value = app.admin_get(&format!("/admin/orders/{number}")).await.json().await.unwrap();
    assert_eq!(history["refunds"].as_array().unwrap().len(), 1);
    assert_eq!(history["refunds"][0]["status"], "failed");

    // REFUNDCLOSE: WeChat closed it and paid nothing; the same number cannot go again. A new one does.
    asked("REFUNDCLOSE").mount(&app.wechat).await;
    mount_wechat(&app, "refund", refund_accepted(), 1).await;
    Mock::given(method("POST"))
        .and(path("/_/pay/queryrefund"))
        .and(body_string_contains(second.as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(query_refund_answer(&second, "SUCCESS")))
        .mount(&app.wechat)
        .await;
    let replaced = app.admin_post(&format!("/admin/refunds/{first}/replace")).await;
    assert_eq!(replaced.status(), StatusCode::OK);
    let replacement: Value = replaced.json().await.unwrap();
    assert_eq!(replacement["outRefundNo"], second.as_str());
    assert_eq!((replacement["amount"].as_str(), replacement["status"].as_str()), (Some("12.00"), Some("success")));
    let history: Value = app.admin_get(&format!("/admin/orders/{number}")).await.json().await.unwrap();
    assert_eq!(history["refunds"][0]["status"], "replaced");
    assert!(history["refunds"][0]["lastError"].as_str().unwrap().contains(second.as_str()));
    let order = app.order(&number).await;
    assert_eq!(order.status.as_str(), "refunded");
    assert_eq!(wxtopup::domain::Money::from_stored(order.refund_requested).to_string(), "12.00", "counted once");
    assert_books_balance(&app, &number).await;
    assert!(failed_refund_orders(&app).await.is_empty(), "no failed refund is left");
    // Replaced once: the old number is not failed any more, and the new one succeeded.
    let again = app.admin_post(&format!("/admin/refunds/{first}/replace")).await;
    assert_error(again, StatusCode::CONFLICT, "REFUND_NOT_RETRYABLE").await;
    let sent = refund_requests(&app.wechat.received_requests().await.unwrap());
    let numbers: Vec<&str> = sent.iter().map(|r| r["out_refund_no"].as_str().unwrap()).collect();
    assert_eq!(numbers, [first.as_str(), second.as_str()]);
}

async fn failed_refund_orders(app: &TestApp) -> Vec<String> {
    let page: Value = app.admin_get("/admin/orders?refundFailed=true").await.json().await.unwrap();
    page["items"].as_array().unwrap().iter().map(|o| o["orderNumber"].as_str().unwrap().to_string()).collect()
}

/// WeChat's queryrefund, answering for each refund what `states` says (`PROCESSING` until told).
async fn mount_refund_states(
    app: &TestApp,
) -> std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, String>>> {
    let states = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::<String, String>::new()));
    let answers = states.clone();
    Mock::given(method("POST"))
        .and(path("/_/pay/queryrefund"))
        .respond_with(move |request: &wiremock::Request| {
            let asked: Value = serde_json::from_slice(&request.body).unwrap();
            let no = asked["out_refund_no"].as_str().unwrap().to_string();
            let state = answers.lock().unwrap().get(&no).cloned().unwrap_or_else(|| "PROCESSING".into());
            ResponseTemplate::new(200).set_body_json(query_refund_answer(&no, &state))
        })
        .mount(&app.wechat)
        .await;
    states
}

#[tokio::test]
async fn a_settled_partial_refund_leaves_the_order_refunding_while_a_newer_one_is_pending() {
    let app = spawn_app().await;
    let number = delivered_order(&app).await;
    mount_wechat(&app, "refund", refund_accepted(), 2).await;
    let states = mount_refund_states(&app).await;
    let (first_no, second_no) = (format!("R{number}01"), format!("R{number}02"));

    let first: Value = refund(&app, &number, json!({"reason": "part", "amount": "5.00"})).await.json().await.unwrap();
    assert_eq!(first["status"], "submitted");
    let second: Value = refund(&app, &number, json!({"reason": "more", "amount": "3.00"})).await.json().await.unwrap();
    assert_eq!(
        (second["outRefundNo"].as_str(), second["status"].as_str()),
        (Some(second_no.as_str()), Some("submitted"))
    );

    // The first one settles; the second is still being processed.
    states.lock().unwrap().insert(first_no.clone(), "SUCCESS".into());
    assert_eq!(run_once(&app.state).await.unwrap().refunds_completed, 1);
    let rows = wxtopup::services::refunds::refunds_of(&app.db, &number).await.unwrap();
    assert_eq!((rows[0].status.as_str(), rows[1].status.as_str()), ("success", "submitted"));
    assert_eq!(app.order(&number).await.status.as_str(), "refunding");
    assert_books_balance(&app, &number).await;

    states.lock().unwrap().insert(second_no, "SUCCESS".into());
    assert_eq!(run_once(&app.state).await.unwrap().refunds_completed, 1);
    // 8.00 of 12.00 back and the top-up delivered: delivered, with a refund.
    let order = app.order(&number).await;
    assert_eq!(order.status.as_str(), "success");
    assert_eq!(order.refund_requested.round_dp(2), rust_decimal::Decimal::from(8));
    let books = assert_books_balance(&app, &number).await;
    assert_eq!((books["deliveredTotal"].as_str(), books["refundedTotal"].as_str()), (Some("4.00"), Some("8.00")));
}

#[tokio::test]
async fn a_refund_opened_while_an_earlier_one_settles_keeps_the_order_refunding() {
    use sea_orm::{sea_query::Expr, ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
    use sea_orm::{Database, TransactionTrait};
    use wxtopup::entities::{order, refund as refund_row};

    let app = spawn_app().await;
    let number = delivered_order(&app).await;
    mount_wechat(&app, "refund", refund_accepted(), 2).await;
    let states = mount_refund_states(&app).await;
    let (first_no, second_no) = (format!("R{number}01"), format!("R{number}02"));
    let first: Value = refund(&app, &number, json!({"reason": "part", "amount": "5.00"})).await.json().await.unwrap();
    assert_eq!(first["status"], "submitted");
    states.lock().unwrap().insert(first_no, "SUCCESS".into());

    // A second partial refund is being opened (as the refund service does: the counter and the row in
    // one transaction) on another connection, holding the order's row while the first one settles.
    // On MariaDB and PostgreSQL the settle reads the order and its refunds before this commits and
    // writes after: only the refund counter in its guard keeps it from marking the order refunded. On
    // SQLite (one writer) the settle's first write waits for this commit, so it reads the new refund.
    let other = Database::connect(&app.database_url).await.unwrap();
    let opening = other.begin().await.unwrap();
    order::Entity::update_many()
        .col_expr(order::Column::RefundSeq, Expr::value(2))
        .col_expr(order::Column::RefundRequested, Expr::value(rust_decimal::Decimal::from(8)))
        .filter(order::Column::OrderNumber.eq(&number))
        .exec(&opening)
        .await
        .unwrap();
    let now = wxtopup::domain::now_utc();
    refund_row::ActiveModel {
        order_number: Set(number.clone()),
        out_refund_no: Set(second_no.clone()),
        amount: Set(rust_decimal::Decimal::from(3)),
        reason: Set("more".into()),
        source: Set("operator".into()),
        status: Set(wxtopup::domain::RefundStatus::Pending),
        attempts: Set(0),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(&opening)
    .await
    .unwrap();
    let asked_before = wechat_requests(&app, "/_/pay/queryrefund").await;
    let state = app.state.clone();
    let pass = tokio::spawn(async move { run_once(&state).await });
    wait_for_wechat_requests(&app, "/_/pay/queryrefund", asked_before + 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    opening.commit().await.unwrap();
    pass.await.unwrap().unwrap();
    assert_eq!(app.order(&number).await.status.as_str(), "refunding", "a refund is still pending");

    // The second one is sent and settles; only then does the order leave refunding (delivered, with
    // 8.00 of its 12.00 back).
    states.lock().unwrap().insert(second_no, "SUCCESS".into());
    run_once(&app.state).await.unwrap();
    let rows = wxtopup::services::refunds::refunds_of(&app.db, &number).await.unwrap();
    assert!(rows.iter().all(|r| r.status.as_str() == "success"), "{rows:?}");
    assert_eq!(app.order(&number).await.status.as_str(), "success");
    assert_books_balance(&app, &number).await;
}

async fn wechat_requests(app: &TestApp, path: &str) -> usize {
    app.wechat.received_requests().await.unwrap().iter().filter(|r| r.url.path() == path).count()
}

/// Waits until WeChat has received `count` requests on `path` (the last answer may still be on its way).
async fn wait_for_wechat_requests(app: &TestApp, path: &str, count: usize) {
    for _ in 0..400 {
        if wechat_requests(app, path).await >= count {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("WeChat never received {count} requests on {path}");
}

/// A client that gives up after 50 ms, long before a slow WeChat answers.
fn impatient() -> reqwest::Client {
    reqwest::Client::builder().timeout(std::time::Duration::from_millis(50)).build().unwrap()
}

/// WeChat accepts refunds, 300 ms late (within the service's 500 ms timeout).
async fn mount_slow_refund(app: &TestApp) {
    Mock::given(method("POST"))
        .and(path("/_/pay/refund"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(refund_accepted())
                .set_delay(std::time::Duration::from_millis(300)),
        )
        .expect(1)
        .mount(&app.wechat)
        .await;
}

#[tokio::test]
async fn a_refund_whose_operator_hangs_up_is_still_sent_and_settles() {
    let app = spawn_app().await;
    let number = delivered_order(&app).await;
    let out_refund_no = format!("R{number}01");
    mount_slow_refund(&app).await;
    mount_wechat(&app, "queryrefund", query_refund_answer(&out_refund_no, "SUCCESS"), 1).await;

    let sent = impatient()
        .post(app.url(&format!("/admin/orders/{number}/refund")))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"reason": "customer changed their mind"}))
        .send()
        .await;
    assert!(sent.is_err(), "the caller gave up before the answer");
    // No reconciliation pass: the request's own work finishes it.
    app.wait_for_status(&number, "refunded").await;
    let rows = wxtopup::services::refunds::refunds_of(&app.db, &number).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].out_refund_no.as_str(), rows[0].status.as_str()), (out_refund_no.as_str(), "success"));
    assert_eq!(rows[0].refund_id.as_deref(), Some("50000000000000000000000000"));
    assert_books_balance(&app, &number).await;
}

#[tokio::test]
async fn a_refund_retry_whose_operator_hangs_up_is_still_sent_and_settles() {
    let app = spawn_app_with(&[("REFUND_MAX_ATTEMPTS", "1")]).await;
    let number = delivered_order(&app).await;
    let out_refund_no = format!("R{number}01");
    Mock::given(method("POST"))
        .and(path("/_/pay/refund"))
        .respond_with(ResponseTemplate::new(200).set_body_json(refusal("PARAM_ERROR")))
        .up_to_n_times(1)
        .expect(1)
        .with_priority(1)
        .mount(&app.wechat)
        .await;
    let first: Value = refund(&app, &number, json!({"reason": "refused"})).await.json().await.unwrap();
    assert_eq!(first["status"], "failed");

    // The retry asks WeChat first (it has no such refund), then sends it again, slowly.
    Mock::given(method("POST"))
        .and(path("/_/pay/queryrefund"))
        .respond_with(ResponseTemplate::new(200).set_body_json(refusal("REFUNDNOTEXIST")))
        .up_to_n_times(1)
        .expect(1)
        .with_priority(1)
        .mount(&app.wechat)
        .await;
    mount_slow_refund(&app).await;
    mount_wechat(&app, "queryrefund", query_refund_answer(&out_refund_no, "SUCCESS"), 1).await;
    let sent = impatient()
        .post(app.url(&format!("/admin/refunds/{out_refund_no}/retry")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await;
    assert!(sent.is_err(), "the caller gave up before the answer");
    app.wait_for_status(&number, "refunded").await;
    let rows = wxtopup::services::refunds::refunds_of(&app.db, &number).await.unwrap();
    assert_eq!((rows.len(), rows[0].status.as_str()), (1, "success"));
    let sent = refund_requests(&app.wechat.received_requests().await.unwrap());
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|r| r["out_refund_no"] == out_refund_no.as_str()), "{sent:?}");
    assert_books_balance(&app, &number).await;
}

#[tokio::test]
async fn an_order_left_refunding_after_its_refund_succeeded_is_settled_by_the_job() {
    use sea_orm::{sea_query::Expr, ColumnTrait, EntityTrait, QueryFilter};
    use wxtopup::entities::refund as refund_row;
    let app = spawn_app().await;
    let number = delivered_order(&app).await;
    mount_wechat(&app, "refund", refund_accepted(), 1).await;
    // WeChat is still processing when asked: the refund stays submitted, the order refunding.
    let out_refund_no = format!("R{number}01");
    mount_wechat(&app, "queryrefund", query_refund_answer(&out_refund_no, "PROCESSING"), 1).await;
    refund(&app, &number, json!({"reason": "whole"})).await;
    assert_eq!(app.order(&number).await.status.as_str(), "refunding");
    // The refund's success is written, then the process stops before the order's: nothing drives a
    // refund that is already a success again.
    refund_row::Entity::update_many()
        .col_expr(refund_row::Column::Status, Expr::value(wxtopup::domain::RefundStatus::Success))
        .filter(refund_row::Column::OutRefundNo.eq(&out_refund_no))
        .exec(&app.db)
        .await
        .unwrap();
    let report = run_once(&app.state).await.unwrap();
    assert_eq!(report.orders_settled, 1);
    assert_eq!(app.order(&number).await.status.as_str(), "refunded");
    assert_books_balance(&app, &number).await;
    assert_eq!(run_once(&app.state).await.unwrap().orders_settled, 0, "settled once");
}

#[tokio::test]
async fn retryable_answers_never_use_up_the_refusal_budget() {
    let app = spawn_app_with(&[("REFUND_MAX_ATTEMPTS", "2")]).await;
    let number = delivered_order(&app).await;
    // Three retryable answers, then one permanent refusal: one refusal of a budget of two.
    Mock::given(method("POST"))
        .and(path("/_/pay/refund"))
        .respond_with(ResponseTemplate::new(200).set_body_json(refusal("SYSTEMERROR")))
        .up_to_n_times(3)
        .with_priority(1)
        .mount(&app.wechat)
        .await;
    mount_wechat(&app, "refund", refusal("PARAM_ERROR"), 1).await;
    refund(&app, &number, json!({"reason": "busy"})).await;
    for _ in 0..3 {
        make_refunds_due(&app).await;
        run_once(&app.state).await.unwrap();
    }
    let history: Value = app.admin_get(&format!("/admin/orders/{number}")).await.json().await.unwrap();
    let row = &history["refunds"][0];
    assert_eq!((row["status"].as_str(), row["attempts"].as_i64()), (Some("pending"), Some(4)), "{row}");
    assert!(row["lastError"].as_str().unwrap().contains("PARAM_ERROR"), "{row}");
}
