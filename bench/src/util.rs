//! Shared pieces: building the binaries under test, free ports, percentiles, memory readings, scratch
//! databases on MariaDB and PostgreSQL, closed-loop load and the formatting of figures.

use sea_orm::{ConnectOptions, ConnectionTrait, Database};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The release binaries the process measurements run.
pub struct Binaries {
    /// The default build (SQLite and MySQL), the one a deployment runs.
    pub service: PathBuf,
    /// The build with `--features postgres`, for the PostgreSQL runs only.
    pub service_postgres: PathBuf,
    pub hello: PathBuf,
}

impl Binaries {
    /// The service binary that has the driver for `database_url`.
    pub fn service_for(&self, database_url: &str) -> &Path {
        if database_url.starts_with("postgres") {
            &self.service_postgres
        } else {
            &self.service
        }
    }
}

/// What [`build_binaries`] runs, each after `cargo build --release --quiet`, and the name in
/// `target/release` its binary is copied to (builds of one binary with different features overwrite
/// each other there): the one place to change what is measured. `BENCH_PROFILE=profiling` builds with
/// the workspace's `profiling` profile instead (the release build with its symbols, for `perf`) into
/// `target/profiling`; its size figure is then not the release binary's.
const BUILDS: [(&[&str], &str, &str); 3] = [
    (&["-p", "wxtopup", "--bin", "wxtopup", "--features", "postgres"], "wxtopup", "wxtopup-postgres"),
    (&["-p", "wxtopup", "--bin", "wxtopup"], "wxtopup", "wxtopup-default"),
    (&["-p", "bench", "--bin", "hello"], "hello", "hello"),
];

/// Builds `target/release/wxtopup` and `target/release/hello` with the workspace's release profile, so
/// one `cargo run --release -p bench` measures the current code.
pub fn build_binaries() -> Binaries {
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let profile = std::env::var("BENCH_PROFILE").unwrap_or_else(|_| "release".into());
    let release = target_dir().join(&profile);
    for (args, built, copy) in BUILDS {
        eprintln!("bench: cargo build --profile {profile} {}", args.join(" "));
        let mut command = Command::new(&cargo);
        // `cargo run` hands the bench the package's CARGO_PKG_*, CARGO_MANIFEST_DIR, …; build scripts that
        // watch those (ring does) would rebuild under this cargo, then again under the next plain one.
        for (name, _) in std::env::vars_os() {
            if name.to_str().is_some_and(set_by_cargo_run) {
                command.env_remove(&name);
            }
        }
        let status = command
            .args(["build", "--profile", &profile, "--quiet"])
            .args(args)
            .current_dir(&root)
            .status()
            .unwrap_or_else(|e| panic!("cannot run {cargo}: {e}"));
        assert!(status.success(), "cargo build --profile {profile} {} failed ({status})", args.join(" "));
        if built != copy {
            let (from, to) = (release.join(built), release.join(copy));
            std::fs::copy(&from, &to)
                .unwrap_or_else(|e| panic!("cannot copy {} to {}: {e}", from.display(), to.display()));
        }
    }
    let binaries = Binaries {
        service: release.join("wxtopup-default"),
        service_postgres: release.join("wxtopup-postgres"),
        hello: release.join("hello"),
    };
    for binary in [&binaries.service, &binaries.service_postgres, &binaries.hello] {
        assert!(binary.is_file(), "{} missing after the build", binary.display());
    }
    binaries
}

/// The variables `cargo run` sets for the program it runs, as opposed to those of the user's shell.
fn set_by_cargo_run(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || matches!(
            name,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_RUSTC_CURRENT_DIR"
                | "OUT_DIR"
        )
}

pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// A port nobody listens on right now (the kernel's choice, released at once for a child to bind).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port on 127.0.0.1");
    listener.local_addr().expect("local address of the probe listener").port()
}

/// A database server the bench can make scratch databases on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DbServer {
    MariaDb,
    Postgres,
}

impl DbServer {
    pub const ALL: [DbServer; 2] = [DbServer::MariaDb, DbServer::Postgres];

    pub fn label(self) -> &'static str {
        match self {
            DbServer::MariaDb => "MariaDB",
            DbServer::Postgres => "PostgreSQL",
        }
    }

    /// `BENCH_MYSQL_URL` (default `mysql://root@127.0.0.1:3306`) or `BENCH_PG_URL` (default
    /// `postgres://postgres@127.0.0.1:5432`), without a database.
    pub fn url(self) -> String {
        let (var, default) = match self {
            DbServer::MariaDb => ("BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306"),
            DbServer::Postgres => ("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432"),
        };
        std::env::var(var).unwrap_or_else(|_| default.into()).trim_end_matches('/').to_string()
    }

    /// Where `CREATE` and `DROP DATABASE` are sent: PostgreSQL cannot drop the database a session is
    /// connected to, so its sessions go to `postgres`; MariaDB's to none.
    fn admin_url(self) -> String {
        match self {
            DbServer::MariaDb => self.url(),
            DbServer::Postgres => format!("{}/postgres", self.url()),
        }
    }

    fn drop_sql(self, name: &str) -> String {
        match self {
            DbServer::MariaDb => format!("DROP DATABASE IF EXISTS {name}"),
            // FORCE: connections a pool of the bench or of a service left behind do not stop the drop.
            DbServer::Postgres => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        }
    }
}

