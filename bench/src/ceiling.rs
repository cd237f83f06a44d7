//! The databases' own write ceiling, the denominator of the write figures: [`CLIENTS`] clients each
//! committing one small row after the other (one `INSERT` into a scratch table, autocommit) for
//! [`DURATION`]. SQLite on a file opened through `wxtopup::app::connect`, with the service's pragmas
//! (WAL, `synchronous=FULL`, one connection), and, for comparison, opened with plain sea-orm in WAL at
//! `synchronous=NORMAL` and at `synchronous=FULL` (also one connection); MariaDB and PostgreSQL on a
//! scratch database with a pool of [`CLIENTS`]. A service can commit no faster than its database does:
//! an order placed or a callback delivered is one commit.

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};
use std::time::Duration;

use crate::util::{self, ms, times, DbServer};

pub const CLIENTS: usize = 32;
const DURATION: Duration = Duration::from_secs(5);
/// Commits made first and not counted: connections opened, the table's first pages, the WAL created.
const WARM_UP: Duration = Duration::from_millis(500);
const DATABASE: &str = "wxtopup_bench_ceiling";

/// Commits per second each database managed in this run; `None` where there was no server.
#[derive(Clone, Copy, Debug)]
pub struct Ceilings {
    /// SQLite opened the service's way (`wxtopup::app::connect`).
    pub sqlite: f64,
    pub mariadb: Option<f64>,
    pub postgres: Option<f64>,
}

impl Ceilings {
    pub fn of(&self, server: DbServer) -> Option<f64> {
        match server {
            DbServer::MariaDb => self.mariadb,
            DbServer::Postgres => self.postgres,
        }
    }
}

/// `rate` as a share of `ceiling`: `0.42× the ceiling (1234 commits/s)`.
pub fn of_ceiling(rate: f64, ceiling: Option<f64>) -> String {
    match ceiling {
        Some(ceiling) => format!("{} the ceiling ({ceiling:.0} commits/s)", times(rate, ceiling)),
        None => "no ceiling measured".into(),
    }
}

pub async fn run() -> Ceilings {
    println!(
        "database write ceiling ({CLIENTS} clients, one single-row INSERT per commit, autocommit, {} s each)",
        DURATION.as_secs()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let file = |name: &str| format!("sqlite://{}?mode=rwc", dir.path().join(name).display());

    let service = wxtopup::app::connect(&file("service.db")).await.expect("open SQLite the service's way");
    let sqlite = measure(&service).await;
    service.close().await.expect("close SQLite");
    sqlite.report("SQLite, the service's connection (WAL, synchronous=FULL, 1 connection)", None);
    for synchronous in ["NORMAL", "FULL"] {
        let db = plain_sqlite(&file(&format!("{synchronous}.db")), synchronous).await;
        let plain = measure(&db).await;
        db.close().await.expect("close SQLite");
        plain.report(
            &format!("SQLite, plain sea-orm (WAL, synchronous={synchronous}, 1 connection)"),
            Some(("the service's", sqlite.per_second)),
        );
    }

    let mut ceilings = Ceilings { sqlite: sqlite.per_second, mariadb: None, postgres: None };
    for server in DbServer::ALL {
        let label = format!("{} ({CLIENTS} connections)", server.label());
        let Some(scratch) = util::fresh_database(server, DATABASE).await else {
            println!("  {label}: skipped, no server at {}", server.url());
            continue;
        };
        let mut options = ConnectOptions::new(scratch.url().to_string());
        options
            .max_connections(CLIENTS as u32)
            .connect_timeout(Duration::from_secs(5))
            .acquire_timeout(Duration::from_secs(30))
            .sqlx_logging(false);
        let db = Database::connect(options).await.unwrap_or_else(|e| panic!("cannot open {}: {e}", scratch.url()));
        let measured = measure(&db).await;
        db.close().await.expect("close the pool");
        scratch.drop_now().await;
        measured.report(&label, Some(("SQLite's", sqlite.per_second)));
        match server {
            DbServer::MariaDb => ceilings.mariadb = Some(measured.per_second),
            DbServer::Postgres => ceilings.postgres = Some(measured.per_second),
        }
    }
    ceilings
}

/// SQLite in WAL with the given `synchronous`, one connection, and nothing else of the service's.
async fn plain_sqlite(url: &str, synchronous: &'static str) -> DatabaseConnection {
    let mut options = ConnectOptions::new(url.to_string());
    options.max_connections(1).acquire_timeout(Duration::from_secs(30)).sqlx_logging(false).map_sqlx_sqlite_opts(
        move |o| {
            o.busy_timeout(Duration::from_secs(30)).pragma("journal_mode", "WAL").pragma("synchronous", synchronous)
        },
    );
    Database::connect(options).await.unwrap_or_else(|e| panic!("cannot open {url}: {e}"))
}

struct Measured {
    per_second: f64,
    p50: Duration,
    p99: Duration,
    failures: usize,
    first_failure: Option<String>,
}

impl Measured {
    fn report(&self, label: &str, against: Option<(&str, f64)>) {
        let ratio = match against {
            Some((name, base)) => format!(" → {} {name}", times(self.per_second, base)),
            None => String::new(),
        };
        let failed = match &self.first_failure {
            Some(first) => format!(", {} failed (first: {first})", self.failures),
            None => String::new(),
        };
        println!(
            "  {label}: {:.0} commits/s{ratio}, p50 {}, p99 {}{failed}",
            self.per_second,
            ms(self.p50),
            ms(self.p99)
        );
    }
}

/// Creates the table, warms up for [`WARM_UP`], then counts the commits of [`DURATION`].
async fn measure(db: &DatabaseConnection) -> Measured {
    let backend = db.get_database_backend();
    let create = match backend {
        DbBackend::Sqlite => {
            "CREATE TABLE ceiling (id INTEGER PRIMARY KEY, client INTEGER NOT NULL, payload TEXT NOT NULL)"
        }
        DbBackend::MySql => {
            "CREATE TABLE ceiling (id BIGINT AUTO_INCREMENT PRIMARY KEY, client INT NOT NULL, \
             payload VARCHAR(64) NOT NULL) ENGINE=InnoDB"
        }
        _ => "CREATE TABLE ceiling (id BIGSERIAL PRIMARY KEY, client INT NOT NULL, payload VARCHAR(64) NOT NULL)",
    };
    db.execute_unprepared(create).await.expect("create the ceiling table");
    let _ = commits(db, WARM_UP).await;
    let run = commits(db, DURATION).await;
    let latencies = run.latencies();
    Measured {
        per_second: run.count(|r| r.is_ok()) as f64 / run.elapsed.as_secs_f64(),
        p50: latencies.median(),
        p99: latencies.percentile(99.0),
        failures: run.count(|r| r.is_err()),
        first_failure: run.samples.iter().find_map(|(_, r)| r.clone().err()),
    }
}

async fn commits(db: &DatabaseConnection, duration: Duration) -> util::Run<Result<(), String>> {
    let backend = db.get_database_backend();
    let insert = match backend {
        DbBackend::Postgres => "INSERT INTO ceiling (client, payload) VALUES ($1, $2)",
        _ => "INSERT INTO ceiling (client, payload) VALUES (?, ?)",
    };
    let db = db.clone();
    util::closed_loop(CLIENTS, duration, move |client, i| {
        let db = db.clone();
        async move {
            let values = [(client as i32).into(), format!("commit {i} of client {client}").into()];
            db.execute_raw(Statement::from_sql_and_values(backend, insert, values))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await
}
