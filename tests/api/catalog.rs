use reqwest::StatusCode;
use serde_json::{json, Value};
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{
    assert_error, carrier_answer, mount_query, paid_notification, spawn_app, spawn_app_with, TestApp, OPENID,
};

async fn patch(app: &TestApp, id: i32, body: &Value) -> reqwest::Response {
    app.client
        .patch(app.url(&format!("/admin/products/{id}")))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn on_sale(app: &TestApp) -> Vec<Value> {
    app.client.get(app.url("/products")).send().await.unwrap().json().await.unwrap()
}

async fn order_for(app: &TestApp, product_id: i32) -> reqwest::Response {
    app.post_as("/orders", OPENID, &json!({"productId": product_id, "phoneNumber": "+97688112233"})).await
}

async fn changes(app: &TestApp, id: i32) -> Vec<Value> {
    app.admin_get(&format!("/admin/products/{id}/changes")).await.json().await.unwrap()
}

#[tokio::test]
async fn an_operator_creates_a_product_changes_its_price_and_disables_it_and_buyers_see_each_at_once() {
    let app = spawn_app().await;
    let id = app.create_product(&json!({"name": "Mobicom 3,000 MNT", "price": "7.50", "faceValue": "3000"})).await;
    let listed = on_sale(&app).await;
    let product = listed.iter().find(|p| p["id"] == id).expect("listed at once");
    assert_eq!((product["price"].as_str(), product["country"].as_str()), (Some("7.50"), Some("MN")));

    let first = order_for(&app, id).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["amount"], "7.50");

    let changed = patch(&app, id, &json!({"price": "8.00", "name": "Mobicom 3,000 MNT (new)"})).await;
    assert_eq!(changed.status(), StatusCode::OK);
    let second: Value = order_for(&app, id).await.json().await.unwrap();
    assert_eq!(second["amount"], "8.00", "a new order is placed at the new price");
    let kept = app.order(first["orderNumber"].as_str().unwrap()).await;
    let kept_amount = wxtopup::domain::Money::from_stored(kept.amount).to_string();
    assert_eq!(kept_amount, "7.50", "an existing order keeps what it was sold for");
    assert_eq!(kept.product_name, "Mobicom 3,000 MNT");

    assert_eq!(patch(&app, id, &json!({"enabled": false})).await.status(), StatusCode::OK);
    assert!(!on_sale(&app).await.iter().any(|p| p["id"] == id), "disabled: no longer listed");
    assert_error(order_for(&app, id).await, StatusCode::CONFLICT, "PRODUCT_UNAVAILABLE").await;
    let all: Vec<Value> = app.admin_get("/admin/products").await.json().await.unwrap();
    let disabled = all.iter().find(|p| p["id"] == id).expect("operators still see it");
    assert_eq!(disabled["enabled"], false);
    assert_error(order_for(&app, 99_999).await, StatusCode::NOT_FOUND, "PRODUCT_NOT_FOUND").await;

    let log = changes(&app, id).await;
    let actions: Vec<&str> = log.iter().map(|c| c["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["updated", "updated", "created"], "newest first");
    assert_eq!(log[1]["before"]["price"], "7.50");
    assert_eq!(log[1]["after"]["price"], "8.00");
    assert_eq!(log[0]["after"]["enabled"], false);
    assert!(log.iter().all(|c| c["actor"] == "admin"));
    assert!(log[2]["before"].is_null());
}

#[tokio::test]
async fn the_carrier_is_sent_the_reference_and_country_the_order_was_placed_with() {
    let app = spawn_app().await;
    let id = app.create_product(&json!({"code": "OWN-CODE", "carrierReference": "CARRIER-SKU-17"})).await;
    let number: Value = order_for(&app, id).await.json().await.unwrap();
    let number = number["orderNumber"].as_str().unwrap().to_string();
    // Changed after the order: the order keeps the reference it was placed with.
    assert_eq!(patch(&app, id, &json!({"carrierReference": "CARRIER-SKU-99"})).await.status(), StatusCode::OK);
    let order = app.order(&number).await;
    assert_eq!(
        (order.carrier_reference.as_deref(), order.country.as_deref(), order.product_code.as_str()),
        (Some("CARRIER-SKU-17"), Some("MN"), "OWN-CODE")
    );
    Mock::given(method("POST"))
        .and(path("/topups"))
        .and(body_partial_json(json!({"reference": number, "productCode": "CARRIER-SKU-17"})))
        .respond_with(ResponseTemplate::new(200).set_body_json(carrier_answer("success")))
        .expect(1)
        .mount(&app.carrier)
        .await;
    mount_query(&app, ResponseTemplate::new(200).set_body_json(carrier_answer("success")), 0).await;
    assert_eq!(app.deliver_callback(&number, &paid_notification(&number)).await.status(), StatusCode::OK);
    app.wait_for_status(&number, "success").await;
}

#[tokio::test]
async fn a_bad_product_is_refused_with_its_field_named_and_nothing_is_written() {
    let app = spawn_app().await;
    let id = app.create_product(&json!({})).await;
    let products_before = app.admin_get("/admin/products").await.json::<Vec<Value>>().await.unwrap().len();
    let changes_before = changes(&app, id).await.len();
    let base = json!({"code": "NEW-1", "name": "n", "price": "1.00", "faceValue": "1", "faceCurrency": "MNT",
        "country": "MN", "carrier": "c", "carrierReference": "r"});
    for (field, value, code) in [
        ("price", json!("0"), "INVALID_REQUEST"),
        ("price", json!("1.234"), "INVALID_REQUEST"),
        ("faceValue", json!("-5"), "INVALID_REQUEST"),
        ("country", json!("mn"), "INVALID_REQUEST"),
        ("faceCurrency", json!("MONGOLIAN"), "INVALID_REQUEST"),
        ("name", json!("   "), "INVALID_REQUEST"),
        ("code", json!("has space"), "INVALID_REQUEST"),
        ("sortOrder", json!(-1), "INVALID_REQUEST"),
    ] {
        let mut body = base.clone();
        body[field] = value;
        let refused =
            assert_error(app.admin_post_json("/admin/products", &body).await, StatusCode::BAD_REQUEST, code).await;
        assert!(refused["message"].as_str().unwrap().starts_with(field), "{field}: {refused}");
        let refused =
            assert_error(patch(&app, id, &json!({field: body[field]})).await, StatusCode::BAD_REQUEST, code).await;
        assert!(refused["message"].as_str().unwrap().starts_with(field), "{field}: {refused}");
    }
    let mut unknown = base.clone();
    unknown["prise"] = json!("1.00");
    assert_error(
        app.admin_post_json("/admin/products", &unknown).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_BODY",
    )
    .await;
    assert_error(patch(&app, id, &json!({"prise": "1.00"})).await, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_BODY")
        .await;
    let mut taken = base.clone();
    taken["code"] = json!("UNITEL-5000");
    assert_error(app.admin_post_json("/admin/products", &taken).await, StatusCode::CONFLICT, "PRODUCT_CODE_TAKEN")
        .await;
    assert_error(patch(&app, id, &json!({"code": "UNITEL-5000"})).await, StatusCode::CONFLICT, "PRODUCT_CODE_TAKEN")
        .await;
    assert_error(patch(&app, 99_999, &json!({"price": "1.00"})).await, StatusCode::NOT_FOUND, "PRODUCT_NOT_FOUND")
        .await;

    assert_eq!(app.admin_get("/admin/products").await.json::<Vec<Value>>().await.unwrap().len(), products_before);
    assert_eq!(changes(&app, id).await.len(), changes_before);
    let unchanged = patch(&app, id, &json!({"price": "12.00"})).await;
    assert_eq!(unchanged.status(), StatusCode::OK);
    assert_eq!(changes(&app, id).await.len(), changes_before, "a change that changes nothing is not recorded");
}

#[tokio::test]
async fn the_operator_sets_the_order_buyers_see_and_must_list_every_product_once() {
    let app = spawn_app().await;
    let all: Vec<Value> = app.admin_get("/admin/products").await.json().await.unwrap();
    let mut ids: Vec<i64> = all.iter().map(|p| p["id"].as_i64().unwrap()).collect();
    ids.reverse();
    let reordered = app.admin_post_json("/admin/products/reorder", &json!({"ids": ids})).await;
    assert_eq!(reordered.status(), StatusCode::OK);
    let listed: Vec<i64> = on_sale(&app).await.iter().map(|p| p["id"].as_i64().unwrap()).collect();
    assert_eq!(listed, ids);
    let first = i32::try_from(ids[0]).unwrap();
    assert_eq!(changes(&app, first).await[0]["action"], "reordered");

    for bad in [json!({"ids": &ids[1..]}), json!({"ids": [ids[0], ids[0]]}), json!({"ids": [99_999]})] {
        assert_error(
            app.admin_post_json("/admin/products/reorder", &bad).await,
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        )
        .await;
    }
    let still: Vec<i64> = on_sale(&app).await.iter().map(|p| p["id"].as_i64().unwrap()).collect();
    assert_eq!(still, ids, "a refused reorder changes nothing");
}

#[tokio::test]
async fn production_starts_with_an_empty_catalog_and_development_with_the_demo() {
    let development = spawn_app().await;
    let demo: Vec<String> =
        on_sale(&development).await.iter().map(|p| p["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(demo.len(), 4, "{demo:?}");

    let production = spawn_app_with(&[("APP_ENV", "production"), ("ADMIN_TOKEN", "")]).await;
    assert_eq!(on_sale(&production).await, Vec::<Value>::new());
    // The removal is recorded, for whoever wonders where the demo went.
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let removed = wxtopup::entities::catalog_change::Entity::find()
        .filter(wxtopup::entities::catalog_change::Column::Action.eq("demo_removed"))
        .all(&production.db)
        .await
        .unwrap();
    assert_eq!(removed.len(), 4);
}

#[tokio::test]
async fn a_demo_product_that_was_ordered_is_kept_in_production() {
    let development = spawn_app().await;
    development.place_order(OPENID).await;
    let mut first = development;
    // The same database, now started in production.
    let production = first.spawn_replica_with(&[("APP_ENV", "production"), ("ADMIN_TOKEN", "")]).await;
    first.stop().await;
    let names: Vec<Value> = on_sale(&production).await;
    assert_eq!(names.len(), 1, "only the ordered demo product stays: {names:?}");
    assert_eq!(names[0]["id"], 1);
}

/// Orders placed at the same moment are placed together where the database allows (one INSERT of
/// many rows on MySQL and PostgreSQL, one commit on SQLite): each still gets its own product's price
/// and snapshot, and a missing or disabled product is refused for its own order only.
#[tokio::test]
async fn orders_placed_at_once_each_get_their_own_product() {
    let app = spawn_app().await;
    let disabled = app.create_product(&json!({"name": "Disabled at once", "price": "3.00"})).await;
    assert_eq!(patch(&app, disabled, &json!({"enabled": false})).await.status(), StatusCode::OK);
    let wanted: Vec<i32> = (0..32).map(|i| [1, 2, 1, 99_999, 2, disabled, 1, 2][i % 8]).collect();

    let answers = futures::future::join_all(wanted.iter().enumerate().map(|(i, product)| {
        let buyer = format!("oAtOnceBuyer{i:02}");
        let app = &app;
        async move {
            let body = json!({"productId": product, "phoneNumber": "+97688112233"});
            let response = app.post_as("/orders", &buyer, &body).await;
            (response.status(), response.json::<Value>().await.unwrap(), buyer)
        }
    }))
    .await;

    let mut numbers = std::collections::HashSet::new();
    for ((status, body, buyer), product) in answers.iter().zip(&wanted) {
        match *product {
            99_999 => assert_eq!((*status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("PRODUCT_NOT_FOUND"))),
            p if p == disabled => {
                assert_eq!((*status, body["code"].as_str()), (StatusCode::CONFLICT, Some("PRODUCT_UNAVAILABLE")))
            }
            p => {
                assert_eq!(*status, StatusCode::CREATED, "{body}");
                assert_eq!(body["productId"], p);
                assert_eq!(body["amount"], if p == 1 { "12.00" } else { "23.00" });
                let number = body["orderNumber"].as_str().unwrap();
                assert!(numbers.insert(number.to_string()), "{number} answered twice");
                let stored = app.order(number).await;
                assert_eq!(
                    (stored.openid.as_str(), stored.product_id),
                    (buyer.as_str(), p),
                    "the stored row is the answer"
                );
            }
        }
    }
    assert_eq!(numbers.len(), 24);
}
