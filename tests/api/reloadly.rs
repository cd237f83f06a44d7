//! `TOPUP_PROVIDER=reloadly` against a fake Reloadly (token server and Airtime API on one wiremock) that
//! answers in the documented shapes.
//! Product 1 (Unitel 5,000 MNT, Mongolia) is given its Reloadly operator id through the catalog; orders
//! snapshot it, and the adapter sends it.

use serde_json::{json, Value};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wiremock::matchers::{body_json, body_partial_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};
use wxtopup::fulfilment::FulfilOutcome;
use wxtopup::lifecycle::fulfil;

use crate::helpers::{
    mount_wechat, paid_notification, query_refund_answer, refund_accepted, spawn_app_with, TestApp, OPENID,
};

const CLIENT_ID: &str = "reloadly-test-client";
const CLIENT_SECRET: &str = "reloadly-test-secret-9f8e7d";
const ACCEPT: &str = "application/com.reloadly.topups-v1+json";
const OPERATOR_ID: u64 = 174;
const PHONE: &str = "+97688112233";
const TRANSACTION_ID: u64 = 26523;

struct Reloadly {
    app: TestApp,
    server: MockServer,
}

async fn spawn(extra: &[(&str, &str)]) -> Reloadly {
    let server = MockServer::start().await;
    let uri = server.uri();
    let mut overrides = vec![
        ("TOPUP_PROVIDER", "reloadly"),
        ("RELOADLY_CLIENT_ID", CLIENT_ID),
        ("RELOADLY_CLIENT_SECRET", CLIENT_SECRET),
        ("RELOADLY_AUTH_URL", uri.as_str()),
        ("RELOADLY_API_URL", uri.as_str()),
    ];
    overrides.extend_from_slice(extra);
    let app = spawn_app_with(&overrides).await;
    let catalog = json!({"carrierReference": OPERATOR_ID.to_string(), "country": "MN"});
    let product = app
        .client
        .patch(app.url(&format!("/admin/products/{}", app.product_id)))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .json(&catalog)
        .send()
        .await
        .unwrap();
    assert_eq!(product.status(), reqwest::StatusCode::OK, "the product gets its Reloadly operator id");
    Reloadly { app, server }
}

impl Reloadly {
    async fn fulfil(&self, number: &str) -> FulfilOutcome {
        fulfil(&self.app.state, number).await.expect("database reachable")
    }

    /// Fulfils once more after the retry's time has come.
    async fn retry(&self, number: &str) -> FulfilOutcome {
        self.app.expire_lease(number).await;
        self.fulfil(number).await
    }

    async fn status(&self, number: &str) -> String {
        self.app.order(number).await.status.as_str().to_string()
    }

    async fn requests_to(&self, wanted: &str) -> usize {
        let received = self.server.received_requests().await.unwrap_or_default();
        received.iter().filter(|r| r.url.path() == wanted).count()
    }
}

/// The token server, answering `token` (`times` times; `None`: any number of times).
async fn mount_token(server: &MockServer, token: &str, times: Option<u64>) {
    let answer = json!({"access_token": token, "scope": "send-topups read-operators read-topups-history",
        "expires_in": 86400, "token_type": "Bearer"});
    let mock = Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .and(body_json(json!({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
            "grant_type": "client_credentials", "audience": "https://topups-sandbox.reloadly.com"})))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer));
    match times {
        Some(times) => mock.up_to_n_times(times).expect(times).mount(server).await,
        None => mock.mount(server).await,
    }
}

/// A top-up transaction as Reloadly answers it.
fn transaction(number: &str, status: &str) -> Value {
    json!({"transactionId": TRANSACTION_ID, "status": status, "operatorTransactionId": null,
        "customIdentifier": number, "recipientPhone": "97688112233", "recipientEmail": null,
        "senderPhone": null, "countryCode": "MN", "operatorId": OPERATOR_ID, "operatorName": "Unitel Mongolia",
        "discount": 0, "discountCurrencyCode": "USD", "requestedAmount": 5000, "requestedAmountCurrencyCode": "MNT",
        "deliveredAmount": 5000, "deliveredAmountCurrencyCode": "MNT", "transactionDate": "2026-12-01 10:00:00",
        "pinDetail": null, "balanceInfo": null})
}

