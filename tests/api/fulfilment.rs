use futures::future::join_all;
use reqwest::StatusCode;
use sea_orm::sea_query::Expr;
use serde_json::json;
use serde_json::Value;
use std::time::Duration;
use wiremock::matchers::{body_json, header, method, path, path_regex};
use wiremock::{Mock, ResponseTemplate};
use wxtopup::domain::now_utc;
use wxtopup::entities::order;
use wxtopup::fulfilment::FulfilOutcome;
use wxtopup::jobs::compensate::run_once;

use crate::helpers::{
    assert_books_balance, assert_error, carrier_answer, mount_query, mount_submit, mount_wechat, paid_notification,
    refund_accepted, spawn_app, spawn_app_with, CARRIER_TOKEN, OPENID,
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
    for answer in answers {
        let status = answer.status();
        assert_eq!(status, StatusCode::OK, "{}", answer.text().await.unwrap());
    }
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
    assert!(matches!(status.as_str(), "paid" | "recharging"), "{status}");
    app.wait_for_status(&number, "success").await;
}

/// One claim against a carrier fault: the outcome, the order's state, and the attempt record.
async fn fault(submit: ResponseTemplate) -> (crate::helpers::TestApp, String, FulfilOutcome) {
    // Refunds of failed top-ups are covered in refunds.rs; here the failure itself is observed.
    let app = spawn_app_with(&[("AUTO_REFUND_ON_FAILURE", "false")]).await;
    mount_submit(&app, submit, 1).await;
    mount_query(&app, delivered(), 0).await;
    let number = app.paid_order_in_db("+97688112233").await;
    let outcome = wxtopup::lifecycle::fulfil(&app.state, &number).await.unwrap();
    (app, number, outcome)
}

async fn assert_retry_scheduled(submit: ResponseTemplate, expected_message: &str) {
    let (app, number, outcome) = fault(submit).await;
    assert_eq!(outcome, FulfilOutcome::Retrying);
    let order = app.order(&number).await;
    assert_eq!(order.status.as_str(), "recharging");
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
    assert!(matches!(outcome, FulfilOutcome::Failed(_)));
    let order = app.order(&number).await;
    assert_eq!(order.status.as_str(), "failed");
    assert!(order.failure_reason.unwrap().contains("number not prepaid"));
    assert_eq!(app.attempts(&number).await[0].outcome, "refused");
    assert_eq!(run_once(&app.state).await.unwrap().scanned, 0);
}

#[tokio::test]
async fn a_carrier_failed_status_fails_the_order() {
    let (app, number, outcome) = fault(ResponseTemplate::new(200).set_body_json(carrier_answer("failed"))).await;
    assert!(matches!(outcome, FulfilOutcome::Failed(_)));
    assert_eq!(app.order(&number).await.status.as_str(), "failed");
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
    assert_eq!(wxtopup::lifecycle::fulfil(&app.state, &number).await.unwrap(), FulfilOutcome::Retrying);
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
    assert_eq!(wxtopup::lifecycle::fulfil(&app.state, &number).await.unwrap(), FulfilOutcome::Retrying);
    app.expire_lease(&number).await;
    assert_eq!(wxtopup::lifecycle::fulfil(&app.state, &number).await.unwrap(), FulfilOutcome::Delivered);
    assert_eq!(app.order(&number).await.status.as_str(), "success");
}

