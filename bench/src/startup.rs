//! Cold start: from spawning the release binary to its first 200 on `GET /health`, on an empty SQLite
//! file (the migrations run) and on one already migrated, against the hello-world binary. The three are
//! interleaved run by run so that whatever else the machine does falls on all of them alike; one
//! untimed start of each comes first so that the binaries are in the page cache.

use std::time::Duration;

use crate::process::{service_env, Launch, Server, POLL_INTERVAL};
use crate::util::{duration_times, ms, Binaries, Latencies};

const RUNS: usize = 10;

pub async fn run(binaries: &Binaries) {
    println!("cold start to the first 200 from GET /health (median of {RUNS} runs, polled every {POLL_INTERVAL:?})");
    let (mut empty, mut migrated, mut hello) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..=RUNS {
        let (e, m) = service(binaries).await;
        let h = start(binaries.hello.as_path(), "hello", Vec::new()).await;
        // Run 0 warms the page cache and is not counted.
        if run > 0 {
            empty.push(e);
            migrated.push(m);
            hello.push(h);
        }
    }
    let hello = Latencies::new(hello).median();
    for (label, samples) in [("empty SQLite (migrations included)", empty), ("migrated SQLite", migrated)] {
        let median = Latencies::new(samples).median();
        println!("  {label}: {} (hello-world {}) → {}", ms(median), ms(hello), duration_times(median, hello));
    }
}

/// One start on a new, empty SQLite file, then one on the same file, now migrated.
async fn service(binaries: &Binaries) -> (Duration, Duration) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("wxtopup.db");
    std::fs::File::create(&file).unwrap_or_else(|e| panic!("cannot create {}: {e}", file.display()));
    let url = format!("sqlite://{}?mode=rwc", file.display());
    let empty = start_in(&binaries.service, "wxtopup", dir.path(), service_env(&url)).await;
    let migrated = start_in(&binaries.service, "wxtopup", dir.path(), service_env(&url)).await;
    (empty, migrated)
}

async fn start(program: &std::path::Path, name: &str, env: Vec<(&str, String)>) -> Duration {
    let dir = tempfile::tempdir().expect("temp dir");
    start_in(program, name, dir.path(), env).await
}

/// Starts the program in `dir`, stops it again, and returns how long it took to be healthy.
async fn start_in(program: &std::path::Path, name: &str, dir: &std::path::Path, env: Vec<(&str, String)>) -> Duration {
    let (server, took) = Server::start(Launch { name, program, dir, env }).await;
    server.stop().await;
    took
}