fn answered(number: &str, status: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(transaction(number, status))
}

/// A page of the transaction report holding `content`.
fn report(content: Vec<Value>) -> ResponseTemplate {
    let total = content.len();
    ResponseTemplate::new(200).set_body_json(json!({"content": content, "pageable": {"pageNumber": 0,
        "pageSize": 100, "offset": 0, "paged": true, "unpaged": false}, "totalPages": 1, "totalElements": total,
        "last": true, "first": true, "numberOfElements": total, "size": 100, "number": 0, "empty": total == 0}))
}

fn error(status: u16, code: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({"timeStamp": "2026-12-01 10:00:00", "message": message,
        "path": "/topups", "errorCode": code, "infoLink": null, "details": []}))
}

/// `POST /topups` with `token`, answering `response`, expected `times` times.
async fn mount_submit(server: &MockServer, token: &str, response: ResponseTemplate, times: u64) {
    Mock::given(method("POST"))
        .and(path("/topups"))
        .and(header("authorization", format!("Bearer {token}").as_str()))
        .and(header("accept", ACCEPT))
        .respond_with(response)
        .up_to_n_times(times.max(1))
        .expect(times)
        .mount(server)
        .await;
}

/// The transaction report looked up by `number`, answering `response`, expected `times` times.
async fn mount_lookup(server: &MockServer, number: &str, response: ResponseTemplate, times: u64) {
    Mock::given(method("GET"))
        .and(path("/topups/reports/transactions"))
        .and(query_param("customIdentifier", number))
        .and(header("accept", ACCEPT))
        .respond_with(response)
        .up_to_n_times(times.max(1))
        .expect(times)
        .mount(server)
        .await;
}

#[tokio::test]
async fn a_product_without_a_reloadly_operator_id_is_refused_and_refunded_before_anything_is_sent() {
    let r = spawn(&[]).await;
    let unmapped = r.app.create_product(&json!({"carrierReference": "UNITEL-5000"})).await;
    let placed = r.app.post_as("/orders", OPENID, &json!({"productId": unmapped, "phoneNumber": PHONE})).await;
    let placed: Value = placed.json().await.unwrap();
    let number = placed["orderNumber"].as_str().unwrap().to_string();
    mount_wechat(&r.app, "refund", refund_accepted(), 1).await;
    mount_wechat(&r.app, "queryrefund", query_refund_answer(&format!("R{number}01"), "SUCCESS"), 1).await;
    r.app.deliver_callback(&number, &paid_notification(&number)).await;
    let order = r.app.wait_for_status(&number, "refunded").await;
    let reason = order.failure_reason.unwrap_or_default();
    assert!(reason.contains("not a Reloadly operator id") && reason.contains("nothing was sent"), "{reason}");
    assert!(r.server.received_requests().await.unwrap_or_default().is_empty(), "nothing reached Reloadly");
}

#[tokio::test]
async fn top_ups_go_out_in_the_documented_shape_on_one_token() {
    let r = spawn(&[]).await;
    mount_token(&r.server, "token-1", Some(1)).await;
    // Answers with the transaction of whichever customIdentifier was sent.
    Mock::given(method("POST"))
        .and(path("/topups"))
        .and(header("authorization", "Bearer token-1"))
        .and(header("accept", ACCEPT))
        .and(body_partial_json(json!({"operatorId": OPERATOR_ID, "amount": 5000, "useLocalAmount": true,
            "recipientPhone": {"countryCode": "MN", "number": PHONE}})))
        .respond_with(|request: &Request| {
            let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
            answered(body["customIdentifier"].as_str().unwrap_or_default(), "SUCCESSFUL")
        })
        .expect(2)
        .mount(&r.server)
        .await;
    let first = r.app.paid_order_in_db(PHONE).await;
    let second = r.app.paid_order_in_db(PHONE).await;
    for number in [&first, &second] {
        assert_eq!(r.fulfil(number).await, FulfilOutcome::Delivered);
        let order = r.app.order(number).await;
        assert_eq!(order.status.as_str(), "success");
        assert_eq!(order.provider_reference, Some(TRANSACTION_ID.to_string()));
    }
    let sent: Vec<Value> = r
        .server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == "/topups")
        .map(|r| serde_json::from_slice(&r.body).unwrap_or_default())
        .collect();
    assert_eq!(sent[0]["customIdentifier"], first.as_str(), "the order number is the idempotency key");
    assert_eq!(sent[1]["customIdentifier"], second.as_str());
}

