//! Reads under load: `GET /products` (public) and `GET /orders` (one buyer's first page, after
//! [`ORDERS`] orders placed) from [`CLIENTS`] concurrent clients for [`DURATION`] each, against the
//! release binary on SQLite. The baseline is the hello-world's routes of the same name, which answer
//! fixed bodies of the same shape and size; hello-world and service take turns, route by route.

use std::time::Duration;

use crate::process::{service_env, Launch, Server};
use crate::util::{self, duration_times, ms, times, Binaries, Run};

const CLIENTS: usize = 32;
const DURATION: Duration = Duration::from_secs(5);
const ORDERS: usize = 50;

pub async fn run(binaries: &Binaries) {
    println!(
        "reads ({CLIENTS} concurrent clients, {} s per route; SQLite, {ORDERS} orders of the buyer's placed first)",
        DURATION.as_secs()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("reads.db").display());
    let launch = Launch { name: "wxtopup-reads", program: &binaries.service, dir: dir.path(), env: service_env(&url) };
    let (service, _) = Server::start(launch).await;
    let launch = Launch { name: "hello-reads", program: &binaries.hello, dir: dir.path(), env: Vec::new() };
    let (hello, _) = Server::start(launch).await;
    let client = reqwest::Client::new();
    for i in 0..ORDERS {
        util::place_order(&client, &service.base_url(), i).await;
    }

    for path in ["/products", "/orders"] {
        let base = load(&hello.base_url(), path).await;
        let run = load(&service.base_url(), path).await;
        let (latencies, base_latencies) = (run.latencies(), base.latencies());
        println!(
            "  GET {path}: {:.0} requests/s (hello-world {:.0}) → {}, p99 {} (hello-world {}) → {}; \
             body {} bytes (hello-world {}){}",
            run.per_second(),
            base.per_second(),
            times(run.per_second(), base.per_second()),
            ms(latencies.percentile(99.0)),
            ms(base_latencies.percentile(99.0)),
            duration_times(latencies.percentile(99.0), base_latencies.percentile(99.0)),
            body_size(&run),
            body_size(&base),
            failures(&run, "service") + &failures(&base, "hello-world")
        );
    }
    service.stop().await;
    hello.stop().await;
}

/// `GET {base}{path}` as [`util::OPENID`]: the body's length when the answer is 200, else what it was.
async fn load(base: &str, path: &str) -> Run<Result<usize, String>> {
    let client = util::http_client(CLIENTS);
    let url = format!("{base}{path}");
    util::closed_loop(CLIENTS, DURATION, move |_, _| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let response = client.get(&url).header("X-Mock-Openid", util::OPENID).send().await;
            let response = response.map_err(|e| e.to_string())?;
            let status = response.status();
            let body = response.bytes().await.map_err(|e| e.to_string())?;
            if status != reqwest::StatusCode::OK {
                return Err(format!("{status} {}", String::from_utf8_lossy(&body)));
            }
            Ok(body.len())
        }
    })
    .await
}

fn body_size(run: &Run<Result<usize, String>>) -> String {
    run.samples.iter().find_map(|(_, r)| r.as_ref().ok()).map_or("?".into(), |n| n.to_string())
}

fn failures(run: &Run<Result<usize, String>>, who: &str) -> String {
    match run.samples.iter().find_map(|(_, r)| r.as_ref().err()) {
        None => String::new(),
        Some(first) => format!(", {who}: {} failed (first: {first})", run.count(|r| r.is_err())),
    }
}
