use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{
    assert_error, mount_unified_order, paid_notification, spawn_app, spawn_app_with, unified_order_success, TestApp,
    ENV_ID, MCH_ID, OPENID, OTHER_OPENID,
};

async fn create_payment(app: &TestApp, order_number: &str) -> reqwest::Response {
    app.post_as("/payment/create", OPENID, &json!({"orderNumber": order_number})).await
}

#[tokio::test]
async fn create_payment_sends_the_exact_unified_order_request_and_returns_the_payment_params() {
    let app = spawn_app().await;
    let number = app.place_order(OPENID).await;
    Mock::given(method("POST"))
        .and(path("/_/pay/unifiedOrder"))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({
            "body": "Unitel 5,000 MNT",
            "openid": OPENID,
            "out_trade_no": number,
            "spbill_create_ip": "59.37.125.120",
            "env_id": ENV_ID,
            "sub_mch_id": MCH_ID,
            "total_fee": 1200,
            "callback_type": 2,
            "container": {"service": "pay", "path": format!("/payment/callback/{number}")}
        })))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(unified_order_success()).insert_header("x-openapi-seqid", "seq-1"),
        )
        .expect(1)
        .mount(&app.wechat)
        .await;

    let response = app
        .as_user(app.client.post(app.url("/payment/create")), OPENID)
        .header("X-Original-Forwarded-For", "59.37.125.120, 10.0.0.1")
        .header("X-Forwarded-For", "1.1.1.1")
        .json(&json!({"orderNumber": number}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let params: Value = response.json().await.unwrap();
    assert_eq!(
        params,
        json!({"appId": "wxd2565e6a04246fd1", "timeStamp": "1647841885", "nonceStr": "BfM1ojiTfFCbpmkL",
            "package": "prepay_id=wx29415831e6a111ccb805125015a7282000", "signType": "MD5",
            "paySign": "038EE415FD025B0D37717E8A1D6C34B6"})
    );
    let order = app.order(&number).await;
    assert_eq!(order.prepay_id.as_deref(), Some("wx29415831e6a111ccb805125015a7282000"));
    assert_eq!(order.status.as_str(), "unpaid");
}

#[tokio::test]
async fn the_client_ip_falls_back_to_x_forwarded_for_then_to_the_configured_ip() {
    let app = spawn_app().await;
    mount_unified_order(&app, ResponseTemplate::new(200).set_body_json(unified_order_success()), 2).await;
    let first = app.place_order(OPENID).await;
    let response = app
        .as_user(app.client.post(app.url("/payment/create")), OPENID)
        .header("X-Forwarded-For", "1.2.3.4")
        .json(&json!({"orderNumber": first}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let second = app.place_order(OPENID).await;
    assert_eq!(create_payment(&app, &second).await.status(), StatusCode::OK);

    let requests = app.wechat.received_requests().await.unwrap();
    let ips: Vec<String> = requests
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["spbill_create_ip"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ips, vec!["1.2.3.4", "10.9.8.7"]);
}

#[tokio::test]
async fn paying_again_reuses_the_prepay_still_valid() {
    let app = spawn_app().await;
    mount_unified_order(&app, ResponseTemplate::new(200).set_body_json(unified_order_success()), 1).await;
    let number = app.place_order(OPENID).await;
    let first: Value = create_payment(&app, &number).await.json().await.unwrap();
    let second: Value = create_payment(&app, &number).await.json().await.unwrap();
    assert_eq!(first, second);
}

#[tokio::test]
async fn another_users_or_an_unknown_order_is_404_without_calling_wechat() {
    let app = spawn_app().await;
    mount_unified_order(&app, ResponseTemplate::new(200).set_body_json(unified_order_success()), 0).await;
    let number = app.place_order(OPENID).await;
    let response = app.post_as("/payment/create", OTHER_OPENID, &json!({"orderNumber": number})).await;
    assert_error(response, StatusCode::NOT_FOUND, "ORDER_NOT_FOUND").await;
    let response = create_payment(&app, "ORD0000000000000zzzz").await;
    assert_error(response, StatusCode::NOT_FOUND, "ORDER_NOT_FOUND").await;
}

#[tokio::test]
async fn a_paid_order_is_not_payable_again() {
    let app = spawn_app().await;
    mount_unified_order(&app, ResponseTemplate::new(200).set_body_json(unified_order_success()), 0).await;
    let number = app.place_order(OPENID).await;
    app.deliver_callback(&number, &paid_notification(&number)).await;
    let response = create_payment(&app, &number).await;
    assert_error(response, StatusCode::CONFLICT, "ORDER_NOT_PAYABLE").await;
}

#[tokio::test]
async fn a_missing_order_number_is_a_json_error() {
    let app = spawn_app().await;
    let response = app.post_as("/payment/create", OPENID, &json!({})).await;
    assert_error(response, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_BODY").await;
}

/// Each upstream failure → 502 `WECHAT_ERROR` with the platform's words, and nothing stored.
async fn assert_upstream_failure(response: ResponseTemplate, expected_in_message: &str) {
    let app = spawn_app().await;
    mount_unified_order(&app, response, 1).await;
    let number = app.place_order(OPENID).await;
    let body = assert_error(create_payment(&app, &number).await, StatusCode::BAD_GATEWAY, "WECHAT_ERROR").await;
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(expected_in_message), "{message:?} lacks {expected_in_message:?}");
    let order = app.order(&number).await;
    assert_eq!(order.status.as_str(), "unpaid");
    assert_eq!(order.prepay_id, None);
    assert_eq!(order.prepay_params, None);
}

#[tokio::test]
async fn an_upstream_5xx_is_a_wechat_error() {
    assert_upstream_failure(ResponseTemplate::new(503), "HTTP 503").await;
}

#[tokio::test]
async fn a_non_zero_errcode_is_a_wechat_error_with_its_errmsg() {
    let body = json!({"errcode": -606001, "errmsg": "open api not authorized"});
    assert_upstream_failure(ResponseTemplate::new(200).set_body_json(body), "open api not authorized").await;
}

#[tokio::test]
async fn result_code_fail_is_a_wechat_error_even_with_a_payment_object() {
    let body = json!({"errcode": 0, "errmsg": "ok", "respdata": {
        "return_code": "SUCCESS", "return_msg": "OK", "result_code": "FAIL",
        "err_code": "PARAM_ERROR", "err_code_des": "无效的openid",
        "payment": {"appId": "wx1", "timeStamp": "1", "nonceStr": "n", "package": "prepay_id=", "signType": "MD5", "paySign": "s"}}});
    assert_upstream_failure(ResponseTemplate::new(200).set_body_json(body), "PARAM_ERROR 无效的openid").await;
}

#[tokio::test]
async fn return_code_fail_is_a_wechat_error() {
    let body =
        json!({"errcode": 0, "errmsg": "ok", "respdata": {"return_code": "FAIL", "return_msg": "受理关系不存在"}});
    assert_upstream_failure(ResponseTemplate::new(200).set_body_json(body), "受理关系不存在").await;
}

#[tokio::test]
async fn success_without_a_prepay_id_is_a_wechat_error() {
    let mut body = unified_order_success();
    body["respdata"]["prepay_id"] = json!("");
    body["respdata"]["payment"]["package"] = json!("prepay_id=");
    assert_upstream_failure(ResponseTemplate::new(200).set_body_json(body), "prepay").await;
}

#[tokio::test]
async fn an_upstream_timeout_is_a_wechat_error() {
    let slow = ResponseTemplate::new(200).set_body_json(unified_order_success()).set_delay(Duration::from_millis(1500));
    assert_upstream_failure(slow, "in time").await;
}

#[tokio::test]
async fn a_garbage_answer_is_a_wechat_error() {
    assert_upstream_failure(ResponseTemplate::new(200).set_body_string("<html>oops</html>"), "cannot be read").await;
}

#[tokio::test]
async fn an_empty_answer_points_at_the_open_api_switch() {
    assert_upstream_failure(ResponseTemplate::new(200), "open API service").await;
}

#[tokio::test]
async fn a_redirect_is_a_wechat_error_not_followed() {
    assert_upstream_failure(ResponseTemplate::new(302).insert_header("location", "/elsewhere"), "HTTP 302").await;
}

#[tokio::test]
async fn sandbox_mode_answers_fake_parameters_without_calling_wechat() {
    let app = spawn_app_with(&[("PAYMENT_SANDBOX", "true")]).await;
    mount_unified_order(&app, ResponseTemplate::new(200).set_body_json(unified_order_success()), 0).await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(500)).expect(0).mount(&app.wechat).await;
    let number = app.place_order(OPENID).await;
    let response = create_payment(&app, &number).await;
    assert_eq!(response.status(), StatusCode::OK);
    let params: Value = response.json().await.unwrap();
    assert!(params["paySign"].as_str().unwrap().starts_with("SANDBOX"), "{params}");
    assert!(params["package"].as_str().unwrap().starts_with("prepay_id=sandbox_"), "{params}");
    assert!(params["timeStamp"].is_string());
}