#[tokio::test]
async fn an_outcome_still_unknown_after_the_budget_is_unresolved_never_refunded_and_still_queried() {
    let app = spawn_app_with(&[("FULFILMENT_MAX_ATTEMPTS", "2")]).await;
    mount_wechat(&app, "refund", json!({}), 0).await;
    // The carrier keeps the top-up pending through the whole budget…
    Mock::given(method("POST"))
        .and(path("/topups"))
        .respond_with(ResponseTemplate::new(200).set_body_json(carrier_answer("pending")))
        .expect(1)
        .mount(&app.carrier)
        .await;
    Mock::given(method("GET"))
        .and(path_regex("^/topups/"))
        .respond_with(ResponseTemplate::new(200).set_body_json(carrier_answer("pending")))
        .up_to_n_times(1)
        .mount(&app.carrier)
        .await;
    let number = app.paid_order_in_db("+97688112233").await;
    assert_eq!(wxtopup::lifecycle::fulfil(&app.state, &number).await.unwrap(), FulfilOutcome::Retrying);
    app.expire_lease(&number).await;
    let outcome = wxtopup::lifecycle::fulfil(&app.state, &number).await.unwrap();
    assert!(matches!(outcome, FulfilOutcome::Unresolved(_)), "{outcome:?}");
    let order = app.order(&number).await;
    assert_eq!(order.status.as_str(), "unresolved", "pending is not failed");
    assert!(order.unresolved_at.is_some());
    assert!(order.lease_expires_at.unwrap() > now_utc(), "asked again later, on the backoff");
    crate::helpers::wait_for_alert(&app, "topup_unresolved", &number).await;
    assert!(!crate::helpers::alert_kinds(&app, &number).await.contains(&"topup_failed".to_string()));
    assert_books_balance(&app, &number).await;

    // …then completes: the next query delivers it, and nothing was refunded.
    mount_query(&app, ResponseTemplate::new(200).set_body_json(carrier_answer("success")), 1).await;
    app.expire_lease(&number).await;
    assert_eq!(run_once(&app.state).await.unwrap().succeeded, 1);
    let order = app.order(&number).await;
    assert_eq!(order.status.as_str(), "success");
    assert_eq!(order.refund_seq, 0);
    assert_books_balance(&app, &number).await;
}

#[tokio::test]
async fn an_unresolved_order_is_refunded_only_on_the_carriers_proof_or_a_forced_reason() {
    let app = spawn_app_with(&[("FULFILMENT_MAX_ATTEMPTS", "1")]).await;
    mount_submit(&app, ResponseTemplate::new(504), 1).await;
    let number = app.paid_order_in_db("+97688112233").await;
    let outcome = wxtopup::lifecycle::fulfil(&app.state, &number).await.unwrap();
    assert!(matches!(outcome, FulfilOutcome::Unresolved(_)), "{outcome:?}");
    // The carrier still reports it pending: no proof, no refund.
    mount_query(&app, ResponseTemplate::new(200).set_body_json(carrier_answer("pending")), 1).await;
    let refused = app.admin_post_json(&format!("/admin/orders/{number}/refund"), &json!({"reason": "customer"})).await;
    assert_error(refused, StatusCode::CONFLICT, "REFUND_NEEDS_PROOF").await;
    assert_eq!(app.order(&number).await.status.as_str(), "unresolved");
    // A partial refund of an undelivered order is refused whatever the proof.
    let partial = app
        .admin_post_json(
            &format!("/admin/orders/{number}/refund"),
            &json!({"reason": "x", "amount": "1.00", "force": true}),
        )
        .await;
    assert_error(partial, StatusCode::CONFLICT, "PARTIAL_REFUND_UNDELIVERED").await;
    // Forced, with the reason recorded.
    mount_wechat(&app, "refund", refund_accepted(), 1).await;
    let forced = app
        .admin_post_json(
            &format!("/admin/orders/{number}/refund"),
            &json!({"reason": "carrier confirmed by phone", "force": true}),
        )
        .await;
    assert_eq!(forced.status(), StatusCode::OK);
    let forced: Value = forced.json().await.unwrap();
    assert!(forced["reason"].as_str().unwrap().contains("forced by an operator"), "{forced}");
    assert_eq!(app.order(&number).await.status.as_str(), "refunding");
}

