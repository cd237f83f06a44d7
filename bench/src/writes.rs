//! Orders placed under load: [`WRITERS`] concurrent writers, each its own buyer (`X-Mock-Openid`),
//! sending `POST /orders` one after the other for [`DURATION`] to the release binary, on SQLite (a file
//! in a temp dir), MariaDB and PostgreSQL (scratch databases). Each order is one commit, so the baseline
//! is that database's write ceiling measured in the same run (`ceiling`). Every answer but a 201 is
//! counted, 503s apart, and so is every answer, and every line of the service's log, that says
//! "database is locked". On SQLite the `-wal` file is sampled every [`WAL_SAMPLE`], and the file growth
//! and the bytes the service had written to storage (`/proc/<pid>/io`) are divided by the orders placed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::ceiling::{of_ceiling, Ceilings};
use crate::process::{Launch, Server};
use crate::util::{self, mib, ms, Binaries, DbServer, Run};
use migration::MigratorTrait;
use wxtopup::domain::PhoneNumber;
use wxtopup::group_commit::GroupCommit;
use wxtopup::services::orders::{OrderIntake, PlaceOrder};

pub const WRITERS: usize = 32;
const DURATION: Duration = Duration::from_secs(10);
const WAL_SAMPLE: Duration = Duration::from_millis(50);
const DATABASE: &str = "wxtopup_bench_writes";
const IN_PROCESS_DATABASE: &str = "wxtopup_bench_writes_in_process";
const IN_PROCESS_DURATION: Duration = Duration::from_secs(5);
const LOCKED: &str = "database is locked";

pub async fn run(binaries: &Binaries, ceilings: &Ceilings) {
    println!(
        "POST /orders from {WRITERS} concurrent writers for {} s (each writer its own buyer; one commit per order, shared by the orders queued together)",
        DURATION.as_secs()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("writes.db");
    let url = format!("sqlite://{}?mode=rwc", file.display());
    let server = start(binaries, &url, dir.path()).await;
    let wal = PathBuf::from(format!("{}-wal", file.display()));
    let files_before = size(&file) + size(&wal);
    let written_before = server.write_bytes();
    let sampler = WalSampler::start(wal.clone());
    let orders = load(&server.base_url()).await;
    let wal_peak = sampler.stop().await;
    let (wal_after, files_after, written) = (size(&wal), size(&file) + size(&wal), server.write_bytes());
    let logged = server.log_lines_with(LOCKED);
    server.stop().await;
    let created = report("SQLite", &orders, Some(ceilings.sqlite), logged);
    let per_order = |bytes: u64| bytes as f64 / created.max(1) as f64;
    println!(
        "    WAL: peak {} (sampled every {} ms), {} after the run; file growth (db + wal) {:.0} bytes/order, \
         written to storage by the service {:.0} bytes/order",
        mib(wal_peak / 1024),
        WAL_SAMPLE.as_millis(),
        mib(wal_after / 1024),
        per_order(files_after.saturating_sub(files_before)),
        per_order(written.saturating_sub(written_before))
    );
    in_process(&format!("sqlite://{}?mode=rwc", dir.path().join("in-process.db").display()), Some(ceilings.sqlite))
        .await;

    for db in DbServer::ALL {
        let Some(scratch) = util::fresh_database(db, DATABASE).await else {
            println!("  {}: skipped, no server at {}", db.label(), db.url());
            continue;
        };
        let server = start(binaries, scratch.url(), dir.path()).await;
        let orders = load(&server.base_url()).await;
        let logged = server.log_lines_with(LOCKED);
        server.stop().await;
        scratch.drop_now().await;
        report(db.label(), &orders, ceilings.of(db), logged);
        let Some(scratch) = util::fresh_database(db, IN_PROCESS_DATABASE).await else {
            println!("    in process: skipped, no server at {}", db.url());
            continue;
        };
        in_process(scratch.url(), ceilings.of(db)).await;
        scratch.drop_now().await;
    }
}

/// The same orders placed by the service's own `OrderIntake` from [`WRITERS`] tasks in this process,
/// on a pool opened as the service opens it: what the database costs an order, without HTTP,
/// JSON or the service's process. The HTTP figure's distance to this one is the service's own cost.
async fn in_process(url: &str, ceiling: Option<f64>) {
    let db = wxtopup::app::connect_pool(url, crate::ceiling::CLIENTS as u32)
        .await
        .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    migration::Migrator::up(&db, None).await.expect("migrate the in-process database");
    let intake = OrderIntake::new(&db, GroupCommit::new(db.clone()));
    let run = util::closed_loop(WRITERS, IN_PROCESS_DURATION, move |writer, i| {
        let intake = intake.clone();
        async move {
            let phone = PhoneNumber::parse(&util::phone_number(i)).expect("a valid phone number");
            let placing = PlaceOrder { openid: format!("bench-writer-{writer}"), product_id: 1, phone };
            intake.place(placing).await.map(|_| ()).map_err(|e| e.to_string())
        }
    })
    .await;
    db.close().await.expect("close the in-process pool");
    let placed = run.count(|r| r.is_ok());
    let first_failure = run.samples.iter().find_map(|(_, r)| r.as_ref().err().cloned());
    let latencies = run.latencies();
    let per_second = placed as f64 / run.elapsed.as_secs_f64();
    println!(
        "    in process (the service's order intake from {WRITERS} tasks, the service's pool, no HTTP): {per_second:.0} orders/s → {}, \
         p50 {}, p99 {}{}",
        of_ceiling(per_second, ceiling),
        ms(latencies.median()),
        ms(latencies.percentile(99.0)),
        first_failure.map(|e| format!(", {} failed (first: {e})", run.samples.len() - placed)).unwrap_or_default()
    );
}

async fn start(binaries: &Binaries, database_url: &str, dir: &Path) -> Server {
    let launch = Launch::service("wxtopup-writes", binaries, database_url, dir);
    Server::start(launch).await.0
}

enum Answer {
    Status { code: u16, locked: bool },
    Failed(String),
}

async fn load(base: &str) -> Run<Answer> {
    let client = util::http_client(WRITERS);
    let url = format!("{base}/orders");
    util::closed_loop(WRITERS, DURATION, move |writer, i| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let body = serde_json::json!({"productId": 1, "phoneNumber": util::phone_number(i)});
            let sent = client.post(&url).header("X-Mock-Openid", format!("bench-writer-{writer}")).json(&body).send();
            match sent.await {
                Ok(response) => {
                    let code = response.status().as_u16();
                    match response.text().await {
                        Ok(text) => Answer::Status { code, locked: text.contains(LOCKED) },
                        Err(error) => Answer::Failed(format!("{code}, body unread: {error}")),
                    }
                }
                Err(error) => Answer::Failed(error.to_string()),
            }
        }
    })
    .await
}

