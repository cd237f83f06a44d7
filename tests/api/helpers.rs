use rand::distr::Alphanumeric;
use rand::Rng;
use reqwest::StatusCode;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, Database, DatabaseConnection, EntityTrait, QueryFilter};
use serde_json::{json, Value};
use std::collections::HashMap;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wiremock::matchers::path_regex;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};
use wxtopup::app::{AppState, Application};
use wxtopup::config::Settings;
use wxtopup::domain::PhoneNumber;
use wxtopup::entities::{fulfilment_attempt, order, payment_event};
use wxtopup::services::orders::place_order;

pub const MCH_ID: &str = "1712734762";
pub const ENV_ID: &str = "prod-test-env";
pub const OPENID: &str = "oZp5njTTsWaCeEoXi14oeOVCKlik";
pub const OTHER_OPENID: &str = "oOtherUser000000000000000000";
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";
pub const CARRIER_TOKEN: &str = "test-carrier-token";

pub struct TestApp {
    pub address: String,
    pub db: DatabaseConnection,
    pub state: AppState,
    pub wechat: MockServer,
    pub carrier: MockServer,
    pub client: reqwest::Client,
    pub production: bool,
    pub database_url: String,
    /// A product on sale at 12.00 yuan: the demo product 1, or in production (whose catalog starts
    /// empty) one created through the admin API.
    pub product_id: i32,
    stop: Option<oneshot::Sender<()>>,
    running: Option<JoinHandle<std::io::Result<()>>>,
    _sqlite_dir: Option<std::sync::Arc<tempfile::TempDir>>,
}

/// A development-mode application talking to the fake WeChat (sandbox off).
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// As [`spawn_app`], with settings overridden (e.g. `("APP_ENV", "production")`).
pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    let (database_url, sqlite_dir) = fresh_database().await;
    spawn_on(database_url, sqlite_dir.map(std::sync::Arc::new), None, overrides).await
}