#[tokio::test]
async fn a_token_that_expires_mid_run_is_renewed_once_and_the_same_top_up_sent_again() {
    let r = spawn(&[]).await;
    mount_token(&r.server, "token-1", Some(1)).await;
    mount_token(&r.server, "token-2", Some(1)).await;
    let first = r.app.paid_order_in_db(PHONE).await;
    let second = r.app.paid_order_in_db(PHONE).await;
    mount_submit(&r.server, "token-1", answered(&first, "SUCCESSFUL"), 1).await;
    mount_submit(&r.server, "token-1", error(401, "TOKEN_EXPIRED", "Access token expired"), 1).await;
    mount_submit(&r.server, "token-2", answered(&second, "SUCCESSFUL"), 1).await;
    assert_eq!(r.fulfil(&first).await, FulfilOutcome::Delivered);
    assert_eq!(r.fulfil(&second).await, FulfilOutcome::Delivered);
    let attempts = r.app.attempts(&second).await;
    assert_eq!(attempts.len(), 1, "the renewal happens inside one submit");
    assert_eq!(r.requests_to("/oauth/token").await, 2);
}

#[tokio::test]
async fn a_5xx_on_submit_is_unknown_and_the_lookup_finding_the_top_up_delivers_it() {
    let r = spawn(&[]).await;
    mount_token(&r.server, "token-1", None).await;
    let number = r.app.paid_order_in_db(PHONE).await;
    mount_submit(&r.server, "token-1", ResponseTemplate::new(503), 1).await;
    mount_lookup(&r.server, &number, report(vec![transaction(&number, "SUCCESSFUL")]), 1).await;
    assert_eq!(r.fulfil(&number).await, FulfilOutcome::Retrying);
    assert_eq!(r.status(&number).await, "recharging");
    assert_eq!(r.retry(&number).await, FulfilOutcome::Delivered);
    assert_eq!(r.requests_to("/topups").await, 1, "found, so never sent again");
}

#[tokio::test]
async fn a_5xx_on_submit_is_sent_again_once_the_lookup_proves_reloadly_never_received_it() {
    let r = spawn(&[]).await;
    mount_token(&r.server, "token-1", None).await;
    let number = r.app.paid_order_in_db(PHONE).await;
    mount_submit(&r.server, "token-1", ResponseTemplate::new(502), 1).await;
    mount_submit(&r.server, "token-1", answered(&number, "SUCCESSFUL"), 1).await;
    mount_lookup(&r.server, &number, report(vec![]), 1).await;
    assert_eq!(r.fulfil(&number).await, FulfilOutcome::Retrying);
    assert_eq!(r.retry(&number).await, FulfilOutcome::Delivered);
    let actions: Vec<(String, String)> =
        r.app.attempts(&number).await.into_iter().map(|a| (a.action, a.outcome)).collect();
    let expected = [("submit", "unknown"), ("query", "not_found"), ("submit", "delivered")];
    assert_eq!(actions, expected.map(|(a, o)| (a.to_string(), o.to_string())));
}

#[tokio::test]
async fn a_timeout_after_reloadly_accepted_the_top_up_is_found_and_never_sent_twice() {
    let r = spawn(&[]).await;
    mount_token(&r.server, "token-1", None).await;
    let number = r.app.paid_order_in_db(PHONE).await;
    // TOPUP_TIMEOUT_MS is 500 in tests: Reloadly takes the top-up, the answer comes too late.
    mount_submit(&r.server, "token-1", answered(&number, "SUCCESSFUL").set_delay(Duration::from_millis(1200)), 1).await;
    mount_lookup(&r.server, &number, report(vec![transaction(&number, "SUCCESSFUL")]), 1).await;
    assert_eq!(r.fulfil(&number).await, FulfilOutcome::Retrying);
    let attempts = r.app.attempts(&number).await;
    assert!(attempts[0].message.as_deref().unwrap_or_default().contains("timed out"), "{:?}", attempts[0].message);
    assert_eq!(r.retry(&number).await, FulfilOutcome::Delivered);
    assert_eq!(r.status(&number).await, "success");
    assert_eq!(r.requests_to("/topups").await, 1);
}

