//! Shared pieces: building the binaries under test, free ports, percentiles, memory readings, MariaDB
//! set-up and the formatting of figures.

use sea_orm::{ConnectOptions, ConnectionTrait, Database};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The release binaries the process measurements run.
pub struct Binaries {
    pub service: PathBuf,
    pub hello: PathBuf,
}

/// Builds `target/release/wxtopup` and `target/release/hello` with the workspace's release profile, so
/// one `cargo run --release -p bench` measures the current code.
pub fn build_binaries() -> Binaries {
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for args in [["-p", "wxtopup", "--bin", "wxtopup"], ["-p", "bench", "--bin", "hello"]] {
        eprintln!("bench: cargo build --release {}", args.join(" "));
        let mut command = Command::new(&cargo);
        // `cargo run` hands the bench the package's CARGO_PKG_*, CARGO_MANIFEST_DIR, …; build scripts that
        // watch those (ring does) would rebuild under this cargo, then again under the next plain one.
        for (name, _) in std::env::vars_os() {
            if name.to_str().is_some_and(set_by_cargo_run) {
                command.env_remove(&name);
            }
        }
        let status = command
            .args(["build", "--release", "--quiet"])
            .args(args)
            .current_dir(&root)
            .status()
            .unwrap_or_else(|e| panic!("cannot run {cargo}: {e}"));
        assert!(status.success(), "cargo build --release {} failed ({status})", args.join(" "));
    }
    let release = target_dir().join("release");
    let binaries = Binaries { service: release.join("wxtopup"), hello: release.join("hello") };
    for binary in [&binaries.service, &binaries.hello] {
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

/// `{server}/{name}`, dropped and created afresh; `None` when the server does not answer.
pub async fn fresh_mysql(server: &str, name: &str) -> Option<String> {
    let mut options = ConnectOptions::new(server.to_string());
    options.connect_timeout(Duration::from_secs(3)).sqlx_logging(false);
    let admin = Database::connect(options).await.ok()?;
    admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name}")).await.ok()?;
    admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.ok()?;
    Some(format!("{}/{name}", server.trim_end_matches('/')))
}

/// Drops `{server}/{name}`; best effort.
pub async fn drop_mysql(server: &str, name: &str) {
    if let Ok(admin) = Database::connect(server).await {
        let _ = admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name}")).await;
    }
}

pub fn mysql_server() -> String {
    std::env::var("BENCH_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
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