async fn spawn_on(
    database_url: String,
    sqlite_dir: Option<std::sync::Arc<tempfile::TempDir>>,
    carrier_uri: Option<String>,
    overrides: &[(&str, &str)],
) -> TestApp {
    let wechat = MockServer::start().await;
    let carrier = MockServer::start().await;
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
        ("TOPUP_PROVIDER", "http"),
        ("TOPUP_API_TOKEN", CARRIER_TOKEN),
        ("TOPUP_TIMEOUT_MS", "500"),
        ("FULFILMENT_RETRY_BASE_SECONDS", "60"),
        ("FULFILMENT_LEASE_SECONDS", "30"),
        ("SCHEDULER_ENABLED", "false"),
        ("SHUTDOWN_GRACE_SECONDS", "1"),
        ("ADMIN_TOKEN", ADMIN_TOKEN),
        // Tests fire bursts on purpose; the limits have tests of their own.
        ("RATE_LIMIT_ORDERS_PER_MINUTE", "100000"),
        ("RATE_LIMIT_PAYMENTS_PER_MINUTE", "100000"),
        ("RATE_LIMIT_CALLBACK_QUERIES_PER_MINUTE", "100000"),
        ("RATE_LIMIT_PUBLIC_PER_MINUTE", "100000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    vars.insert("DATABASE_URL".into(), database_url.clone());
    vars.insert("WECHAT_API_BASE".into(), wechat.uri());
    vars.insert("TOPUP_API_URL".into(), carrier_uri.unwrap_or_else(|| carrier.uri()));
    for (k, v) in overrides {
        vars.insert(k.to_string(), v.to_string());
    }
    let settings = Settings::from_vars(&vars).expect("test settings are valid");
    // Installed before any request, so every test's metrics are counted.
    wxtopup::telemetry::metrics_handle();
    let production = settings.is_production();
    let application = Application::build(settings).await.expect("application starts");
    let address = format!("http://127.0.0.1:{}", application.port());
    // Callbacks are confirmed with queryorder: by default WeChat agrees that 12.00 yuan was paid.
    // Tests about forged or unconfirmed callbacks mount their own answer, which takes precedence.
    Mock::given(method("POST"))
        .and(path("/_/pay/queryorder"))
        .respond_with(ResponseTemplate::new(200).set_body_json(query_order_answer("SUCCESS", 1200)))
        .with_priority(10)
        .mount(&wechat)
        .await;
    let state = application.state().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(application.run_until(async move {
        let _ = stopped.await;
    }));
    let mut app = TestApp {
        address,
        db: state.db.clone(),
        state,
        wechat,
        carrier,
        client: reqwest::Client::new(),
        production,
        database_url,
        product_id: 1,
        stop: Some(stop),
        running: Some(running),
        _sqlite_dir: sqlite_dir,
    };
    if production && app.state.settings.admin_token.is_some() {
        app.product_id = app.create_product(&json!({})).await;
    }
    app
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
    /// Another instance of the service on the same database and the same carrier, a replica, with
    /// settings overridden.
    pub async fn spawn_replica_with(&self, overrides: &[(&str, &str)]) -> TestApp {
        spawn_on(self.database_url.clone(), self._sqlite_dir.clone(), Some(self.carrier.uri()), overrides).await
    }

    /// Stops this instance and starts a new one on the same database, as running the service again
    /// would (with its own fake WeChat and carrier): whatever it knows, it knows from the database.
    pub async fn restart_with(mut self, overrides: &[(&str, &str)]) -> TestApp {
        self.stop().await;
        spawn_on(self.database_url.clone(), self._sqlite_dir.clone(), None, overrides).await
    }

    /// Sends the shutdown signal and waits for graceful shutdown to finish.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(running) = self.running.take() {
            running.await.expect("server task").expect("server stopped cleanly");
        }
    }

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

    /// Creates a product through the admin API: a Unitel 5,000 MNT top-up at 12.00 yuan, with the
    /// fields in `changes` put over it. Returns its id.
    pub async fn create_product(&self, changes: &Value) -> i32 {
        let mut body = json!({
            "code": format!("UNITEL-5000-{}", rand_suffix()), "name": "Unitel 5,000 MNT", "price": "12.00",
            "faceValue": "5000", "faceCurrency": "MNT", "country": "MN", "carrier": "Unitel",
            "carrierReference": "UNITEL-5000",
        });
        for (key, value) in changes.as_object().expect("an object") {
            body[key] = value.clone();
        }
        let response = self.admin_post_json("/admin/products", &body).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let created: Value = response.json().await.unwrap();
        i32::try_from(created["id"].as_i64().unwrap()).unwrap()
    }

    /// Places an order for [`TestApp::product_id`] (12.00 yuan) as `openid` and returns its number.
    pub async fn place_order(&self, openid: &str) -> String {
        let body = json!({"productId": self.product_id, "phoneNumber": "+97688112233"});
        let response = self.post_as("/orders", openid, &body).await;
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

    pub async fn attempts(&self, order_number: &str) -> Vec<fulfilment_attempt::Model> {
        fulfilment_attempt::Entity::find()
            .filter(fulfilment_attempt::Column::OrderNumber.eq(order_number))
            .all(&self.db)
            .await
            .unwrap()
    }

    /// An order already marked paid in the database, whose fulfilment has not started (as after a
    /// crash right after the callback).
    pub async fn paid_order_in_db(&self, phone: &str) -> String {
        let phone = PhoneNumber::parse(phone).expect("valid phone");
        let order = place_order(&self.db, OPENID, 1, &phone).await.unwrap();
        self.set(
            &order.order_number,
            vec![
                (order::Column::Status, Expr::value("paid")),
                (order::Column::TransactionId, Expr::value(format!("42000{}", order.id))),
                (order::Column::PaidAt, Expr::value(wxtopup::domain::now_utc())),
            ],
        )
        .await;
        order.order_number
    }

    /// Writes columns of an order directly (to stage crashes and the passing of time).
    pub async fn set(&self, order_number: &str, sets: Vec<(order::Column, sea_orm::sea_query::SimpleExpr)>) {
        let mut update = order::Entity::update_many();
        for (column, value) in sets {
            update = update.col_expr(column, value);
        }
        update.filter(order::Column::OrderNumber.eq(order_number)).exec(&self.db).await.unwrap();
    }

    /// Makes a retry or a lapsed lease due now, as if its time had passed.
    pub async fn expire_lease(&self, order_number: &str) {
        let past = wxtopup::domain::now_utc() - chrono::Duration::seconds(1);
        self.set(order_number, vec![(order::Column::LeaseExpiresAt, Expr::value(past))]).await;
    }

    /// Polls the database until the order reaches `status` (background fulfilment), at most 10 s.
    pub async fn wait_for_status(&self, order_number: &str, status: &str) -> order::Model {
        for _ in 0..500 {
            let order = self.order(order_number).await;
            if order.status.as_str() == status {
                return order;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("order {order_number} never reached {status}: {:?}", self.order(order_number).await.status);
    }

    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).bearer_auth(ADMIN_TOKEN).send().await.expect("request sent")
    }

    pub async fn admin_post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client.post(self.url(path)).bearer_auth(ADMIN_TOKEN).json(body).send().await.expect("request sent")
    }

    pub async fn admin_post(&self, path: &str) -> reqwest::Response {
        self.client.post(self.url(path)).bearer_auth(ADMIN_TOKEN).send().await.expect("request sent")
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

/// A payment status that means "paid at some point" (fulfilment may have moved it on).
pub fn is_paid(status: &wxtopup::domain::OrderStatus) -> bool {
    matches!(status.as_str(), "paid" | "recharging" | "success" | "failed" | "unresolved" | "refunding" | "refunded")
}

/// The carrier's answer for a top-up in `status`.
pub fn carrier_answer(status: &str) -> Value {
    json!({"status": status, "providerReference": "CARRIER-778899", "message": format!("top-up {status}")})
}

/// Mounts the carrier's submit endpoint, expected `times` times.
pub async fn mount_submit(app: &TestApp, response: ResponseTemplate, times: u64) {
    Mock::given(method("POST")).and(path("/topups")).respond_with(response).expect(times).mount(&app.carrier).await;
}

/// Mounts the carrier's query endpoint, expected `times` times.
pub async fn mount_query(app: &TestApp, response: ResponseTemplate, times: u64) {
    Mock::given(method("GET"))
        .and(path_regex("^/topups/ORD[0-9A-Za-z]+$"))
        .respond_with(response)
        .expect(times)
        .mount(&app.carrier)
        .await;
}

/// A queryorder answer with `trade_state` and `total_fee` (fen).
pub fn query_order_answer(trade_state: &str, total_fee: i64) -> Value {
    json!({"errcode": 0, "errmsg": "ok", "respdata": {
        "return_code": "SUCCESS", "return_msg": "OK", "result_code": "SUCCESS", "sub_mch_id": MCH_ID,
        "trade_state": trade_state, "trade_state_desc": "", "total_fee": total_fee, "cash_fee": total_fee,
        "transaction_id": "4200004561202203217657282768", "time_end": "20220321132007", "trade_type": "JSAPI"}})
}

/// A queryorder answer that arrives 300 ms late (within the client's 500 ms timeout), expected once.
pub async fn mount_slow_query(app: &TestApp, trade_state: &str) {
    Mock::given(method("POST"))
        .and(path("/_/pay/queryorder"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(query_order_answer(trade_state, 1200))
                .set_delay(std::time::Duration::from_millis(300)),
        )
        .expect(1)
        .mount(&app.wechat)
        .await;
}

/// Mounts WeChat's answer for `endpoint` (`queryorder`, `closeorder`, `refund`, `queryrefund`), expected
/// `times` times.
pub async fn mount_wechat(app: &TestApp, endpoint: &str, body: Value, times: u64) {
    Mock::given(method("POST"))
        .and(path(format!("/_/pay/{endpoint}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .expect(times)
        .mount(&app.wechat)
        .await;
}

/// The books of the Beijing day on which `order_number` was paid, from the admin endpoint.
pub async fn books_for(app: &TestApp, order_number: &str) -> Value {
    let paid_at = app.order(order_number).await.paid_at.expect("order was paid");
    let day = (paid_at + chrono::Duration::hours(8)).date();
    let response = app.admin_get(&format!("/admin/reconciliation?date={day}")).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// Asserts `paid = delivered + refunded + in flight` for the day of `order_number`.
pub async fn assert_books_balance(app: &TestApp, order_number: &str) -> Value {
    let books = books_for(app, order_number).await;
    assert_eq!(books["balanced"], true, "{books}");
    books
}

/// A queryrefund answer in the documented v2 shape (`refund_status_0`).
pub fn query_refund_answer(out_refund_no: &str, status: &str) -> Value {
    json!({"errcode": 0, "errmsg": "ok", "respdata": {
        "return_code": "SUCCESS", "result_code": "SUCCESS", "refund_count": 1,
        "out_refund_no_0": out_refund_no, "refund_id_0": "50000000000000000000000000", "refund_status_0": status}})
}

/// A refund accepted by WeChat.
pub fn refund_accepted() -> Value {
    json!({"errcode": 0, "errmsg": "ok", "respdata": {
        "return_code": "SUCCESS", "result_code": "SUCCESS", "refund_id": "50000000000000000000000000"}})
}

/// An order with a prepay made `minutes_ago` (both its creation and the prepay are moved back).
pub async fn order_with_prepay(app: &TestApp, minutes_ago: i64) -> String {
    let number = app.place_order(OPENID).await;
    let then = wxtopup::domain::now_utc() - chrono::Duration::minutes(minutes_ago);
    app.set(
        &number,
        vec![
            (order::Column::PrepayId, Expr::value("wx_prepay_test")),
            (order::Column::PrepayAt, Expr::value(then)),
            (order::Column::CreatedAt, Expr::value(then)),
        ],
    )
    .await;
    number
}

/// Waits until an alert of `kind` for `order_number` is recorded (they are written in the background).
pub async fn wait_for_alert(app: &TestApp, kind: &str, order_number: &str) {
    use wxtopup::entities::alert;
    for _ in 0..200 {
        let found = alert::Entity::find()
            .filter(alert::Column::Kind.eq(kind))
            .filter(alert::Column::OrderNumber.eq(order_number))
            .one(&app.db)
            .await
            .unwrap();
        if found.is_some() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("no {kind} alert for {order_number}");
}

/// The alerts recorded for an order, by kind.
pub async fn alert_kinds(app: &TestApp, order_number: &str) -> Vec<String> {
    use wxtopup::entities::alert;
    alert::Entity::find()
        .filter(alert::Column::OrderNumber.eq(order_number))
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.kind)
        .collect()
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}