#[tokio::test]
async fn a_processing_top_up_is_delivered_when_the_lookup_later_says_successful() {
    let r = spawn(&[]).await;
    mount_token(&r.server, "token-1", None).await;
    let number = r.app.paid_order_in_db(PHONE).await;
    mount_submit(&r.server, "token-1", answered(&number, "PROCESSING"), 1).await;
    mount_lookup(&r.server, &number, report(vec![transaction(&number, "PROCESSING")]), 1).await;
    mount_lookup(&r.server, &number, report(vec![transaction(&number, "SUCCESSFUL")]), 1).await;
    assert_eq!(r.fulfil(&number).await, FulfilOutcome::Retrying);
    assert_eq!(r.retry(&number).await, FulfilOutcome::Retrying, "still processing is not failed");
    assert_eq!(r.status(&number).await, "recharging");
    assert_eq!(r.retry(&number).await, FulfilOutcome::Delivered);
    assert_eq!(r.requests_to("/topups").await, 1);
}

#[tokio::test]
async fn a_failed_top_up_fails_the_order_and_is_refunded() {
    let r = spawn(&[]).await;
    mount_token(&r.server, "token-1", None).await;
    let number = r.app.paid_order_in_db(PHONE).await;
    mount_submit(&r.server, "token-1", answered(&number, "FAILED"), 1).await;
    mount_wechat(&r.app, "refund", refund_accepted(), 1).await;
    mount_wechat(&r.app, "queryrefund", query_refund_answer(&format!("R{number}01"), "SUCCESS"), 1).await;
    assert!(matches!(r.fulfil(&number).await, FulfilOutcome::Failed(_)));
    let order = r.app.wait_for_status(&number, "refunded").await;
    assert!(order.failure_reason.unwrap_or_default().contains("FAILED"));
}

#[tokio::test]
async fn a_documented_refusal_fails_the_order_with_its_code_and_without_the_number() {
    let r = spawn(&[("AUTO_REFUND_ON_FAILURE", "false")]).await;
    mount_token(&r.server, "token-1", None).await;
    let number = r.app.paid_order_in_db(PHONE).await;
    let refusal = error(400, "INVALID_RECIPIENT_PHONE", "Phone +97688112233 is not valid for the given country");
    mount_submit(&r.server, "token-1", refusal, 1).await;
    mount_lookup(&r.server, &number, report(vec![]), 0).await;
    assert!(matches!(r.fulfil(&number).await, FulfilOutcome::Failed(_)));
    let order = r.app.order(&number).await;
    assert_eq!(order.status.as_str(), "failed");
    let reason = order.failure_reason.unwrap_or_default();
    assert!(reason.contains("INVALID_RECIPIENT_PHONE"), "{reason}");
    assert!(!reason.contains("88112233"), "{reason}");
    assert_eq!(r.app.attempts(&number).await[0].outcome, "refused");
}

#[tokio::test]
async fn insufficient_balance_is_retried_and_the_order_delivered_once_the_wallet_is_funded() {
    let r = spawn(&[]).await;
    mount_token(&r.server, "token-1", None).await;
    let number = r.app.paid_order_in_db(PHONE).await;
    mount_submit(&r.server, "token-1", error(400, "INSUFFICIENT_BALANCE", "Insufficient balance"), 1).await;
    mount_lookup(&r.server, &number, report(vec![]), 1).await;
    mount_submit(&r.server, "token-1", answered(&number, "SUCCESSFUL"), 1).await;
    assert_eq!(r.fulfil(&number).await, FulfilOutcome::Retrying);
    let order = r.app.order(&number).await;
    assert_eq!(order.status.as_str(), "recharging", "a refusal of our account, not of the order");
    assert!(order.failure_reason.unwrap_or_default().contains("fund the Reloadly account"));
    assert_eq!(r.retry(&number).await, FulfilOutcome::Delivered);
}

