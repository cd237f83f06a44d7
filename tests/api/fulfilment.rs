use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, ResponseTemplate};
use wxtopup::domain::now_utc;
use wxtopup::fulfilment::FulfilOutcome;
use wxtopup::jobs::compensate::run_once;

use crate::helpers::{
    carrier_answer, mount_query, mount_submit, paid_notification, spawn_app, spawn_app_with, CARRIER_TOKEN, OPENID,
};

fn delivered() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(carrier_answer("success"))
}

#[tokio::test]
async fn a_paid_order_is_delivered_in_the_background_with_the_carrier_format() {
    let app = spawn_app().await;
    let number = app.place_order(OPENID).await;
    Mock::given(method("POST"))
        .and(path("/topups"))
        .and(header("authorization", format!("Bearer {CARRIER_TOKEN}").as_str()))
        .and(body_json(json!({"reference": number, "phoneNumber": "+97688112233", "amount": "5000",
            "currency": "MNT", "productCode": "UNITEL-5000"})))
        .respond_with(delivered())
        .expect(1)
        .mount(&app.carrier)
        .await;
    mount_query(&app, delivered(), 0).await;

    let response = app.deliver_callback(&number, &paid_notification(&number)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let order = app.wait_for_status(&number, "success").await;
    assert_eq!(order.provider_reference.as_deref(), Some("CARRIER-778899"));
    assert!(order.delivered_at.is_some() && order.recharge_at.is_some());
    assert_eq!(order.lease_owner, None);
    let attempts = app.attempts(&number).await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        (attempts[0].action.as_str(), attempts[0].outcome.as_str(), attempts[0].attempt),
        ("submit", "delivered", 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_duplicate_callbacks_submit_the_top_up_once() {
    let app = spawn_app().await;
    mount_submit(&app, delivered(), 1).await;
    mount_query(&app, delivered(), 0).await;
    let number = app.place_order(OPENID).await;
    let notification = paid_notification(&number);
    let answers = join_all((0..50).map(|_| app.deliver_callback(&number, &notification))).await;
    assert!(answers.iter().all(|r| r.status() == StatusCode::OK));
    app.wait_for_status(&number, "success").await;
    // Sweeps afterwards find nothing to do.
    let report = run_once(&app.state).await.unwrap();
    assert_eq!(report.scanned, 0);
    assert_eq!(app.attempts(&number).await.len(), 1);
}

#[tokio::test]
async fn the_callback_is_answered_before_the_carrier_finishes() {
    let app = spawn_app_with(&[("TOPUP_TIMEOUT_MS", "5000"), ("FULFILMENT_LEASE_SECONDS", "60")]).await;
    mount_submit(&app, delivered().set_delay(Duration::from_millis(1500)), 1).await;
    let number = app.place_order(OPENID).await;
    let response = app.deliver_callback(&number, &paid_notification(&number)).await;
    assert_eq!(response.status(), StatusCode::OK);
    // The answer came back while the carrier was still working.
    let status = app.order(&number).await.status;
    assert!(status == "paid" || status == "recharging", "{status}");
    app.wait_for_status(&number, "success").await;
}

/// One claim against a carrier fault: the outcome, the order's state, and the attempt record.
async fn fault(submit: ResponseTemplate) -> (crate::helpers::TestApp, String, FulfilOutcome) {
    // Refunds of failed top-ups are covered in refunds.rs; here the failure itself is observed.
    let app = spawn_app_with(&[("AUTO_REFUND_ON_FAILURE", "false")]).await;
    mount_submit(&app, submit, 1).await;
    mount_query(&app, delivered(), 0).await;
    let number = app.paid_order_in_db("+97688112233").await;
    let outcome = app.state.fulfiller.fulfil_order(&number).await.unwrap();
    (app, number, outcome)
}

async fn assert_retry_scheduled(submit: ResponseTemplate, expected_message: &str) {
    let (app, number, outcome) = fault(submit).await;
    assert_eq!(outcome, FulfilOutcome::Retrying);
    let order = app.order(&number).await;
    assert_eq!(order.status, "recharging");
    assert_eq!(order.lease_owner, None);
    assert!(order.submitted);
    // Backoff: base 60 s with jitter 0.8–1.2, so not due for at least 48 s.
    let due_in = order.lease_expires_at.unwrap() - now_utc();
    assert!(due_in > chrono::Duration::seconds(45) && due_in < chrono::Duration::seconds(75), "{due_in}");
    let attempts = app.attempts(&number).await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, "unknown");
    assert!(attempts[0].message.as_deref().unwrap_or_default().contains(expected_message), "{:?}", attempts[0].message);
    // A sweep right away respects the backoff: nothing is due, nothing is sent.
    let report = run_once(&app.state).await.unwrap();
    assert_eq!(report.scanned, 0);
}

#[tokio::test]
async fn a_carrier_5xx_schedules_a_retry_with_backoff() {
    assert_retry_scheduled(ResponseTemplate::new(502), "HTTP 502").await;
}

#[tokio::test]
async fn a_carrier_timeout_schedules_a_retry() {
    assert_retry_scheduled(delivered().set_delay(Duration::from_millis(1200)), "timed out").await;
}

#[tokio::test]
async fn a_garbage_answer_schedules_a_retry() {
    assert_retry_scheduled(ResponseTemplate::new(200).set_body_string("<html>"), "unreadable").await;
}

#[tokio::test]
async fn a_conflict_on_the_reference_is_an_unknown_outcome_not_a_failure() {
    assert_retry_scheduled(ResponseTemplate::new(409).set_body_json(json!({"message": "duplicate reference"})), "409")
        .await;
}

#[tokio::test]
async fn a_carrier_4xx_fails_the_order_for_good() {
    let (app, number, outcome) =
        fault(ResponseTemplate::new(400).set_body_json(json!({"status": "failed", "message": "number not prepaid"})))
            .await;
    assert_eq!(outcome, FulfilOutcome::Failed);
    let order = app.order(&number).await;
    assert_eq!(order.status, "failed");
    assert!(order.failure_reason.unwrap().contains("number not prepaid"));
    assert_eq!(app.attempts(&number).await[0].outcome, "refused");
    assert_eq!(run_once(&app.state).await.unwrap().scanned, 0);
}

#[tokio::test]
async fn a_carrier_failed_status_fails_the_order() {
    let (app, number, outcome) = fault(ResponseTemplate::new(200).set_body_json(carrier_answer("failed"))).await;
    assert_eq!(outcome, FulfilOutcome::Failed);
    assert_eq!(app.order(&number).await.status, "failed");
}

#[tokio::test]
async fn a_retry_queries_the_carrier_before_submitting_again() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path("/topups"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .expect(1)
        .mount(&app.carrier)
        .await;
    mount_submit(&app, delivered(), 1).await;
    mount_query(&app, ResponseTemplate::new(404), 1).await;
    let number = app.paid_order_in_db("+97688112233").await;
    assert_eq!(app.state.fulfiller.fulfil_order(&number).await.unwrap(), FulfilOutcome::Retrying);
    app.expire_lease(&number).await;
    let report = run_once(&app.state).await.unwrap();
    assert_eq!((report.scanned, report.succeeded), (1, 1));
    let actions: Vec<(String, String)> =
        app.attempts(&number).await.into_iter().map(|a| (a.action, a.outcome)).collect();
    let expected = [("submit", "unknown"), ("query", "not_found"), ("submit", "delivered")];
    assert_eq!(actions, expected.map(|(a, o)| (a.to_string(), o.to_string())));
    assert_eq!(app.order(&number).await.fulfil_attempts, 2);
}

#[tokio::test]
async fn a_pending_top_up_is_settled_by_query_without_a_second_submit() {
    let app = spawn_app().await;
    mount_submit(&app, ResponseTemplate::new(200).set_body_json(carrier_answer("pending")), 1).await;
    mount_query(&app, delivered(), 1).await;
    let number = app.paid_order_in_db("+97688112233").await;
    assert_eq!(app.state.fulfiller.fulfil_order(&number).await.unwrap(), FulfilOutcome::Retrying);
    app.expire_lease(&number).await;
    assert_eq!(app.state.fulfiller.fulfil_order(&number).await.unwrap(), FulfilOutcome::Delivered);
    assert_eq!(app.order(&number).await.status, "success");
}

#[tokio::test]
async fn exhausted_retries_end_failed() {
    let app = spawn_app_with(&[("FULFILMENT_MAX_ATTEMPTS", "2"), ("AUTO_REFUND_ON_FAILURE", "false")]).await;
    mount_submit(&app, ResponseTemplate::new(500), 2).await;
    mount_query(&app, ResponseTemplate::new(404), 1).await;
    let number = app.paid_order_in_db("+97688112233").await;
    assert_eq!(app.state.fulfiller.fulfil_order(&number).await.unwrap(), FulfilOutcome::Retrying);
    app.expire_lease(&number).await;
    assert_eq!(app.state.fulfiller.fulfil_order(&number).await.unwrap(), FulfilOutcome::Failed);
    let order = app.order(&number).await;
    assert_eq!(order.status, "failed");
    assert!(order.failure_reason.unwrap().contains("gave up after 2 attempts"));
    assert_eq!(app.attempts(&number).await.len(), 3);
}

#[tokio::test]
async fn shutdown_waits_for_the_grace_period_then_releases_unfinished_claims() {
    let mut app = spawn_app_with(&[("TOPUP_TIMEOUT_MS", "5000"), ("FULFILMENT_LEASE_SECONDS", "60")]).await;
    mount_submit(&app, delivered().set_delay(Duration::from_secs(4)), 1).await;
    let number = app.paid_order_in_db("+97688112233").await;
    app.state.fulfiller.spawn(number.clone());
    // Wait until the worker holds the claim and the submit is on its way.
    for _ in 0..100 {
        if app.order(&number).await.submitted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app.stop().await; // grace is 1 s in tests; the carrier takes 4 s
    let order = app.order(&number).await;
    assert_eq!(order.status, "recharging");
    assert_eq!(order.lease_owner, None, "the claim must be given back");
    assert!(order.lease_expires_at.unwrap() <= now_utc(), "another replica may take it at once");
    assert!(order.submitted, "the next holder must query before submitting");
}
