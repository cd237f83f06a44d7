//! The callback storm and the memory figures taken around it. Against the release binary on SQLite,
//! MariaDB and PostgreSQL: 1,000 orders, then each order's payment callback delivered 10 times at once
//! (10,000 POSTs, [`IN_FLIGHT`] at a time); throughput, latency, and whether every order moved to `paid`
//! exactly once, read back from `payment_events`. The baseline is the hello-world server's `POST /echo`
//! under the same requests; a delivery being one commit, its rate is also put against the database's
//! write ceiling (`ceiling`). The CPU time the service, the database server and the bench itself used
//! over the storm is printed per delivery: on a machine they share, it tells which of them the rate
//! waits on.

use futures::stream::{self, StreamExt};
use sea_orm::{
    ColumnTrait, ConnectionTrait, Database, DatabaseConnection, DbBackend, EntityTrait, QueryFilter, QuerySelect,
    Statement,
};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};
use wxtopup::entities::payment_event;

use crate::ceiling::{of_ceiling, Ceilings};
use crate::process::{Launch, Server};
use crate::util::{self, duration_times, mib, ms, times, Binaries, DbServer, Latencies, Memory};

pub const ORDERS: usize = 1_000;
pub const DELIVERIES_PER_ORDER: usize = 10;
pub const IN_FLIGHT: usize = 64;
/// Orders placed at once before the storm (not timed).
const PLACING_IN_FLIGHT: usize = 8;
/// How long a freshly started server is left alone before its idle memory is read.
const SETTLE: Duration = Duration::from_millis(500);
const DATABASE: &str = "wxtopup_bench_storm";

