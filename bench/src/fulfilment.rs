//! Fulfilment throughput against the ideal for the configured concurrency, both measured in this run
//! against the same fake carrier (50 ms per top-up). In process: the applications are built from the
//! library and their sweeps are driven directly.

use axum::routing::{get, post};
use axum::{Json, Router};
use futures::stream::{self, StreamExt};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use wxtopup::app::{AppState, Application};
use wxtopup::config::Settings;
use wxtopup::domain::{now_utc, PhoneNumber};
use wxtopup::entities::order;
use wxtopup::jobs::compensate::run_once;
use wxtopup::services::orders::place_order;

use crate::util;

const CARRIER_LATENCY: Duration = Duration::from_millis(50);
const CONCURRENCY: usize = 8;
const ORDERS_ONE_INSTANCE: usize = 400;
const ORDERS_THREE_INSTANCES: usize = 600;

pub async fn run() {
    let carrier = fake_carrier().await;
    println!(
        "fulfilment throughput (fake carrier answering in {} ms, FULFILMENT_CONCURRENCY={CONCURRENCY})",
        CARRIER_LATENCY.as_millis()
    );

    let ideal_one = ideal(&carrier, ORDERS_ONE_INSTANCE, CONCURRENCY).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = format!("sqlite://{}?mode=rwc", dir.path().join("bench.db").display());
    let one = fulfil(&sqlite, &carrier, 1, ORDERS_ONE_INSTANCE).await;
    report("1 instance, SQLite", one, ideal_one);

    let server = util::DbServer::MariaDb;
    match util::fresh_database(server, "wxtopup_bench_fulfilment").await {
        Some(scratch) => {
            let ideal_three = ideal(&carrier, ORDERS_THREE_INSTANCES, 3 * CONCURRENCY).await;
            let one_mysql = fulfil(scratch.url(), &carrier, 1, ORDERS_ONE_INSTANCE).await;
            report("1 instance, MariaDB", one_mysql, ideal_one);
            let three = fulfil(scratch.url(), &carrier, 3, ORDERS_THREE_INSTANCES).await;
            report("3 instances, MariaDB", three, ideal_three);
            scratch.drop_now().await;
        }
        None => println!("  3 instances, MariaDB: skipped, no server at {}", server.url()),
    }
}

/// A carrier that takes 50 ms per submit and has never heard of anything it is asked about.
async fn fake_carrier() -> String {
    let app = Router::new()
        .route(
            "/topups",
            post(|| async {
                tokio::time::sleep(CARRIER_LATENCY).await;
                Json(serde_json::json!({"status": "success", "providerReference": "BENCH", "message": "ok"}))
            }),
        )
        .route("/topups/{reference}", get(|| async { axum::http::StatusCode::NOT_FOUND }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

/// The baseline: `total` submits to the same carrier with `concurrency` in flight and nothing else.
async fn ideal(carrier: &str, total: usize, concurrency: usize) -> f64 {
    let client = reqwest::Client::new();
    let started = Instant::now();
    stream::iter(0..total)
        .map(|i| {
            let client = client.clone();
            async move {
                let body = serde_json::json!({"reference": format!("IDEAL{i}")});
                client.post(format!("{carrier}/topups")).json(&body).send().await.expect("carrier answers");
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
    total as f64 / started.elapsed().as_secs_f64()
}

struct Figure {
    per_second: f64,
    delivered: usize,
    total: usize,
}

/// `total` paid orders, then `instances` applications sweeping them at once; orders/s delivered.
async fn fulfil(database_url: &str, carrier: &str, instances: usize, total: usize) -> Figure {
    let mut states: Vec<AppState> = Vec::new();
    for _ in 0..instances {
        states.push(build(database_url, carrier).await);
    }
    let db = &states[0].db;
    db.execute_unprepared("DELETE FROM fulfilment_attempts").await.expect("clean");
    db.execute_unprepared("DELETE FROM payment_events").await.expect("clean");
    db.execute_unprepared("DELETE FROM orders").await.expect("clean");
    for i in 0..total {
        let phone = PhoneNumber::parse(&format!("+9768{i:07}")).expect("phone");
        let placed = place_order(db, "bench-openid", 1, &phone).await.expect("order");
        order::Entity::update_many()
            .col_expr(order::Column::Status, Expr::value("paid"))
            .col_expr(order::Column::PaidAt, Expr::value(now_utc()))
            .filter(order::Column::OrderNumber.eq(placed.order_number))
            .exec(db)
            .await
            .expect("paid");
    }
    let started = Instant::now();
    let reports = futures::future::join_all(states.iter().map(run_once)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let delivered = reports.into_iter().map(|r| r.expect("sweep").succeeded as usize).sum();
    Figure { per_second: delivered as f64 / elapsed, delivered, total }
}

async fn build(database_url: &str, carrier: &str) -> AppState {
    let vars: HashMap<String, String> = [
        ("PORT", "0"),
        ("DATABASE_URL", database_url),
        ("RUST_LOG", "error"),
        ("SCHEDULER_ENABLED", "false"),
        ("TOPUP_PROVIDER", "http"),
        ("TOPUP_API_URL", carrier),
        ("FULFILMENT_CONCURRENCY", &CONCURRENCY.to_string()),
        ("COMPENSATION_BATCH_SIZE", "10000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let settings = Settings::from_vars(&vars).expect("bench settings");
    let application = Application::build(settings).await.expect("application");
    let state = application.state().clone();
    // Stopped only by the end of the bench: no signal handler, so Ctrl-C still ends the whole run.
    tokio::spawn(application.run_until(std::future::pending()));
    state
}

fn report(label: &str, figure: Figure, ideal: f64) {
    println!(
        "  {label}: {:.1} orders/s delivered ({}/{}), ideal {:.1}/s → {:.2} of ideal",
        figure.per_second,
        figure.delivered,
        figure.total,
        ideal,
        figure.per_second / ideal
    );
}
