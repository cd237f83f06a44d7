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