pub async fn run(binaries: &Binaries, ceilings: &Ceilings) {
    println!(
        "callback storm ({ORDERS} orders × {DELIVERIES_PER_ORDER} concurrent deliveries = {} POSTs, {IN_FLIGHT} in flight)",
        ORDERS * DELIVERIES_PER_ORDER
    );
    let hello = hello(binaries).await;
    println!(
        "  hello-world POST /echo: {:.0} requests/s, p50 {}, p99 {}{}",
        hello.load.per_second(),
        ms(hello.load.latencies.median()),
        ms(hello.load.latencies.percentile(99.0)),
        failures(&hello.load)
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = format!("sqlite://{}?mode=rwc", dir.path().join("storm.db").display());
    let on_sqlite = service(binaries, &sqlite, dir.path()).await;
    report_storm("SQLite", &on_sqlite, &hello, Some(ceilings.sqlite));

    let mut loaded = vec![("SQLite", on_sqlite)];
    for db in DbServer::ALL {
        let Some(scratch) = util::fresh_database(db, DATABASE).await else {
            println!("  {}: skipped, no server at {}", db.label(), db.url());
            continue;
        };
        let run = service(binaries, scratch.url(), dir.path()).await;
        scratch.drop_now().await;
        report_storm(db.label(), &run, &hello, ceilings.of(db));
        loaded.push((db.label(), run));
    }

    println!("memory (VmRSS of the process; hello-world under the same number of requests)");
    let on_sqlite = &loaded[0].1;
    println!(
        "  idle after start, SQLite: {} (hello-world {}) → {}",
        mib(on_sqlite.idle.rss_kib),
        mib(hello.idle.rss_kib),
        times(on_sqlite.idle.rss_kib as f64, hello.idle.rss_kib as f64)
    );
    for (label, run) in &loaded {
        println!(
            "  after {ORDERS} orders + the storm, {label}: {} (hello-world {}) → {}; peak {} (hello-world {}) → {}",
            mib(run.after.rss_kib),
            mib(hello.after.rss_kib),
            times(run.after.rss_kib as f64, hello.after.rss_kib as f64),
            mib(run.after.peak_kib),
            mib(hello.after.peak_kib),
            times(run.after.peak_kib as f64, hello.after.peak_kib as f64)
        );
    }
}

fn report_storm(label: &str, run: &ServiceRun, hello: &HelloRun, ceiling: Option<f64>) {
    let (load, base, tally) = (&run.load, &hello.load, &run.tally);
    println!(
        "  {label}: {:.0} requests/s (hello-world {:.0}) → {}, p50 {} → {}, p99 {} → {}{}",
        load.per_second(),
        base.per_second(),
        times(load.per_second(), base.per_second()),
        ms(load.latencies.median()),
        duration_times(load.latencies.median(), base.latencies.median()),
        ms(load.latencies.percentile(99.0)),
        duration_times(load.latencies.percentile(99.0), base.latencies.percentile(99.0)),
        failures(load)
    );
    println!(
        "    one commit per delivery (shared by the deliveries queued together): {}",
        of_ceiling(load.per_second(), ceiling)
    );
    println!(
        "    CPU per delivery: {} (hello-world: {})",
        run.cpu.per_request("service", load),
        hello.cpu.per_request("server", base)
    );
    let outcomes: Vec<String> = tally.outcomes.iter().map(|(outcome, n)| format!("{outcome} {n}")).collect();
    if let Some(server) = &run.server {
        println!(
            "    the server's own count over the storm, per paid order (10 deliveries and its top-up): {:.1} statements, {:.1} of them COMMIT; besides them {:.1} pings",
            server.statements as f64 / tally.orders as f64,
            server.commits as f64 / tally.orders as f64,
            server.pings as f64 / tally.orders as f64
        );
    }
    println!(
        "    paid exactly once: {}/{} orders, double transitions: {}, never accepted: {} (outcomes: {})",
        tally.accepted_once,
        tally.orders,
        tally.double,
        tally.never,
        outcomes.join(", ")
    );
}

fn failures(load: &Load) -> String {
    match &load.first_failure {
        None => String::new(),
        Some(first) => format!(", {} failed (first: {first})", load.failures),
    }
}

/// One load run: every request's latency (sent to body read) and the answers that were not 200 with
/// errcode 0.
pub struct Load {
    requests: usize,
    elapsed: Duration,
    latencies: Latencies,
    failures: usize,
    first_failure: Option<String>,
}

impl Load {
    fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// POSTs each `(url, body)` once, in the order given, [`IN_FLIGHT`] at a time, on fresh connections.
async fn load(requests: Vec<(String, String)>) -> Load {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(IN_FLIGHT)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client for the storm");
    let total = requests.len();
    let started = Instant::now();
    let answers: Vec<(Duration, Option<String>)> = stream::iter(requests)
        .map(|(url, body)| {
            let client = client.clone();
            async move {
                let sent = Instant::now();
                let answer = client
                    .post(&url)
                    .header("X-WX-SOURCE", "bench")
                    .header("Content-Type", "application/json")
                    .body(body)
                    .send()
                    .await;
                let failure = match answer {
                    Ok(response) => {
                        let status = response.status();
                        let text = response.text().await.unwrap_or_default();
                        let errcode =
                            serde_json::from_str::<serde_json::Value>(&text).ok().map(|v| v["errcode"].clone());
                        (status != reqwest::StatusCode::OK || errcode != Some(serde_json::json!(0)))
                            .then(|| format!("{status} {text}"))
                    }
                    Err(error) => Some(error.to_string()),
                };
                (sent.elapsed(), failure)
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let failures = answers.iter().filter(|(_, f)| f.is_some()).count();
    let first_failure = answers.iter().find_map(|(_, f)| f.clone());
    let latencies = Latencies::new(answers.into_iter().map(|(d, _)| d).collect());
    Load { requests: total, elapsed, latencies, failures, first_failure }
}

/// The callback body the platform sends for order `i`, paid in full.
fn callback_body(i: usize, order_number: &str, fen: i64) -> String {
    serde_json::json!({
        "returnCode": "SUCCESS",
        "resultCode": "SUCCESS",
        "outTradeNo": order_number,
        "totalFee": fen,
        "transactionId": format!("4200{i:024}"),
        "timeEnd": "20261123120000",
    })
    .to_string()
}

/// Each order's callback [`DELIVERIES_PER_ORDER`] times in a row, so the copies are in flight together.
fn deliveries(orders: &[(String, i64)], url: impl Fn(&str) -> String) -> Vec<(String, String)> {
    orders
        .iter()
        .enumerate()
        .flat_map(|(i, (number, fen))| {
            let request = (url(number), callback_body(i, number, *fen));
            std::iter::repeat_n(request, DELIVERIES_PER_ORDER)
        })
        .collect()
}

struct ServiceRun {
    load: Load,
    /// On MariaDB: what the server counted while the storm ran.
    server: Option<ServerCounts>,
    tally: Tally,
    idle: Memory,
    after: Memory,
    cpu: Cpu,
}

/// CPU time used by the server under load, by the database server's processes (none for SQLite, which
/// runs inside the service) and by this bench, which sends the requests: read before and after the
/// storm ([`Cpu::since`]). On a machine they share, it says which of them the rate is waiting on.
struct Cpu {
    server: Duration,
    database: Option<Duration>,
    client: Duration,
}

impl Cpu {
    /// What each has used so far; the database server's processes are those for `database_url`.
    fn read(server: &Server, database_url: &str) -> Cpu {
        Cpu {
            server: server.cpu_time(),
            database: database_command(database_url).and_then(util::cpu_time_of_command),
            client: util::cpu_time(std::process::id()),
        }
    }

    fn since(&self, before: &Cpu) -> Cpu {
        Cpu {
            server: self.server.saturating_sub(before.server),
            database: self.database.zip(before.database).map(|(now, then)| now.saturating_sub(then)),
            client: self.client.saturating_sub(before.client),
        }
    }

    /// Microseconds per request of `load`, each part: `service 120 µs, database 90 µs, bench 40 µs`.
    fn per_request(&self, server: &str, load: &Load) -> String {
        let each = |d: Duration| format!("{:.0} µs", d.as_secs_f64() * 1e6 / load.requests as f64);
        let mut parts = vec![format!("{server} {}", each(self.server))];
        if let Some(database) = self.database {
            parts.push(format!("database server {}", each(database)));
        }
        parts.push(format!("bench client {}", each(self.client)));
        parts.join(", ")
    }
}

/// The name of the database server's processes for `database_url`; `None` for SQLite.
fn database_command(database_url: &str) -> Option<&'static str> {
    if database_url.starts_with("mysql:") {
        Some("mariadbd")
    } else if database_url.starts_with("postgres") {
        Some("postgres")
    } else {
        None
    }
}

async fn service(binaries: &Binaries, database_url: &str, dir: &Path) -> ServiceRun {
    let launch = Launch::service("wxtopup-storm", binaries, database_url, dir);
    let (server, _) = Server::start(launch).await;
    tokio::time::sleep(SETTLE).await;
    let idle = server.memory();
    let base = server.base_url();
    let client = reqwest::Client::new();
    let orders: Vec<(String, i64)> = stream::iter(0..ORDERS)
        .map(|i| util::place_order(&client, &base, i))
        .buffered(PLACING_IN_FLIGHT)
        .collect()
        .await;
    let counting = match ServerCounter::connect(database_url).await {
        Some(counter) => Some((counter.read().await, counter)),
        None => None,
    };
    let cpu_before = Cpu::read(&server, database_url);
    let load = load(deliveries(&orders, |number| format!("{base}/payment/callback/{number}"))).await;
    let cpu = Cpu::read(&server, database_url).since(&cpu_before);
    let server_counts = match &counting {
        Some((before, counter)) => {
            // The top-ups the storm started finish within a few milliseconds of their callbacks.
            tokio::time::sleep(SETTLE).await;
            Some(counter.read().await.since(before))
        }
        None => None,
    };
    let after = server.memory();
    let tally = tally(database_url, &orders).await;
    server.stop().await;
    ServiceRun { load, server: server_counts, tally, idle, after, cpu }
}

/// Statements and commits as MariaDB counts them (`SHOW GLOBAL STATUS`: `Questions`, `Com_commit`), and
/// the pings it answered, which `Questions` leaves out (`Com_admin_commands`: the pool pings a connection
/// as it takes it back).
struct ServerCounts {
    statements: u64,
    commits: u64,
    pings: u64,
}

impl ServerCounts {
    fn since(&self, before: &ServerCounts) -> ServerCounts {
        ServerCounts {
            statements: self.statements.saturating_sub(before.statements),
            commits: self.commits.saturating_sub(before.commits),
            pings: self.pings.saturating_sub(before.pings),
        }
    }
}

/// A connection that reads [`ServerCounts`]; only on MariaDB (PostgreSQL counts no statements without
/// an extension). Its own reads add one statement each.
struct ServerCounter(DatabaseConnection);

impl ServerCounter {
    async fn connect(database_url: &str) -> Option<Self> {
        if !database_url.starts_with("mysql:") {
            return None;
        }
        let db = Database::connect(database_url).await.unwrap_or_else(|e| panic!("cannot open {database_url}: {e}"));
        Some(ServerCounter(db))
    }

    async fn read(&self) -> ServerCounts {
        let sql = "SHOW GLOBAL STATUS WHERE Variable_name IN ('Questions', 'Com_commit', 'Com_admin_commands')";
        let rows =
            self.0.query_all_raw(Statement::from_string(DbBackend::MySql, sql)).await.expect("SHOW GLOBAL STATUS");
        let mut counts = ServerCounts { statements: 0, commits: 0, pings: 0 };
        for row in rows {
            let name: String = row.try_get_by_index(0).expect("variable name");
            let value: String = row.try_get_by_index(1).expect("variable value");
            let value = value.parse().unwrap_or_else(|_| panic!("{name} = {value} is not a count"));
            match name.as_str() {
                "Questions" => counts.statements = value,
                "Com_commit" => counts.commits = value,
                _ => counts.pings = value,
            }
        }
        counts
    }
}

struct HelloRun {
    load: Load,
    idle: Memory,
    after: Memory,
    cpu: Cpu,
}

/// The baseline: the same number of requests as the service gets (one per order placed, then the storm),
/// to `POST /echo`; only the storm is timed.
async fn hello(binaries: &Binaries) -> HelloRun {
    let dir = tempfile::tempdir().expect("temp dir");
    let launch = Launch { name: "hello-storm", program: &binaries.hello, dir: dir.path(), env: Vec::new() };
    let (server, _) = Server::start(launch).await;
    tokio::time::sleep(SETTLE).await;
    let idle = server.memory();
    let echo = format!("{}/echo", server.base_url());
    let placing = (0..ORDERS)
        .map(|i| (echo.clone(), serde_json::json!({"productId": 1, "phoneNumber": util::phone_number(i)}).to_string()));
    let _ = load(placing.collect()).await;
    let orders: Vec<(String, i64)> = (0..ORDERS).map(|i| (format!("ORD{i:017}"), 1200)).collect();
    let cpu_before = Cpu::read(&server, "");
    let load = load(deliveries(&orders, |_| echo.clone())).await;
    let cpu = Cpu::read(&server, "").since(&cpu_before);
    let after = server.memory();
    server.stop().await;
    HelloRun { load, idle, after, cpu }
}

/// What `payment_events` says the storm did.
struct Tally {
    orders: usize,
    /// Orders with exactly one callback whose outcome is `accepted` (the one `unpaid → paid`).
    accepted_once: usize,
    /// Orders moved to `paid` more than once: must be 0.
    double: usize,
    /// Orders no delivery moved to `paid`.
    never: usize,
    /// Every stored callback by outcome.
    outcomes: BTreeMap<String, usize>,
}

async fn tally(database_url: &str, orders: &[(String, i64)]) -> Tally {
    let db = Database::connect(database_url).await.unwrap_or_else(|e| panic!("cannot open {database_url}: {e}"));
    let rows: Vec<(String, String)> = payment_event::Entity::find()
        .select_only()
        .column(payment_event::Column::OrderNumber)
        .column(payment_event::Column::Outcome)
        .filter(payment_event::Column::Kind.eq("payment_callback"))
        .into_tuple()
        .all(&db)
        .await
        .expect("read payment_events");
    let mut accepted: HashMap<&str, usize> = HashMap::new();
    let mut outcomes = BTreeMap::new();
    for (order_number, outcome) in &rows {
        if outcome == "accepted" {
            *accepted.entry(order_number).or_default() += 1;
        }
        *outcomes.entry(outcome.clone()).or_default() += 1;
    }
    let per_order: Vec<usize> =
        orders.iter().map(|(number, _)| accepted.get(number.as_str()).copied().unwrap_or(0)).collect();
    Tally {
        orders: orders.len(),
        accepted_once: per_order.iter().filter(|n| **n == 1).count(),
        double: per_order.iter().filter(|n| **n > 1).count(),
        never: per_order.iter().filter(|n| **n == 0).count(),
        outcomes,
    }
}
