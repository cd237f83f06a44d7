use futures::future::join;
use reqwest::StatusCode;
use sea_orm::sea_query::Expr;
use serde_json::{json, Value};
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, ResponseTemplate};
use wxtopup::domain::now_utc;
use wxtopup::entities::order;
use wxtopup::jobs::reconcile::run_once;

use crate::helpers::{
    assert_books_balance, assert_error, carrier_answer, mount_query, mount_slow_query, mount_submit, mount_wechat,
    order_with_prepay, paid_notification, query_order_answer, query_refund_answer, refund_accepted, spawn_app,
    spawn_app_with, OPENID,
};

fn delivered() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(carrier_answer("success"))
}

#[tokio::test]
async fn a_forged_callback_is_refused_after_asking_wechat() {
    let app = spawn_app().await;
    mount_wechat(&app, "queryorder", query_order_answer("NOTPAY", 1200), 1).await;
    mount_submit(&app, delivered(), 0).await;
    let number = app.place_order(OPENID).await;
    let response = app.deliver_callback(&number, &paid_notification(&number)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errcode"], 0, "redelivery would not change the answer");
    let order = app.order(&number).await;
    assert_eq!(order.status.as_str(), "unpaid");
    assert_eq!(order.anomaly, None);
    let events = app.events(&number).await;
    assert_eq!(events[0].outcome, "rejected");
    assert!(events[0].detail.as_deref().unwrap().contains("NOTPAY"), "{:?}", events[0].detail);
}

#[tokio::test]
async fn a_callback_whose_amount_wechat_does_not_confirm_is_refused() {
    let app = spawn_app().await;
    mount_wechat(&app, "queryorder", query_order_answer("SUCCESS", 1), 1).await;
    let number = app.place_order(OPENID).await;
    app.deliver_callback(&number, &paid_notification(&number)).await;
    assert_eq!(app.order(&number).await.status.as_str(), "unpaid");
    assert!(app.order(&number).await.anomaly.is_some());
}

#[tokio::test]
async fn a_failed_confirmation_asks_the_platform_to_redeliver_and_changes_nothing() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path("/_/pay/queryorder"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .expect(1)
        .mount(&app.wechat)
        .await;
    mount_submit(&app, delivered(), 1).await;
    let number = app.place_order(OPENID).await;
    let response = app.deliver_callback(&number, &paid_notification(&number)).await;
    let body: Value = response.json().await.unwrap();
    assert_ne!(body["errcode"], 0);
    assert_eq!(body["code"], "WECHAT_ERROR");
    let order = app.order(&number).await;
    assert_eq!((order.status.as_str(), order.anomaly.as_deref()), ("unpaid", None));
    assert_eq!(app.events(&number).await[0].outcome, "unconfirmed");
    // The redelivery, with WeChat answering again, goes through.
    let response = app.deliver_callback(&number, &paid_notification(&number)).await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errcode"], 0);
    app.wait_for_status(&number, "success").await;
}

#[tokio::test]
async fn with_verification_off_the_callback_alone_decides() {
    let app = spawn_app_with(&[("CALLBACK_VERIFY", "false")]).await;
    mount_wechat(&app, "queryorder", query_order_answer("NOTPAY", 1200), 0).await;
    let number = app.place_order(OPENID).await;
    app.deliver_callback(&number, &paid_notification(&number)).await;
    assert_ne!(app.order(&number).await.status.as_str(), "unpaid");
}

#[tokio::test]
async fn a_lost_callback_is_recovered_by_the_reconciliation_job() {
    let app = spawn_app().await;
    mount_submit(&app, delivered(), 1).await;
    let number = order_with_prepay(&app, 2).await;
    let report = run_once(&app.state).await.unwrap();
    assert_eq!((report.queried, report.recovered), (1, 1));
    let order = app.wait_for_status(&number, "success").await;
    assert_eq!(order.transaction_id.as_deref(), Some("4200004561202203217657282768"));
    assert_eq!(order.paid_at.unwrap().to_string(), "2022-03-21 05:20:07");
    assert_books_balance(&app, &number).await;
}

#[tokio::test]
async fn a_recent_prepay_is_not_queried_yet() {
    let app = spawn_app().await;
    mount_wechat(&app, "queryorder", query_order_answer("SUCCESS", 1200), 0).await;
    let number = order_with_prepay(&app, 0).await;
    assert_eq!(run_once(&app.state).await.unwrap().queried, 0);
    assert_eq!(app.order(&number).await.status.as_str(), "unpaid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_callback_racing_the_job_makes_one_transition_and_one_top_up() {
    let app = spawn_app().await;
    mount_submit(&app, delivered(), 1).await;
    mount_query(&app, delivered(), 0).await;
    let number = order_with_prepay(&app, 2).await;
    let notification = paid_notification(&number);
    let (report, response) = join(run_once(&app.state), app.deliver_callback(&number, &notification)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let accepted_by_callback = app.events(&number).await.iter().filter(|e| e.outcome == "accepted").count() as u64;
    assert_eq!(report.unwrap().recovered + accepted_by_callback, 1);
    app.wait_for_status(&number, "success").await;
    assert_eq!(app.attempts(&number).await.len(), 1);
}

#[tokio::test]
async fn an_order_is_not_closed_locally_before_it_expires_whatever_wechat_reports() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path("/_/pay/queryorder"))
        .respond_with(ResponseTemplate::new(200).set_body_json(query_order_answer("USERPAYING", 1200)))
        .up_to_n_times(1)
        .mount(&app.wechat)
        .await;
    mount_wechat(&app, "queryorder", query_order_answer("CLOSED", 1200), 2).await;
    mount_wechat(&app, "closeorder", json!({}), 0).await;
    let number = order_with_prepay(&app, 2).await;
    run_once(&app.state).await.unwrap();
    assert_eq!(app.order(&number).await.status.as_str(), "unpaid");
    // CLOSED, REVOKED or PAYERROR before expiry: the order waits; it closes at expiry, after closeorder.
    for _ in 0..2 {
        let report = run_once(&app.state).await.unwrap();
        assert_eq!(report.closed, 0);
    }
    assert_eq!(app.order(&number).await.status.as_str(), "unpaid");
}

#[tokio::test]
async fn an_expired_order_is_queried_then_closed_at_wechat_then_closed() {
    let app = spawn_app().await;
    mount_wechat(&app, "queryorder", query_order_answer("NOTPAY", 1200), 1).await;
    mount_wechat(
        &app,
        "closeorder",
        json!({"errcode": 0, "errmsg": "ok", "respdata": {"return_code": "SUCCESS", "result_code": "SUCCESS"}}),
        1,
    )
    .await;
    let number = order_with_prepay(&app, 31).await;
    let report = run_once(&app.state).await.unwrap();
    assert_eq!(report.closed, 1);
    let order = app.order(&number).await;
    assert_eq!(order.status.as_str(), "closed");
    assert!(order.closed_at.is_some());
    let response = app.post_as("/payment/create", OPENID, &json!({"orderNumber": number})).await;
    assert_error(response, StatusCode::CONFLICT, "ORDER_NOT_PAYABLE").await;
}

#[tokio::test]
async fn closeorder_waits_five_minutes_after_the_prepay() {
    let app = spawn_app().await;
    mount_wechat(&app, "queryorder", query_order_answer("NOTPAY", 1200), 2).await;
    mount_wechat(
        &app,
        "closeorder",
        json!({"errcode": 0, "errmsg": "ok", "respdata": {"return_code": "SUCCESS", "result_code": "SUCCESS"}}),
        1,
    )
    .await;
    let number = order_with_prepay(&app, 40).await;
    // The user tapped "pay" two minutes ago, long after ordering.
    let recent = now_utc() - chrono::Duration::minutes(2);
    app.set(&number, vec![(order::Column::PrepayAt, Expr::value(recent))]).await;
    assert_eq!(run_once(&app.state).await.unwrap().closed, 0);
    assert_eq!(app.order(&number).await.status.as_str(), "unpaid");
    let six_minutes = now_utc() - chrono::Duration::minutes(6);
    app.set(&number, vec![(order::Column::PrepayAt, Expr::value(six_minutes))]).await;
    assert_eq!(run_once(&app.state).await.unwrap().closed, 1);
}

#[tokio::test]
async fn an_expired_order_never_sent_to_wechat_closes_without_calls() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .with_priority(1)
        .expect(0)
        .mount(&app.wechat)
        .await;
    let number = app.place_order(OPENID).await;
    let long_ago = now_utc() - chrono::Duration::minutes(31);
    app.set(&number, vec![(order::Column::CreatedAt, Expr::value(long_ago))]).await;
    assert_eq!(run_once(&app.state).await.unwrap().closed, 1);
    assert_eq!(app.order(&number).await.status.as_str(), "closed");
}