/// Prints the run's line; returns the number of orders created.
fn report(label: &str, load: &Run<Answer>, ceiling: Option<f64>, logged: usize) -> usize {
    let created = load.count(|a| matches!(a, Answer::Status { code: 201, .. }));
    let unavailable = load.count(|a| matches!(a, Answer::Status { code: 503, .. }));
    let others = load.samples.len() - created - unavailable;
    let locked = load.count(|a| matches!(a, Answer::Status { locked: true, .. }));
    let latencies = load.latencies();
    let first_other = load.samples.iter().find_map(|(_, a)| match a {
        Answer::Status { code: 201 | 503, .. } => None,
        Answer::Status { code, .. } => Some(code.to_string()),
        Answer::Failed(error) => Some(error.clone()),
    });
    let created_per_second = created as f64 / load.elapsed.as_secs_f64();
    println!(
        "  {label}: {:.0} requests/s, {created} orders ({created_per_second:.0}/s) → {}, p50 {}, p99 {}, max {}",
        load.per_second(),
        of_ceiling(created_per_second, ceiling),
        ms(latencies.median()),
        ms(latencies.percentile(99.0)),
        ms(latencies.percentile(100.0))
    );
    println!(
        "    not 201: {} (503: {unavailable}, other: {others}{}); \"{LOCKED}\": {locked} answers, {logged} log lines",
        unavailable + others,
        first_other.map(|first| format!(", first other: {first}")).unwrap_or_default()
    );
    created
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The largest size a file was seen at, looked at every [`WAL_SAMPLE`] until stopped.
struct WalSampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<u64>,
}

impl WalSampler {
    fn start(path: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let (mut every, mut peak) = (tokio::time::interval(WAL_SAMPLE), 0);
            while !stopped.load(Ordering::Relaxed) {
                every.tick().await;
                peak = peak.max(size(&path));
            }
            peak
        });
        WalSampler { stop, task }
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("WAL sampler")
    }
}
