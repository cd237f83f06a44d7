//! Requests that once stopped the process: each must answer 400 and leave the service serving.

use reqwest::StatusCode;

use crate::helpers::{assert_error, spawn_app, OPENID};

async fn assert_still_serving(app: &crate::helpers::TestApp) {
    let health = app.client.get(app.url("/health")).send().await.expect("the service still answers");
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_page_beyond_any_offset_is_refused_not_a_crash() {
    let app = spawn_app().await;
    let huge = "page=9223372036854775809&pageSize=1";
    let mine = app.get_as(&format!("/orders?{huge}"), OPENID).await;
    assert_error(mine, StatusCode::BAD_REQUEST, "INVALID_REQUEST").await;
    for path in ["/admin/orders", "/admin/alerts"] {
        let response = app.admin_get(&format!("{path}?{huge}")).await;
        assert_error(response, StatusCode::BAD_REQUEST, "INVALID_REQUEST").await;
    }
    let too_far = app.get_as("/orders?page=1000001", OPENID).await;
    assert_error(too_far, StatusCode::BAD_REQUEST, "INVALID_REQUEST").await;
    let last = app.get_as("/orders?page=1000000&pageSize=100", OPENID).await;
    assert_eq!(last.status(), StatusCode::OK, "the largest page is an empty page");
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn a_day_far_outside_the_calendar_is_refused_not_a_crash() {
    let app = spawn_app().await;
    for path in [
        "/admin/stats?from=-262143-01-01",
        "/admin/stats?to=-262143-01-01",
        "/admin/stats?to=2000-01-01",
        "/admin/reconciliation?date=-262143-01-01",
        "/admin/reconciliation?date=+262142-12-31",
    ] {
        let response = app.admin_get(path).await;
        if path == "/admin/stats?to=2000-01-01" {
            assert_eq!(response.status(), StatusCode::OK, "the first day is a valid range end");
            continue;
        }
        assert_error(response, StatusCode::BAD_REQUEST, "INVALID_REQUEST").await;
    }
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn an_order_number_with_a_multibyte_character_is_unknown_not_a_crash() {
    let app = spawn_app().await;
    let number = "ORD176390000000\u{e9}abc";
    let response = app.deliver_callback(number, &crate::helpers::paid_notification(number)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["errcode"], 0);
    assert_eq!(app.events(number).await[0].outcome, "unknown_order");
    assert_still_serving(&app).await;
}

/// Reads whatever the server sends until it closes the connection, or gives up after `limit`.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, limit: std::time::Duration) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| String::from_utf8_lossy(&seen).into_owned())
}

fn host_of(app: &crate::helpers::TestApp) -> String {
    app.address.trim_start_matches("http://").to_string()
}

#[tokio::test]
async fn a_client_that_sends_its_headers_slowly_is_cut_off() {
    use tokio::io::AsyncWriteExt;
    let app = crate::helpers::spawn_app_with(&[("HTTP_HEADER_TIMEOUT_SECONDS", "1")]).await;
    let mut stream = tokio::net::TcpStream::connect(host_of(&app)).await.unwrap();
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    // Never finishes its headers: the server must hang up on its own, long before the test's limit.
    let answer = read_until_closed(&mut stream, std::time::Duration::from_secs(5)).await;
    assert!(answer.is_some(), "the connection was still held after 5 s");
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn a_client_that_sends_its_body_slowly_gets_408() {
    use tokio::io::AsyncWriteExt;
    let app = crate::helpers::spawn_app_with(&[("HTTP_BODY_TIMEOUT_SECONDS", "1")]).await;
    let mut stream = tokio::net::TcpStream::connect(host_of(&app)).await.unwrap();
    let head = format!(
        "POST /orders HTTP/1.1\r\nHost: x\r\nX-Mock-Openid: {OPENID}\r\nContent-Type: application/json\r\nContent-Length: 50000\r\n\r\n{{\"p"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut stream, std::time::Duration::from_secs(5)).await.expect("answered in time");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("REQUEST_TIMEOUT"), "{answer}");
    assert_eq!(app.order_count().await, 0);
}

#[tokio::test]
async fn the_console_and_swagger_ui_carry_security_headers() {
    let app = spawn_app().await;
    for path in ["/console", "/api/", "/console/app.js"] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers();
        let csp = headers.get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'self'"), "{path}: {csp}");
        assert_eq!(headers.get("x-content-type-options").unwrap(), "nosniff", "{path}");
        assert_eq!(headers.get("referrer-policy").unwrap(), "no-referrer", "{path}");
        assert_eq!(headers.get("x-frame-options").unwrap(), "DENY", "{path}");
    }
}

#[tokio::test]
async fn an_unmatched_path_gets_a_json_404_with_a_request_id() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/no/such/thing")).header("x-request-id", "probe-1").send().await.unwrap();
    assert_eq!(response.headers().get("x-request-id").unwrap(), "probe-1", "it went through the logging layer");
    assert_error(response, StatusCode::NOT_FOUND, "NOT_FOUND").await;
}