#[tokio::test]
async fn a_duplicate_custom_identifier_is_unknown_and_the_lookup_settles_it() {
    let r = spawn(&[]).await;
    mount_token(&r.server, "token-1", None).await;
    let number = r.app.paid_order_in_db(PHONE).await;
    // Reloadly's answer to a reused customIdentifier is not documented: any such code is unknown.
    let duplicate = error(400, "DUPLICATED_CUSTOM_IDENTIFIER", "Custom identifier already used");
    mount_submit(&r.server, "token-1", duplicate, 1).await;
    mount_lookup(&r.server, &number, report(vec![transaction(&number, "SUCCESSFUL")]), 1).await;
    assert_eq!(r.fulfil(&number).await, FulfilOutcome::Retrying);
    assert_eq!(r.retry(&number).await, FulfilOutcome::Delivered);
}

#[tokio::test]
async fn malformed_answers_are_unknown_never_failed() {
    let garbage = || ResponseTemplate::new(200).set_body_string("<html>");
    let cases: Vec<(&str, ResponseTemplate)> = vec![
        ("not JSON", garbage()),
        ("no status", ResponseTemplate::new(200).set_body_json(json!({"transactionId": 1}))),
        ("an unknown status", ResponseTemplate::new(200).set_body_json(json!({"status": "ON_HOLD"}))),
        ("an error without a code", ResponseTemplate::new(400).set_body_json(json!({"message": "Bad Request"}))),
    ];
    for (case, submit) in cases {
        let r = spawn(&[]).await;
        mount_token(&r.server, "token-1", None).await;
        let number = r.app.paid_order_in_db(PHONE).await;
        mount_submit(&r.server, "token-1", submit, 1).await;
        mount_lookup(&r.server, &number, garbage(), 1).await;
        assert_eq!(r.fulfil(&number).await, FulfilOutcome::Retrying, "{case}");
        assert_eq!(r.retry(&number).await, FulfilOutcome::Retrying, "{case}: an unreadable lookup proves nothing");
        assert_eq!(r.status(&number).await, "recharging", "{case}");
    }
    // An unreadable token answer: nothing is sent, nothing is failed.
    let r = spawn(&[]).await;
    Mock::given(method("POST")).and(path("/oauth/token")).respond_with(garbage()).mount(&r.server).await;
    let number = r.app.paid_order_in_db(PHONE).await;
    assert_eq!(r.fulfil(&number).await, FulfilOutcome::Retrying);
    assert_eq!(r.requests_to("/topups").await, 0);
}

/// Everything logged on this thread while it lives (the tests' runtime runs every task here).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut all) = self.0.lock() {
            all.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        self.0.lock().map(|all| String::from_utf8_lossy(&all).into_owned()).unwrap_or_default()
    }
}

#[tokio::test]
async fn credentials_tokens_and_phone_numbers_stay_out_of_the_logs_and_the_records() {
    let r = spawn(&[("AUTO_REFUND_ON_FAILURE", "false")]).await;
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    mount_token(&r.server, "secret-token-aaa", Some(1)).await;
    mount_token(&r.server, "secret-token-bbb", Some(1)).await;
    let number = r.app.paid_order_in_db(PHONE).await;
    mount_submit(&r.server, "secret-token-aaa", error(401, "TOKEN_EXPIRED", "Token expired"), 1).await;
    let refusal = error(400, "INVALID_RECIPIENT_PHONE", "Phone 97688112233 (+976 8811 2233) is invalid");
    mount_submit(&r.server, "secret-token-bbb", refusal, 1).await;
    assert!(matches!(r.fulfil(&number).await, FulfilOutcome::Failed(_)));

    let logs = captured.text();
    assert!(logs.contains("carrier call"), "the capture works: {logs}");
    let order = r.app.order(&number).await;
    let mut recorded: Vec<String> = r.app.attempts(&number).await.into_iter().filter_map(|a| a.message).collect();
    recorded.extend(order.failure_reason);
    for text in std::iter::once(&logs).chain(recorded.iter()) {
        for secret in [CLIENT_SECRET, "secret-token-aaa", "secret-token-bbb", "88112233", "8811 2233"] {
            assert!(!text.contains(secret), "{secret} leaked into: {text}");
        }
    }
}