#[tokio::test]
async fn an_operator_marks_an_unresolved_order_delivered() {
    let app = spawn_app_with(&[("FULFILMENT_MAX_ATTEMPTS", "1")]).await;
    mount_submit(&app, ResponseTemplate::new(200).set_body_json(carrier_answer("pending")), 1).await;
    let number = app.paid_order_in_db("+97688112233").await;
    wxtopup::lifecycle::fulfil(&app.state, &number).await.unwrap();
    assert_eq!(app.order(&number).await.status.as_str(), "unresolved");
    let path = format!("/admin/orders/{number}/mark-delivered");
    let empty = app.admin_post_json(&path, &json!({"note": " "})).await;
    assert_error(empty, StatusCode::BAD_REQUEST, "INVALID_REQUEST").await;
    let marked = app.admin_post_json(&path, &json!({"note": "carrier portal shows it delivered"})).await;
    assert_eq!(marked.status(), StatusCode::OK);
    let order = app.order(&number).await;
    assert_eq!(order.status.as_str(), "success");
    assert!(order.delivered_at.is_some());
    assert_books_balance(&app, &number).await;
    let again = app.admin_post_json(&path, &json!({"note": "twice"})).await;
    assert_error(again, StatusCode::CONFLICT, "ORDER_NOT_UNRESOLVED").await;
}

#[tokio::test]
async fn a_408_or_429_from_the_carrier_is_unknown_not_a_refusal() {
    for status in [408, 429] {
        let app = spawn_app().await;
        mount_submit(&app, ResponseTemplate::new(status), 1).await;
        let number = app.paid_order_in_db("+97688112233").await;
        let outcome = wxtopup::lifecycle::fulfil(&app.state, &number).await.unwrap();
        assert_eq!(outcome, FulfilOutcome::Retrying, "HTTP {status}");
        assert_eq!(app.order(&number).await.status.as_str(), "recharging");
    }
}

