//! What `POST /payment/create` adds over WeChat's own latency: the release binary talks to a fake cloud
//! hosting open API (started here) whose `unifiedOrder` answers in 20 ms; the baseline is the same fake
//! called directly. Calls alternate (one direct, one through the service) so both see the same machine.
//! Each call through the service is on a fresh order, placed untimed just before, because a second call
//! for the same order hands out the stored prepay without asking WeChat.

use axum::routing::post;
use axum::{Json, Router};
use std::time::{Duration, Instant};

use crate::process::{Launch, Server};
use crate::util::{self, duration_times, ms, Binaries, Latencies};

const UPSTREAM_LATENCY: Duration = Duration::from_millis(20);
const CALLS: usize = 300;
/// Calls made first and not counted (connections, caches).
const WARM_UP: usize = 5;
const PACKAGE: &str = "prepay_id=wx123";

pub async fn run(binaries: &Binaries) {
    println!(
        "POST /payment/create over a fake open API answering in {} ms ({CALLS} sequential calls, each on a fresh order)",
        UPSTREAM_LATENCY.as_millis()
    );
    let upstream = fake_open_api().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let database_url = format!("sqlite://{}?mode=rwc", dir.path().join("create.db").display());
    let env: Vec<(&str, String)> = [
        ("APP_ENV", "development"),
        ("DATABASE_URL", database_url.as_str()),
        ("RUST_LOG", "warn"),
        ("SCHEDULER_ENABLED", "false"),
        ("PAYMENT_SANDBOX", "false"),
        ("WECHAT_API_BASE", upstream.as_str()),
        ("WECHAT_MCH_ID", "1712734762"),
        ("WECHAT_ENV_ID", "bench"),
        ("WECHAT_PAYMENT_CALLBACK_SERVICE", "pay"),
        ("TOPUP_PROVIDER", "sandbox"),
        ("SHUTDOWN_GRACE_SECONDS", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect();
    let launch = Launch { name: "wxtopup-create", program: &binaries.service, dir: dir.path(), env };
    let (server, _) = Server::start(launch).await;
    let base = server.base_url();

    let client = reqwest::Client::new();
    let (mut direct, mut through) = (Vec::new(), Vec::new());
    for i in 0..WARM_UP + CALLS {
        let d = call_upstream(&client, &upstream, i).await;
        let (order_number, _) = util::place_order(&client, &base, i).await;
        let t = create_payment(&client, &base, &order_number).await;
        if i >= WARM_UP {
            direct.push(d);
            through.push(t);
        }
    }
    server.stop().await;

    let (direct, through) = (Latencies::new(direct), Latencies::new(through));
    for (label, p) in [("p50", 50.0), ("p99", 99.0)] {
        let (d, t) = (direct.percentile(p), through.percentile(p));
        println!(
            "  {label}: {} (upstream directly {}) → {} added, {}",
            ms(t),
            ms(d),
            signed_ms(t.as_secs_f64() - d.as_secs_f64()),
            duration_times(t, d)
        );
    }
}

fn signed_ms(seconds: f64) -> String {
    format!("{:+.2} ms", seconds * 1000.0)
}

/// `unifiedOrder` of the cloud hosting open API, successful after [`UPSTREAM_LATENCY`].
async fn fake_open_api() -> String {
    let app = Router::new().route(
        "/_/pay/unifiedOrder",
        post(|| async {
            tokio::time::sleep(UPSTREAM_LATENCY).await;
            Json(serde_json::json!({
                "errcode": 0,
                "errmsg": "ok",
                "respdata": {
                    "return_code": "SUCCESS",
                    "result_code": "SUCCESS",
                    "prepay_id": "wx123",
                    "payment": {
                        "appId": "wx1",
                        "timeStamp": "1",
                        "nonceStr": "n",
                        "package": PACKAGE,
                        "signType": "MD5",
                        "paySign": "s"
                    }
                }
            }))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fake open API");
    let address = format!("http://{}", listener.local_addr().expect("fake open API address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

/// The baseline: one `unifiedOrder` straight to the fake, with a body like the service's.
async fn call_upstream(client: &reqwest::Client, upstream: &str, i: usize) -> Duration {
    let body = serde_json::json!({
        "body": "Unitel 5,000 MNT",
        "openid": util::OPENID,
        "out_trade_no": format!("DIRECT{i}"),
        "spbill_create_ip": "127.0.0.1",
        "env_id": "bench",
        "sub_mch_id": "1712734762",
        "total_fee": 1200,
        "callback_type": 2,
        "container": {"service": "pay", "path": format!("/payment/callback/DIRECT{i}")},
    });
    let started = Instant::now();
    let response =
        client.post(format!("{upstream}/_/pay/unifiedOrder")).json(&body).send().await.expect("fake open API answers");
    let status = response.status();
    let _ = response.bytes().await.expect("fake open API body");
    let took = started.elapsed();
    assert!(status.is_success(), "fake open API answered {status}");
    took
}

async fn create_payment(client: &reqwest::Client, base: &str, order_number: &str) -> Duration {
    let started = Instant::now();
    let response = client
        .post(format!("{base}/payment/create"))
        .header("X-Mock-Openid", util::OPENID)
        .json(&serde_json::json!({"orderNumber": order_number}))
        .send()
        .await
        .expect("POST /payment/create answers");
    let status = response.status();
    let text = response.text().await.expect("POST /payment/create body");
    let took = started.elapsed();
    assert!(status.is_success(), "POST /payment/create answered {status}: {text}");
    let params: serde_json::Value = serde_json::from_str(&text).expect("POST /payment/create answers JSON");
    assert_eq!(params["package"], PACKAGE, "POST /payment/create did not go through the fake open API: {text}");
    took
}
