use rand::distr::Alphanumeric;
use rand::Rng;
use reqwest::StatusCode;
use sea_orm::{ColumnTrait, ConnectionTrait, Database, DatabaseConnection, EntityTrait, QueryFilter};
use serde_json::{json, Value};
use std::collections::HashMap;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};
use wxtopup::app::Application;
use wxtopup::config::Settings;
use wxtopup::entities::{order, payment_event};

pub const MCH_ID: &str = "1712734762";
pub const ENV_ID: &str = "prod-test-env";
pub const OPENID: &str = "oZp5njTTsWaCeEoXi14oeOVCKlik";
pub const OTHER_OPENID: &str = "oOtherUser000000000000000000";

pub struct TestApp {
    pub address: String,
    pub db: DatabaseConnection,
    pub wechat: MockServer,
    pub client: reqwest::Client,
    pub production: bool,
    _sqlite_dir: Option<tempfile::TempDir>,
}

/// A development-mode application talking to the fake WeChat (sandbox off).
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// As [`spawn_app`], with settings overridden (e.g. `("APP_ENV", "production")`).
pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    let wechat = MockServer::start().await;
    let (database_url, sqlite_dir) = fresh_database().await;
    let mut vars: HashMap<String, String> = [
        ("APP_ENV", "development"),
        ("PORT", "0"),
        ("PAYMENT_SANDBOX", "false"),
        ("WECHAT_MCH_ID", MCH_ID),
        ("WECHAT_ENV_ID", ENV_ID),
        ("WECHAT_PAYMENT_CALLBACK_SERVICE", "pay"),
        ("WECHAT_PAYMENT_SERVER_IP", "10.9.8.7"),
        ("WECHAT_TIMEOUT_MS", "500"),
        ("RUST_LOG", "off"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    vars.insert("DATABASE_URL".into(), database_url);
    vars.insert("WECHAT_API_BASE".into(), wechat.uri());
    for (k, v) in overrides {
        vars.insert(k.to_string(), v.to_string());
    }
    let settings = Settings::from_vars(&vars).expect("test settings are valid");
    let production = settings.is_production();
    let application = Application::build(settings).await.expect("application starts");
    let address = format!("http://127.0.0.1:{}", application.port());
    let db = application.state().db.clone();
    tokio::spawn(application.run_until_stopped());
    TestApp { address, db, wechat, client: reqwest::Client::new(), production, _sqlite_dir: sqlite_dir }
}

/// A new, empty database: a temp SQLite file, or a new database on the server in `TEST_DATABASE_URL`.
/// A server that cannot be reached fails the test; nothing is skipped.
async fn fresh_database() -> (String, Option<tempfile::TempDir>) {
    let server = std::env::var("TEST_DATABASE_URL").ok().filter(|s| !s.is_empty());
    let Some(server) = server else {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
        return (url, Some(dir));
    };
    let name = format!(
        "wxtopup_t_{}",
        rand::rng().sample_iter(&Alphanumeric).take(12).map(char::from).collect::<String>().to_lowercase()
    );
    let server = server.trim_end_matches('/');
    let admin_url = if server.starts_with("postgres") { format!("{server}/postgres") } else { server.to_string() };
    let admin = Database::connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("TEST_DATABASE_URL={server} is set but the server cannot be reached: {e}"));
    admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.expect("create test database");
    admin.close().await.ok();
    (format!("{server}/{name}"), None)
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// The headers `wx.cloud.callContainer` adds for `openid`.
    pub fn as_user(&self, request: reqwest::RequestBuilder, openid: &str) -> reqwest::RequestBuilder {
        if self.production {
            request.header("X-WX-OPENID", openid).header("X-WX-SOURCE", "wx_client")
        } else {
            request.header("X-WX-OPENID", openid)
        }
    }

    pub async fn get_as(&self, path: &str, openid: &str) -> reqwest::Response {
        self.as_user(self.client.get(self.url(path)), openid).send().await.expect("request sent")
    }

    pub async fn post_as(&self, path: &str, openid: &str, body: &Value) -> reqwest::Response {
        self.as_user(self.client.post(self.url(path)), openid).json(body).send().await.expect("request sent")
    }

    /// Places an order for product 1 (12.00 yuan) as `openid` and returns its number.
    pub async fn place_order(&self, openid: &str) -> String {
        let response = self.post_as("/orders", openid, &json!({"productId": 1, "phoneNumber": "+97688112233"})).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        body["orderNumber"].as_str().unwrap().to_string()
    }

    /// Delivers a payment callback the way the platform does (with `X-WX-SOURCE`).
    pub async fn deliver_callback(&self, order_number: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/payment/callback/{order_number}")))
            .header("X-WX-SOURCE", "wx_callback")
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn order(&self, order_number: &str) -> order::Model {
        order::Entity::find()
            .filter(order::Column::OrderNumber.eq(order_number))
            .one(&self.db)
            .await
            .unwrap()
            .expect("order exists")
    }

    pub async fn order_count(&self) -> usize {
        order::Entity::find().all(&self.db).await.unwrap().len()
    }

    pub async fn events(&self, order_number: &str) -> Vec<payment_event::Model> {
        payment_event::Entity::find()
            .filter(payment_event::Column::OrderNumber.eq(order_number))
            .all(&self.db)
            .await
            .unwrap()
    }
}

/// A successful payment notification for a 12.00 yuan order, as the platform sends it.
pub fn paid_notification(order_number: &str) -> Value {
    json!({
        "returnCode": "SUCCESS", "appid": "wxd2565e6a04246fd1", "mchId": "1800780001",
        "subAppid": "wxd2565e6a04246fd1", "subMchId": MCH_ID, "nonceStr": "f6444fd22de27b16",
        "resultCode": "SUCCESS", "openid": "oPoo341Im-roYxAd3WD3D_6J-4bA", "isSubscribe": "N",
        "subOpenid": OPENID, "subIsSubscribe": "N", "tradeType": "JSAPI", "bankType": "OTHERS",
        "totalFee": 1200, "feeType": "CNY", "cashFee": 1200,
        "transactionId": "4200004561202203217657282768", "outTradeNo": order_number,
        "timeEnd": "20220321132007"
    })
}

/// The documented successful unifiedOrder answer.
pub fn unified_order_success() -> Value {
    json!({"errcode": 0, "errmsg": "ok", "respdata": {
        "return_code": "SUCCESS", "return_msg": "OK", "appid": "wxd2565e6a04246fd1", "mch_id": "1800780001",
        "sub_appid": "wxd2565e6a04246fd1", "sub_mch_id": MCH_ID, "nonce_str": "BfM1ojiTfFCbpmkL",
        "sign": "00F0CB2E2491AD98CF0A5817002B8962", "result_code": "SUCCESS", "trade_type": "JSAPI",
        "prepay_id": "wx29415831e6a111ccb805125015a7282000",
        "payment": {"appId": "wxd2565e6a04246fd1", "timeStamp": "1647841885", "nonceStr": "BfM1ojiTfFCbpmkL",
            "package": "prepay_id=wx29415831e6a111ccb805125015a7282000", "signType": "MD5",
            "paySign": "038EE415FD025B0D37717E8A1D6C34B6"}}})
}

/// Mounts a unifiedOrder answer that must be called exactly `times` times.
pub async fn mount_unified_order(app: &TestApp, response: ResponseTemplate, times: u64) {
    Mock::given(method("POST"))
        .and(path("/_/pay/unifiedOrder"))
        .respond_with(response)
        .expect(times)
        .mount(&app.wechat)
        .await;
}

/// Asserts the status and the error `code`, and returns the body.
pub async fn assert_error(response: reqwest::Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.expect("error body is JSON");
    assert_eq!(body["code"], code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    body
}