#[tokio::test]
async fn a_stale_attempt_of_this_same_worker_cannot_write_over_a_newer_claim() {
    let app = spawn_app_with(&[("TOPUP_TIMEOUT_MS", "5000"), ("FULFILMENT_LEASE_SECONDS", "60")]).await;
    // The first attempt's submit hangs, then the carrier refuses it; meanwhile its lease is taken over
    // by a newer claim of the same worker, which delivers.
    Mock::given(method("POST"))
        .and(path("/topups"))
        .respond_with(ResponseTemplate::new(400).set_delay(Duration::from_millis(800)))
        .up_to_n_times(1)
        .mount(&app.carrier)
        .await;
    mount_query(&app, ResponseTemplate::new(200).set_body_json(carrier_answer("success")), 1).await;
    let number = app.paid_order_in_db("+97688112233").await;
    let stale = {
        let state = app.state.clone();
        let number = number.clone();
        tokio::spawn(async move { wxtopup::lifecycle::fulfil(&state, &number).await })
    };
    for _ in 0..100 {
        if app.order(&number).await.submitted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app.expire_lease(&number).await;
    assert_eq!(wxtopup::lifecycle::fulfil(&app.state, &number).await.unwrap(), FulfilOutcome::Delivered);
    assert_eq!(stale.await.unwrap().unwrap(), FulfilOutcome::NotClaimed, "the stale refusal is dropped");
    let order = app.order(&number).await;
    assert_eq!(order.status.as_str(), "success");
    assert_eq!(order.refund_seq, 0);
}

#[tokio::test]
async fn an_operator_retry_keeps_the_claims_version() {
    let app = spawn_app_with(&[("AUTO_REFUND_ON_FAILURE", "false")]).await;
    mount_submit(&app, ResponseTemplate::new(400), 1).await;
    let number = app.paid_order_in_db("+97688112233").await;
    wxtopup::lifecycle::fulfil(&app.state, &number).await.unwrap();
    let failed = app.order(&number).await;
    assert_eq!(failed.status.as_str(), "failed");
    let retried = wxtopup::services::admin::retry_order(&app.db, &number).await.unwrap();
    assert_eq!(retried.status.as_str(), "paid");
    assert!(retried.fulfil_attempts >= failed.fulfil_attempts, "the version never goes back");
    assert_eq!(retried.budget_from, failed.fulfil_attempts, "the budget restarts from it");
}

#[tokio::test]
async fn shutdown_keeps_the_lease_of_a_claim_whose_carrier_call_is_still_running() {
    let mut app = spawn_app_with(&[("TOPUP_TIMEOUT_MS", "5000"), ("FULFILMENT_LEASE_SECONDS", "60")]).await;
    mount_submit(&app, delivered().set_delay(Duration::from_secs(4)), 1).await;
    let number = app.paid_order_in_db("+97688112233").await;
    wxtopup::lifecycle::react(
        &app.state,
        wxtopup::lifecycle::Happened::Paid { order_number: number.clone(), seen: None },
    );
    // Wait until the worker holds the claim and the submit is on its way.
    for _ in 0..100 {
        if app.order(&number).await.submitted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let worker = app.state.fulfiller.worker().to_string();
    app.stop().await; // grace is 1 s in tests; the carrier takes 4 s
    let order = app.order(&number).await;
    assert_eq!(order.status.as_str(), "recharging");
    // Handing the claim over now would let another replica submit while this submit is on the wire.
    assert_eq!(order.lease_owner.as_deref(), Some(worker.as_str()), "an in-flight claim keeps its owner");
    assert!(order.lease_expires_at.unwrap() > now_utc() + chrono::Duration::seconds(30), "and its lease");
    assert!(order.submitted, "the next holder must query before submitting");
}

#[tokio::test]
async fn shutdown_releases_an_idle_claim_at_once() {
    let mut app = spawn_app().await;
    let number = app.paid_order_in_db("+97688112233").await;
    // A claim this worker holds with no carrier call running (its task died on a database error).
    let worker = app.state.fulfiller.worker().to_string();
    let lease_until = now_utc() + chrono::Duration::seconds(60);
    app.set(
        &number,
        vec![
            (order::Column::Status, Expr::value("recharging")),
            (order::Column::LeaseOwner, Expr::value(worker)),
            (order::Column::LeaseExpiresAt, Expr::value(lease_until)),
        ],
    )
    .await;
    app.stop().await;
    let order = app.order(&number).await;
    assert_eq!(order.lease_owner, None, "the idle claim is given back");
    assert!(order.lease_expires_at.unwrap() <= now_utc(), "another replica may take it at once");
}

/// A carrier that has never heard of the reference, answering the query only when told to; it
/// delivers every submit.
#[derive(Default)]
struct GatedCarrier {
    queried: tokio::sync::Notify,
    answer_query: tokio::sync::Notify,
    submits: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl wxtopup::fulfilment::TopUpProvider for GatedCarrier {
    async fn submit(
        &self,
        _: &wxtopup::fulfilment::TopUpRequest,
    ) -> Result<wxtopup::fulfilment::Receipt, wxtopup::fulfilment::ProviderError> {
        self.submits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(wxtopup::fulfilment::Receipt {
            state: wxtopup::fulfilment::TopUpState::Delivered,
            provider_reference: Some("C-1".into()),
            message: None,
        })
    }

    async fn query(&self, _: &str) -> Result<Option<wxtopup::fulfilment::Receipt>, wxtopup::fulfilment::ProviderError> {
        self.queried.notify_one();
        self.answer_query.notified().await;
        Ok(None)
    }
}

type Attempt = tokio::task::JoinHandle<Result<FulfilOutcome, sea_orm::DbErr>>;

/// A paid order that an earlier submit may have reached (so the attempt queries first, and submits on
/// "never received"), and an attempt at it on a [`GatedCarrier`], waiting in its query.
async fn attempt_held_at_its_query(
) -> (crate::helpers::TestApp, String, std::sync::Arc<GatedCarrier>, wxtopup::fulfilment::Fulfiller, Attempt) {
    let app = spawn_app().await;
    let number = app.paid_order_in_db("+97688112233").await;
    app.set(&number, vec![(order::Column::Submitted, Expr::value(true))]).await;
    let carrier = std::sync::Arc::new(GatedCarrier::default());
    let fulfiller = wxtopup::fulfilment::Fulfiller::new(
        app.state.db.clone(),
        app.state.writes.clone(),
        carrier.clone(),
        app.state.settings.fulfilment.clone(),
    );
    let attempt = tokio::spawn({
        let (fulfiller, number) = (fulfiller.clone(), number.clone());
        async move { fulfiller.fulfil_order(&number).await }
    });
    carrier.queried.notified().await;
    (app, number, carrier, fulfiller, attempt)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_keeps_a_claim_between_its_query_and_the_submit_it_leads_to() {
    let (app, number, carrier, fulfiller, attempt) = attempt_held_at_its_query().await;
    // Hold up the attempt between its calls: on SQLite the pool's one connection is taken, so the
    // attempt waits to record the query's answer with no carrier call running (elsewhere the window
    // is only as long as that write, and this test guards rather than reproduces).
    let hold = sea_orm::TransactionTrait::begin(&app.state.db).await.unwrap();
    carrier.answer_query.notify_one();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let release = tokio::spawn({
        let fulfiller = fulfiller.clone();
        async move { fulfiller.release_claims().await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    hold.commit().await.unwrap();

    assert_eq!(release.await.unwrap().unwrap(), 0, "the claim in hand is not released");
    assert_eq!(attempt.await.unwrap().unwrap(), FulfilOutcome::Delivered);
    assert_eq!(carrier.submits.load(std::sync::atomic::Ordering::SeqCst), 1);
    let order = app.order(&number).await;
    assert_eq!(order.status.as_str(), "success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_whose_claim_was_taken_during_its_query_does_not_submit() {
    let (app, number, carrier, _fulfiller, attempt) = attempt_held_at_its_query().await;
    // The query outlasted the lease; another replica claimed the order meanwhile (a newer version).
    let claimed = app.order(&number).await;
    app.set(
        &number,
        vec![
            (order::Column::LeaseOwner, Expr::value("w-another")),
            (order::Column::FulfilAttempts, Expr::value(claimed.fulfil_attempts + 1)),
        ],
    )
    .await;
    carrier.answer_query.notify_one();
    assert_eq!(attempt.await.unwrap().unwrap(), FulfilOutcome::NotClaimed);
    assert_eq!(carrier.submits.load(std::sync::atomic::Ordering::SeqCst), 0, "the newer claim decides");
}

/// A carrier that takes a moment for each submit (so concurrent top-ups interleave) and logs the
/// reference it received.
struct SlowCarrier;

#[async_trait::async_trait]
impl wxtopup::fulfilment::TopUpProvider for SlowCarrier {
    async fn submit(
        &self,
        request: &wxtopup::fulfilment::TopUpRequest,
    ) -> Result<wxtopup::fulfilment::Receipt, wxtopup::fulfilment::ProviderError> {
        tokio::time::sleep(Duration::from_millis(30)).await;
        tracing::info!(reference = request.reference.as_str(), "carrier received");
        Ok(wxtopup::fulfilment::Receipt {
            state: wxtopup::fulfilment::TopUpState::Delivered,
            provider_reference: None,
            message: None,
        })
    }

    async fn query(&self, _: &str) -> Result<Option<wxtopup::fulfilment::Receipt>, wxtopup::fulfilment::ProviderError> {
        Ok(None)
    }
}

#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn concurrent_top_ups_log_under_their_own_order_numbers() {
    let app = spawn_app().await;
    let numbers = [app.paid_order_in_db("+97688112233").await, app.paid_order_in_db("+97688112244").await];
    let fulfiller = wxtopup::fulfilment::Fulfiller::new(
        app.state.db.clone(),
        app.state.writes.clone(),
        std::sync::Arc::new(SlowCarrier),
        app.state.settings.fulfilment.clone(),
    );
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber =
        tracing_subscriber::fmt().json().with_current_span(true).with_writer(move || writer.clone()).finish();
    // Both attempts on this thread, interleaved at every await, under the capturing subscriber.
    let outcomes = {
        let _default = tracing::subscriber::set_default(subscriber);
        join_all(numbers.iter().map(|n| fulfiller.fulfil_order(n))).await
    };
    assert!(outcomes.iter().all(|o| matches!(o, Ok(FulfilOutcome::Delivered))), "{outcomes:?}");
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let received: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["fields"]["message"] == "carrier received")
        .collect();
    assert_eq!(received.len(), 2, "{text}");
    for line in &received {
        assert_eq!(line["span"]["order_number"], line["fields"]["reference"], "logged under another order: {line}");
    }
}