#[tokio::test]
async fn the_api_document_can_be_switched_off() {
    let app = crate::helpers::spawn_app_with(&[("API_DOCS", "false")]).await;
    let response = app.client.get(app.url("/api/openapi.json")).send().await.unwrap();
    assert_error(response, StatusCode::NOT_FOUND, "NOT_FOUND").await;
}

#[tokio::test]
async fn order_creation_is_limited_per_buyer_with_retry_after() {
    let app = crate::helpers::spawn_app_with(&[("RATE_LIMIT_ORDERS_PER_MINUTE", "2")]).await;
    let body = serde_json::json!({"productId": 1, "phoneNumber": "+97688112233"});
    for _ in 0..2 {
        assert_eq!(app.post_as("/orders", OPENID, &body).await.status(), StatusCode::CREATED);
    }
    let limited = app.post_as("/orders", OPENID, &body).await;
    let retry_after: u64 = limited.headers().get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_error(limited, StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED").await;
    assert_eq!(app.order_count().await, 2);
    let other = app.post_as("/orders", crate::helpers::OTHER_OPENID, &body).await;
    assert_eq!(other.status(), StatusCode::CREATED, "another buyer is not affected");
}

#[tokio::test]
async fn callbacks_cannot_make_the_service_query_wechat_without_limit() {
    let app = crate::helpers::spawn_app_with(&[("RATE_LIMIT_CALLBACK_QUERIES_PER_MINUTE", "1")]).await;
    crate::helpers::mount_wechat(&app, "queryorder", crate::helpers::query_order_answer("NOTPAY", 1200), 1).await;
    let number = app.place_order(OPENID).await;
    let forged = crate::helpers::paid_notification(&number);
    assert_eq!(app.deliver_callback(&number, &forged).await.status(), StatusCode::OK);
    let limited = app.deliver_callback(&number, &forged).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: serde_json::Value = limited.json().await.unwrap();
    assert_ne!(body["errcode"], 0, "the platform must redeliver a genuine one later");
    assert_eq!(app.order(&number).await.status.as_str(), "unpaid");
}

#[tokio::test]
async fn unauthenticated_requests_are_limited_per_address() {
    let app = crate::helpers::spawn_app_with(&[("RATE_LIMIT_PUBLIC_PER_MINUTE", "2")]).await;
    let get =
        |address: &'static str| app.client.get(app.url("/products")).header("X-Original-Forwarded-For", address).send();
    for _ in 0..2 {
        assert_eq!(get("203.0.113.7").await.unwrap().status(), StatusCode::OK);
    }
    assert_error(get("203.0.113.7").await.unwrap(), StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED").await;
    assert_eq!(get("203.0.113.8").await.unwrap().status(), StatusCode::OK, "another address is not affected");
    // Guessing the admin token counts against the address too.
    let guess =
        app.client.get(app.url("/admin/orders")).bearer_auth("guess").header("X-Original-Forwarded-For", "203.0.113.7");
    assert_error(guess.send().await.unwrap(), StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED").await;
    // A verified caller is not limited by address.
    assert_eq!(app.get_as("/orders", OPENID).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_nul_byte_in_a_callback_path_or_body_is_stored_and_answered() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/payment/callback/ORD%00x"))
        .header("X-WX-SOURCE", "wx_callback")
        .header("content-type", "application/json")
        .body(b"{\"returnCode\":\"SUCCESS\"}\0".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST, "malformed, not a database error");
    assert_eq!(app.events("ORD\u{fffd}x").await[0].outcome, "malformed");
    assert_still_serving(&app).await;
}
