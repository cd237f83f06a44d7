use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashSet;

use crate::helpers::{assert_error, spawn_app, OPENID, OTHER_OPENID};

#[tokio::test]
async fn the_catalog_lists_active_products_with_prices_in_yuan() {
    let app = spawn_app().await;
    let products: Vec<Value> = app.client.get(app.url("/products")).send().await.unwrap().json().await.unwrap();
    assert!(products.len() >= 2);
    let first = &products[0];
    assert_eq!(first["id"], 1);
    assert_eq!(first["price"], "12.00");
    assert_eq!(first["faceValue"], "5000");
    assert_eq!(first["faceCurrency"], "MNT");
    assert_eq!(first["carrier"], "Unitel");
}

#[tokio::test]
async fn an_order_takes_its_price_from_the_product_not_the_client() {
    let app = spawn_app().await;
    let response = app
        .post_as(
            "/orders",
            OPENID,
            &json!({"productId": 2, "phoneNumber": "+97699001122", "amount": "0.01", "price": "0.01"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["amount"], "23.00");
    assert_eq!(body["status"], "unpaid");
    assert_eq!(body["productId"], 2);
    assert_eq!(body["phoneNumber"], "+97699001122");
    assert!(body["paidAt"].is_null());
    assert!(body["transactionId"].is_null());
    let number = body["orderNumber"].as_str().unwrap();
    let stored = app.order(number).await;
    assert_eq!(stored.amount.to_string().trim_end_matches('0').trim_end_matches('.'), "23");
    assert_eq!(stored.openid, OPENID);
}

#[tokio::test]
async fn order_numbers_have_the_documented_shape_and_are_unique() {
    let app = spawn_app().await;
    let mut seen = HashSet::new();
    for _ in 0..30 {
        let number = app.place_order(OPENID).await;
        assert_eq!(number.len(), 20);
        assert!(number.starts_with("ORD"));
        assert!(number[3..16].chars().all(|c| c.is_ascii_digit()));
        assert!(number[16..].chars().all(|c| c.is_ascii_alphanumeric()));
        assert!(seen.insert(number));
    }
}

#[tokio::test]
async fn invalid_phone_numbers_are_refused_and_nothing_is_written() {
    let app = spawn_app().await;
    for phone in ["12345", "1234567890123456", "+12-345-678", "abcdefg", "", "++1234567", " 12345678"] {
        let response = app.post_as("/orders", OPENID, &json!({"productId": 1, "phoneNumber": phone})).await;
        assert_error(response, StatusCode::BAD_REQUEST, "INVALID_PHONE_NUMBER").await;
    }
    assert_eq!(app.order_count().await, 0);
}

#[tokio::test]
async fn an_unknown_product_is_404() {
    let app = spawn_app().await;
    let response = app.post_as("/orders", OPENID, &json!({"productId": 999, "phoneNumber": "12345678"})).await;
    assert_error(response, StatusCode::NOT_FOUND, "PRODUCT_NOT_FOUND").await;
    assert_eq!(app.order_count().await, 0);
}

#[tokio::test]
async fn malformed_bodies_get_json_errors() {
    let app = spawn_app().await;
    let send = |body: &'static str, content_type: &'static str| {
        app.as_user(app.client.post(app.url("/orders")), OPENID).header("content-type", content_type).body(body).send()
    };
    assert_error(send("{not json", "application/json").await.unwrap(), StatusCode::BAD_REQUEST, "INVALID_JSON").await;
    assert_error(
        send(r#"{"productId":"one"}"#, "application/json").await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_BODY",
    )
    .await;
    assert_error(
        send(r#"{"productId":1}"#, "application/json").await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_BODY",
    )
    .await;
    assert_error(
        send(r#"{"productId":1,"phoneNumber":"12345678"}"#, "text/plain").await.unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UNSUPPORTED_MEDIA_TYPE",
    )
    .await;
    let huge = format!(r#"{{"productId":1,"phoneNumber":"12345678","pad":"{}"}}"#, "x".repeat(101 * 1024));
    let response = app
        .as_user(app.client.post(app.url("/orders")), OPENID)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE").await;
    assert_eq!(app.order_count().await, 0);
}

#[tokio::test]
async fn my_orders_are_listed_newest_first_and_paginated() {
    let app = spawn_app().await;
    let mut mine = Vec::new();
    for _ in 0..5 {
        mine.push(app.place_order(OPENID).await);
    }
    app.place_order(OTHER_OPENID).await;

    let page: Value = app.get_as("/orders?page=1&pageSize=2", OPENID).await.json().await.unwrap();
    assert_eq!(page["total"], 5);
    assert_eq!(page["page"], 1);
    assert_eq!(page["pageSize"], 2);
    let numbers: Vec<&str> =
        page["items"].as_array().unwrap().iter().map(|o| o["orderNumber"].as_str().unwrap()).collect();
    assert_eq!(numbers, vec![mine[4].as_str(), mine[3].as_str()]);

    let last: Value = app.get_as("/orders?page=3&pageSize=2", OPENID).await.json().await.unwrap();
    assert_eq!(last["items"].as_array().unwrap().len(), 1);
    assert_eq!(last["items"][0]["orderNumber"], mine[0].as_str());
}

#[tokio::test]
async fn page_parameters_out_of_range_are_400() {
    let app = spawn_app().await;
    for query in ["pageSize=101", "pageSize=0", "page=0", "page=abc", "pageSize=-1"] {
        let response = app.get_as(&format!("/orders?{query}"), OPENID).await;
        assert_error(response, StatusCode::BAD_REQUEST, "INVALID_REQUEST").await;
    }
    let response = app.get_as("/orders?pageSize=100", OPENID).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn another_users_order_is_not_found() {
    let app = spawn_app().await;
    let number = app.place_order(OPENID).await;
    let response = app.get_as(&format!("/orders/{number}"), OPENID).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["orderNumber"], number.as_str());

    let response = app.get_as(&format!("/orders/{number}"), OTHER_OPENID).await;
    assert_error(response, StatusCode::NOT_FOUND, "ORDER_NOT_FOUND").await;
    let response = app.get_as("/orders/ORD0000000000000zzzz", OPENID).await;
    assert_error(response, StatusCode::NOT_FOUND, "ORDER_NOT_FOUND").await;
}

#[tokio::test]
async fn a_misspelt_query_parameter_is_refused_not_ignored() {
    let app = spawn_app().await;
    let mistyped = app.get_as("/orders?pagesize=5", OPENID).await;
    let body = assert_error(mistyped, StatusCode::BAD_REQUEST, "INVALID_REQUEST").await;
    assert!(body["message"].as_str().unwrap().contains("pagesize"), "{body}");
    let number = app.place_order(OPENID).await;
    let refresh = app.get_as(&format!("/orders/{number}?refesh=true"), OPENID).await;
    assert_error(refresh, StatusCode::BAD_REQUEST, "INVALID_REQUEST").await;
    for path in [
        "/admin/orders?state=failed",
        "/admin/alerts?size=5",
        "/admin/reconciliation?day=2026-01-01",
        "/admin/stats?since=2026-01-01",
    ] {
        assert_error(app.admin_get(path).await, StatusCode::BAD_REQUEST, "INVALID_REQUEST").await;
    }
}

#[tokio::test]
async fn with_a_reuse_window_a_second_tap_without_a_key_gets_the_unpaid_order_back() {
    let app = crate::helpers::spawn_app_with(&[("ORDER_REUSE_WINDOW_SECONDS", "60")]).await;
    let body = serde_json::json!({"productId": 1, "phoneNumber": "+97688112233"});
    let first = app.post_as("/orders", OPENID, &body).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: serde_json::Value = first.json().await.unwrap();
    let again = app.post_as("/orders", OPENID, &body).await;
    assert_eq!(again.status(), StatusCode::OK, "handed back, not created");
    assert_eq!(again.json::<serde_json::Value>().await.unwrap()["orderNumber"], first["orderNumber"]);
    let other_number = serde_json::json!({"productId": 1, "phoneNumber": "+97688119999"});
    assert_eq!(app.post_as("/orders", OPENID, &other_number).await.status(), StatusCode::CREATED);
    assert_eq!(app.post_as("/orders", crate::helpers::OTHER_OPENID, &body).await.status(), StatusCode::CREATED);
    assert_eq!(app.order_count().await, 3);

    let off = crate::helpers::spawn_app().await;
    for _ in 0..2 {
        assert_eq!(off.post_as("/orders", OPENID, &body).await.status(), StatusCode::CREATED);
    }
    assert_eq!(off.order_count().await, 2, "off by default: each tap without a key is an order");
}

/// Placing an order writes one row and reads nothing back: the answer is built from what was written
/// and is exactly what the database holds (MySQL has no `RETURNING`; the id comes with the INSERT's
/// answer instead of a second query).
#[tokio::test]
async fn placing_an_order_is_one_insert_with_no_read_back() {
    let app = spawn_app().await;
    let mut db = wxtopup::app::connect(&app.database_url).await.unwrap();
    let statements = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = statements.clone();
    db.set_metric_callback(move |info| {
        let words: Vec<&str> = info.statement.sql.split_whitespace().take(3).collect();
        log.lock().unwrap().push(words.join(" "));
    });
    let phone = wxtopup::domain::PhoneNumber::parse("+8613800000000").unwrap();
    let placed = wxtopup::services::orders::place_order(&db, OPENID, app.product_id, &phone).await.unwrap();

    let statements = statements.lock().unwrap().clone();
    let insert = statements.iter().position(|s| s.starts_with("INSERT")).expect("an INSERT");
    assert_eq!(statements.len(), insert + 1, "nothing runs after the INSERT: {statements:?}");
    assert_eq!(placed, app.order(&placed.order_number).await);
}