#[tokio::test]
async fn an_expired_order_cannot_get_a_new_prepay() {
    let app = spawn_app().await;
    mount_wechat(&app, "unifiedOrder", json!({}), 0).await;
    let number = app.place_order(OPENID).await;
    let long_ago = now_utc() - chrono::Duration::minutes(31);
    app.set(&number, vec![(order::Column::CreatedAt, Expr::value(long_ago))]).await;
    let response = app.post_as("/payment/create", OPENID, &json!({"orderNumber": number})).await;
    assert_error(response, StatusCode::CONFLICT, "ORDER_NOT_PAYABLE").await;
}

#[tokio::test]
async fn a_payment_arriving_for_a_closed_order_is_refunded_automatically() {
    let app = spawn_app().await;
    mount_submit(&app, delivered(), 0).await;
    let number = order_with_prepay(&app, 40).await;
    app.set(&number, vec![(order::Column::Status, Expr::value("closed"))]).await;
    let out_refund_no = format!("R{number}01");
    Mock::given(method("POST"))
        .and(path("/_/pay/refund"))
        .and(wiremock::matchers::body_partial_json(json!({"out_trade_no": number, "out_refund_no": out_refund_no,
            "total_fee": 1200, "refund_fee": 1200, "callback_type": 2,
            "container": {"service": "pay", "path": format!("/payment/refund-callback/{number}")}})))
        .respond_with(ResponseTemplate::new(200).set_body_json(refund_accepted()))
        .expect(1)
        .mount(&app.wechat)
        .await;
    mount_wechat(&app, "queryrefund", query_refund_answer(&out_refund_no, "SUCCESS"), 1).await;

    let response = app.deliver_callback(&number, &paid_notification(&number)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let order = app.wait_for_status(&number, "refunded").await;
    assert_eq!(order.transaction_id.as_deref(), Some("4200004561202203217657282768"));
    assert_eq!(app.events(&number).await[0].outcome, "late_payment");
    let books = assert_books_balance(&app, &number).await;
    assert_eq!(books["refundedTotal"], "12.00");
    assert_eq!(books["deliveredTotal"], "0.00");
}

#[tokio::test]
async fn refresh_asks_wechat_at_most_once_per_interval() {
    let app = spawn_app().await;
    mount_wechat(&app, "queryorder", query_order_answer("SUCCESS", 1200), 1).await;
    mount_submit(&app, delivered(), 1).await;
    let number = order_with_prepay(&app, 0).await;
    let order: Value = app.get_as(&format!("/orders/{number}?refresh=true"), OPENID).await.json().await.unwrap();
    assert_ne!(order["status"], "unpaid", "{order}");
    let again = app.get_as(&format!("/orders/{number}?refresh=true"), OPENID).await;
    assert_eq!(again.status(), StatusCode::OK);
    app.wait_for_status(&number, "success").await;
}

#[tokio::test]
async fn refresh_is_rate_limited_while_unpaid_and_ignores_other_users() {
    let app = spawn_app().await;
    mount_wechat(&app, "queryorder", query_order_answer("NOTPAY", 1200), 1).await;
    let number = order_with_prepay(&app, 0).await;
    for _ in 0..3 {
        let order: Value = app.get_as(&format!("/orders/{number}?refresh=true"), OPENID).await.json().await.unwrap();
        assert_eq!(order["status"], "unpaid");
    }
    let response = app.get_as(&format!("/orders/{number}?refresh=true"), crate::helpers::OTHER_OPENID).await;
    assert_error(response, StatusCode::NOT_FOUND, "ORDER_NOT_FOUND").await;
}

#[tokio::test]
async fn success_with_another_amount_or_refund_on_an_unpaid_order_is_an_anomaly_that_leaves_the_batch() {
    let app = spawn_app_with(&[("COMPENSATION_BATCH_SIZE", "1")]).await;
    mount_submit(&app, delivered(), 1).await;
    let odd = order_with_prepay(&app, 3).await;
    let refunded = order_with_prepay(&app, 2).await;
    let lost = order_with_prepay(&app, 1).await;
    let answer = |number: &str, state: &str, fee: i64| {
        Mock::given(method("POST"))
            .and(path("/_/pay/queryorder"))
            .and(body_partial_json(json!({"out_trade_no": number})))
            .respond_with(ResponseTemplate::new(200).set_body_json(query_order_answer(state, fee)))
    };
    answer(&odd, "SUCCESS", 1100).mount(&app.wechat).await;
    answer(&refunded, "REFUND", 1200).mount(&app.wechat).await;
    answer(&lost, "SUCCESS", 1200).mount(&app.wechat).await;
    // One order per pass: the two anomalies do not keep the lost payment from being found.
    let mut anomalies = 0;
    for _ in 0..3 {
        anomalies += run_once(&app.state).await.unwrap().anomalies;
    }
    assert_eq!(anomalies, 2);
    app.wait_for_status(&lost, "success").await;
    for number in [&odd, &refunded] {
        let order = app.order(number).await;
        assert_eq!(order.status.as_str(), "unpaid", "never marked paid");
        assert!(order.anomaly.is_some());
        crate::helpers::wait_for_alert(&app, "anomaly", number).await;
    }
    assert!(app.order(&odd).await.anomaly.unwrap().contains("11.00 yuan"));
    // What reaches people reads as sentences: the order's anomaly and the alerts, never Rust's Debug.
    let alerts: serde_json::Value = app.admin_get("/admin/alerts").await.json().await.unwrap();
    let mut texts: Vec<String> =
        alerts["items"].as_array().unwrap().iter().map(|a| a["message"].as_str().unwrap().to_string()).collect();
    for number in [&odd, &refunded] {
        texts.push(app.order(number).await.anomaly.unwrap());
    }
    assert!(texts.len() >= 4, "{texts:?}");
    for text in &texts {
        for debug in ["Some(", "None", "Other(", "{ ", "\\\""] {
            assert!(!text.contains(debug), "{debug:?} in {text:?}");
        }
    }
}

#[tokio::test]
async fn a_paid_order_is_refunded_only_whole_and_only_while_nothing_was_submitted() {
    let app = spawn_app().await;
    let number = app.paid_order_in_db("+97688112233").await;
    let path = format!("/admin/orders/{number}/refund");
    let partial = app.admin_post_json(&path, &json!({"reason": "part", "amount": "1.00"})).await;
    assert_error(partial, StatusCode::CONFLICT, "PARTIAL_REFUND_UNDELIVERED").await;
    // A submit may have reached the carrier (an earlier attempt, then an operator retry): no refund.
    app.set(&number, vec![(order::Column::Submitted, Expr::value(true))]).await;
    let whole = app.admin_post_json(&path, &json!({"reason": "cancel"})).await;
    assert_error(whole, StatusCode::CONFLICT, "ORDER_NOT_REFUNDABLE").await;
    assert_eq!(app.order(&number).await.refund_seq, 0);
    app.set(&number, vec![(order::Column::Submitted, Expr::value(false))]).await;
    mount_wechat(&app, "refund", refund_accepted(), 1).await;
    let whole = app.admin_post_json(&path, &json!({"reason": "cancel"})).await;
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(app.order(&number).await.status.as_str(), "refunding");
}

#[tokio::test]
async fn a_callback_whose_caller_hangs_up_is_still_recorded_and_fulfilled() {
    let app = spawn_app().await;
    mount_slow_query(&app, "SUCCESS").await;
    mount_submit(&app, delivered(), 1).await;
    let number = app.place_order(OPENID).await;
    let impatient = reqwest::Client::builder().timeout(std::time::Duration::from_millis(50)).build().unwrap();
    let sent = impatient
        .post(app.url(&format!("/payment/callback/{number}")))
        .header("X-WX-SOURCE", "wx_callback")
        .json(&paid_notification(&number))
        .send()
        .await;
    assert!(sent.is_err(), "the caller gave up before the answer");
    let order = app.wait_for_status(&number, "success").await;
    assert_eq!(order.transaction_id.as_deref(), Some("4200004561202203217657282768"));
    assert_eq!(app.events(&number).await[0].outcome, "accepted");
}

#[tokio::test]
async fn a_prepay_stored_after_reconciliation_looked_keeps_the_order_open() {
    let app = spawn_app().await;
    crate::helpers::mount_unified_order(
        &app,
        ResponseTemplate::new(200).set_body_json(crate::helpers::unified_order_success()),
        1,
    )
    .await;
    let number = app.place_order(OPENID).await;
    // Reconciliation read the order before its prepay existed…
    let seen = app.order(&number).await;
    // …then the buyer asked to pay, and got parameters WeChat will honour.
    let created = app.post_as("/payment/create", OPENID, &json!({"orderNumber": number})).await;
    assert_eq!(created.status(), StatusCode::OK);
    // Closing on the stale snapshot must lose.
    assert!(!wxtopup::jobs::reconcile::close(&app.state, &seen).await.unwrap());
    let order = app.order(&number).await;
    assert_eq!(order.status.as_str(), "unpaid");
    assert!(order.prepay_at.is_some());
}

#[tokio::test]
async fn a_callback_that_cannot_be_processed_is_acknowledged_not_redelivered_forever() {
    let app = spawn_app().await;
    let number = app.place_order(OPENID).await;
    // A closed order whose whole amount is already counted as refunded: the late payment's refund
    // cannot be opened, and no redelivery will change that.
    app.set(
        &number,
        vec![
            (order::Column::Status, Expr::value("closed")),
            (order::Column::RefundRequested, Expr::value(rust_decimal::Decimal::from(12))),
        ],
    )
    .await;
    let response = app.deliver_callback(&number, &paid_notification(&number)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errcode"], 0);
    assert_eq!(app.events(&number).await[0].outcome, "unprocessable");
    assert_eq!(app.order(&number).await.status.as_str(), "closed");
    crate::helpers::wait_for_alert(&app, "anomaly", &number).await;
}

/// Waits until WeChat has received a request on `endpoint` (the caller's answer may still be delayed).
async fn wait_for_wechat_call(app: &crate::helpers::TestApp, endpoint: &str) {
    let path = format!("/_/pay/{endpoint}");
    for _ in 0..200 {
        if app.wechat.received_requests().await.unwrap().iter().any(|r| r.url.path() == path) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("WeChat never received {endpoint}");
}

#[tokio::test]
async fn a_payment_reconciliation_finds_for_an_order_closed_meanwhile_is_recorded_and_refunded() {
    let app = spawn_app().await;
    mount_submit(&app, delivered(), 0).await;
    mount_slow_query(&app, "SUCCESS").await;
    mount_wechat(&app, "closeorder", json!({}), 0).await;
    let number = order_with_prepay(&app, 40).await;
    let out_refund_no = format!("R{number}01");
    Mock::given(method("POST"))
        .and(path("/_/pay/refund"))
        .and(body_partial_json(json!({"out_trade_no": number, "out_refund_no": out_refund_no,
            "total_fee": 1200, "refund_fee": 1200})))
        .respond_with(ResponseTemplate::new(200).set_body_json(refund_accepted()))
        .expect(1..=2)
        .mount(&app.wechat)
        .await;
    // The refund is driven by the reaction to the payment and may also be by the same pass's refund
    // sweep: the same `out_refund_no` either way, which WeChat refunds once.
    Mock::given(method("POST"))
        .and(path("/_/pay/queryrefund"))
        .respond_with(ResponseTemplate::new(200).set_body_json(query_refund_answer(&out_refund_no, "SUCCESS")))
        .expect(1..=2)
        .mount(&app.wechat)
        .await;

    // While this pass waits for WeChat's answer, another replica closes the expired order (its
    // closeorder done); then WeChat reports the payment after all.
    let seen = app.order(&number).await;
    let state = app.state.clone();
    let pass = tokio::spawn(async move { run_once(&state).await });
    wait_for_wechat_call(&app, "queryorder").await;
    assert!(wxtopup::jobs::reconcile::close(&app.state, &seen).await.unwrap());
    let report = pass.await.unwrap().unwrap();
    assert_eq!((report.queried, report.recovered, report.closed, report.errors), (1, 0, 0, 0), "{report:?}");

    // Recorded with WeChat's transaction, and its whole refund sent and settled in this same pass.
    let order = app.wait_for_status(&number, "refunded").await;
    assert_eq!(order.transaction_id.as_deref(), Some("4200004561202203217657282768"));
    assert_eq!(order.paid_at.unwrap().to_string(), "2022-03-21 05:20:07");
    assert!(order.closed_at.is_some());
    let refunds = wxtopup::services::refunds::refunds_of(&app.db, &number).await.unwrap();
    assert_eq!(refunds.len(), 1);
    assert_eq!((refunds[0].source.as_str(), refunds[0].status.as_str()), ("auto_closed", "success"));
    assert_eq!(refunds[0].amount.round_dp(2), rust_decimal::Decimal::from(12));
    let books = assert_books_balance(&app, &number).await;
    assert_eq!((books["paidTotal"].as_str(), books["refundedTotal"].as_str()), (Some("12.00"), Some("12.00")));
    assert_eq!(books["deliveredTotal"], "0.00");
}

#[tokio::test]
async fn a_second_payment_reconciliation_finds_is_recorded_and_alerted_not_dropped() {
    let app = spawn_app().await;
    mount_submit(&app, delivered(), 0).await;
    mount_slow_query(&app, "SUCCESS").await;
    mount_wechat(&app, "refund", refund_accepted(), 0).await;
    let number = order_with_prepay(&app, 2).await;

    // While this pass waits for WeChat's answer, the order is recorded as paid by another transaction.
    let state = app.state.clone();
    let pass = tokio::spawn(async move { run_once(&state).await });
    wait_for_wechat_call(&app, "queryorder").await;
    let first = "4200000000000000000000000001";
    app.set(
        &number,
        vec![
            (order::Column::Status, Expr::value("paid")),
            (order::Column::TransactionId, Expr::value(first)),
            (order::Column::PaidAt, Expr::value(now_utc())),
        ],
    )
    .await;
    let report = pass.await.unwrap().unwrap();
    assert_eq!((report.queried, report.recovered, report.anomalies), (1, 0, 1), "{report:?}");

    // The first payment stands; the other one is on the order for an operator, and alerted.
    crate::helpers::wait_for_alert(&app, "anomaly", &number).await;
    let order = app.order(&number).await;
    assert_eq!(order.status.as_str(), "paid");
    assert_eq!(order.transaction_id.as_deref(), Some(first));
    let anomaly = order.anomaly.expect("the second payment is recorded on the order");
    assert!(anomaly.contains("4200004561202203217657282768") && anomaly.contains(first), "{anomaly}");
    assert!(wxtopup::services::refunds::refunds_of(&app.db, &number).await.unwrap().is_empty());
    assert!(app.attempts(&number).await.is_empty(), "the second payment starts no second top-up");
}