/// A database of the bench's own, created empty by [`fresh_database`] and dropped when this goes away:
/// by [`ScratchDb::drop_now`] on the normal path, by `Drop` (on a thread of its own) after a panic.
pub struct ScratchDb {
    pub server: DbServer,
    pub name: String,
    url: String,
    dropped: bool,
}

impl ScratchDb {
    /// `{server}/{name}`, for `DATABASE_URL`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Drops the database now; a failure is reported on stderr (and `Drop` does not try again).
    pub async fn drop_now(mut self) {
        self.dropped = true;
        drop_database(self.server, &self.name).await;
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // `Drop` cannot await, and may run on a worker of the bench's runtime: a runtime of its own on
        // a thread of its own.
        let (server, name) = (self.server, self.name.clone());
        let dropping =
            std::thread::spawn(move || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime.block_on(drop_database(server, &name)),
                Err(error) => eprintln!("bench: cannot drop {name}: no runtime ({error})"),
            });
        let _ = dropping.join();
    }
}

/// `{server}/{name}`, dropped and created afresh; `None` when the server does not answer. `name` must
/// start with `wxtopup_bench_`, so that whatever the bench leaves behind is recognisable.
pub async fn fresh_database(server: DbServer, name: &str) -> Option<ScratchDb> {
    assert!(
        name.starts_with("wxtopup_bench_") && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "scratch database name {name:?}"
    );
    let admin = admin(server).await?;
    admin.execute_unprepared(&server.drop_sql(name)).await.ok()?;
    admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.ok()?;
    let _ = admin.close().await;
    Some(ScratchDb { server, name: name.to_string(), url: format!("{}/{name}", server.url()), dropped: false })
}

async fn admin(server: DbServer) -> Option<sea_orm::DatabaseConnection> {
    let mut options = ConnectOptions::new(server.admin_url());
    options.max_connections(1).connect_timeout(Duration::from_secs(3)).sqlx_logging(false);
    Database::connect(options).await.ok()
}

async fn drop_database(server: DbServer, name: &str) {
    let Some(admin) = admin(server).await else {
        eprintln!("bench: cannot drop {name}: no server at {}", server.url());
        return;
    };
    if let Err(error) = admin.execute_unprepared(&server.drop_sql(name)).await {
        eprintln!("bench: cannot drop {name} on {}: {error}", server.label());
    }
    let _ = admin.close().await;
}

/// Resident memory of a process from `/proc/<pid>/status`, in KiB.
#[derive(Clone, Copy)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub rss_kib: u64,
    /// `VmHWM`: the most it has been resident.
    pub peak_kib: u64,
}

pub fn memory(pid: u32) -> Memory {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name)?.trim().strip_suffix("kB")?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{path} has no {name} line"))
    };
    Memory { rss_kib: field("VmRSS:"), peak_kib: field("VmHWM:") }
}

/// CPU time (user + system, every thread) a process has used, from `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32) -> Duration {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    cpu_time_of(&stat).unwrap_or_else(|| panic!("{path} has no utime and stime: {stat}"))
}

/// CPU time of every process whose name is `command` (a database server's processes), `None` if none
/// runs. A process that ends meanwhile takes its time with it: read around a run, it can only undercount.
pub fn cpu_time_of_command(command: &str) -> Option<Duration> {
    let mut total = None;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let dir = entry.path();
        if std::fs::read_to_string(dir.join("comm")).ok().as_deref().map(str::trim) != Some(command) {
            continue;
        }
        if let Some(used) = std::fs::read_to_string(dir.join("stat")).ok().as_deref().and_then(cpu_time_of) {
            total = Some(total.unwrap_or(Duration::ZERO) + used);
        }
    }
    total
}

/// `utime` + `stime` of a `/proc/<pid>/stat` line (fields 14 and 15, after the parenthesised name).
fn cpu_time_of(stat: &str) -> Option<Duration> {
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = u64::try_from(per_second).ok().filter(|&t| t > 0)?;
    Some(Duration::from_micros(ticks * 1_000_000 / per_second))
}

/// Latencies of one run, sorted, for nearest-rank percentiles.
pub struct Latencies(Vec<Duration>);

impl Latencies {
    pub fn new(mut samples: Vec<Duration>) -> Self {
        assert!(!samples.is_empty(), "no samples");
        samples.sort_unstable();
        Latencies(samples)
    }

    /// Nearest rank: the smallest sample with at least `p` percent of the samples at or below it.
    pub fn percentile(&self, p: f64) -> Duration {
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1]
    }

    pub fn median(&self) -> Duration {
        self.percentile(50.0)
    }
}

pub fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// `a / b` as a multiplier: `13.3×`, `0.42×`.
pub fn times(a: f64, b: f64) -> String {
    if b <= 0.0 {
        return "n/a".into();
    }
    let r = a / b;
    if r < 10.0 {
        format!("{r:.2}×")
    } else {
        format!("{r:.1}×")
    }
}

pub fn duration_times(a: Duration, b: Duration) -> String {
    times(a.as_secs_f64(), b.as_secs_f64())
}

/// The size of a file, in bytes.
pub fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path)
        .map(|m| m.len())
        .unwrap_or_else(|e| panic!("cannot read the size of {}: {e}", path.display()))
}

/// The openid every order of the bench belongs to (development mode trusts `X-Mock-Openid`).
pub const OPENID: &str = "bench";

/// `+9768811xxxx` for the `i`-th order, never ending in 00 to 03: the sandbox carrier reserves those
/// endings for refusals, losses, timeouts and pending top-ups, and every order here should just be delivered.
pub fn phone_number(i: usize) -> String {
    format!("+9768811{:04}", (i / 96) * 100 + 4 + i % 96)
}

/// An unpaid order for product 1 placed through `POST /orders`: its number and its amount in fen.
pub async fn place_order(client: &reqwest::Client, base: &str, i: usize) -> (String, i64) {
    let body = serde_json::json!({"productId": 1, "phoneNumber": phone_number(i)});
    let response = client
        .post(format!("{base}/orders"))
        .header("X-Mock-Openid", OPENID)
        .json(&body)
        .send()
        .await
        .expect("POST /orders answers");
    let status = response.status();
    let text = response.text().await.expect("POST /orders body");
    assert_eq!(status, reqwest::StatusCode::CREATED, "POST /orders answered {status}: {text}");
    let order: serde_json::Value = serde_json::from_str(&text).expect("POST /orders answers JSON");
    let number = order["orderNumber"].as_str().expect("orderNumber in the new order").to_string();
    let yuan: f64 = order["amount"].as_str().and_then(|a| a.parse().ok()).expect("amount in the new order");
    (number, (yuan * 100.0).round() as i64)
}

/// One closed-loop run: every request's latency and what [`closed_loop`]'s caller made of its answer.
pub struct Run<T> {
    /// From the start to the end of the last request (those started before the deadline finish).
    pub elapsed: Duration,
    pub samples: Vec<(Duration, T)>,
}

impl<T> Run<T> {
    pub fn per_second(&self) -> f64 {
        self.samples.len() as f64 / self.elapsed.as_secs_f64()
    }

    pub fn latencies(&self) -> Latencies {
        Latencies::new(self.samples.iter().map(|(d, _)| *d).collect())
    }

    pub fn count(&self, what: impl Fn(&T) -> bool) -> usize {
        self.samples.iter().filter(|(_, t)| what(t)).count()
    }
}

/// `clients` tasks, each sending one request after the other for `duration`: `request(client, i)` with
/// `i` counting the requests of the whole run from 0. Each request is timed from its call to its end.
pub async fn closed_loop<T, F, Fut>(clients: usize, duration: Duration, request: F) -> Run<T>
where
    F: Fn(usize, usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = T> + Send,
    T: Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let (request, next) = (request.clone(), next.clone());
            tokio::spawn(async move {
                let mut samples = Vec::new();
                while Instant::now() < deadline {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let sent = Instant::now();
                    let outcome = request(client, i).await;
                    samples.push((sent.elapsed(), outcome));
                }
                samples
            })
        })
        .collect();
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await.expect("a load client panicked"));
    }
    Run { elapsed: started.elapsed(), samples }
}

/// An HTTP client for `clients` concurrent clients of one server, keeping their connections.
pub fn http_client(clients: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_the_last_parenthesis_of_the_name() {
        // utime 150 and stime 50 ticks; the name holds a space and a parenthesis of its own.
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 150 50 0 0 20 0 3 0 1000 0 0";
        // SAFETY: sysconf only reads a configuration value.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        assert_eq!(cpu_time_of(stat), Some(Duration::from_micros(200 * 1_000_000 / per_second)));
        assert_eq!(cpu_time_of("42 (truncated"), None);
        assert_eq!(cpu_time_of_command("no-such-command-here"), None);
    }
}
