//! `cargo run --release -p bench`: figures for wxtopup, each against a baseline measured in the same run.
//!
//! - fulfilment throughput against the ideal for the same concurrency (fake carrier answering in 50 ms);
//! - cold start of the release binary, on an empty and on a migrated SQLite file, against a bare axum
//!   hello-world (`src/bin/hello.rs`);
//! - a storm of duplicate payment callbacks on SQLite and MariaDB, against the hello-world's `POST /echo`,
//!   with a check that every order was marked paid exactly once;
//! - memory of the service process idle and after that load, against the hello-world's;
//! - the latency `POST /payment/create` adds over a fake WeChat open API answering in 20 ms;
//! - the size of the release binary against the hello-world's.
//!
//! `BENCH_ONLY=startup,storm` (any of fulfilment, startup, storm, create, size) runs only those parts.
//! Both binaries are built first (`cargo build --release`), so this one command measures the current code.
//! Figures are printed, never asserted (the storm's exactly-once count included: it is reported as found).
//! The MariaDB parts need a server at `BENCH_MYSQL_URL` (default `mysql://root@127.0.0.1:3306`); without
//! one they say so and are skipped. Databases used there: `wxtopup_bench` and `wxtopup_bench_storm`
//! (dropped after use). All traffic stays on 127.0.0.1, and child processes die with the bench.

mod create;
mod fulfilment;
mod process;
mod startup;
mod storm;
mod util;

use std::time::Instant;

#[tokio::main]
async fn main() {
    let started = Instant::now();
    let binaries = util::build_binaries();
    eprintln!("bench: binaries ready after {:.0} s", started.elapsed().as_secs_f64());

    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let wanted = |part: &str| only.is_empty() || only.split(',').any(|p| p.trim() == part);
    let timed = |part: &str, since: Instant| eprintln!("bench: {part} took {:.0} s", since.elapsed().as_secs_f64());
    if wanted("fulfilment") {
        let since = Instant::now();
        fulfilment::run().await;
        timed("fulfilment", since);
    }
    if wanted("startup") {
        let since = Instant::now();
        startup::run(&binaries).await;
        timed("startup", since);
    }
    if wanted("storm") {
        let since = Instant::now();
        storm::run(&binaries).await;
        timed("storm", since);
    }
    if wanted("create") {
        let since = Instant::now();
        create::run(&binaries).await;
        timed("create", since);
    }
    if wanted("size") {
        let (service, hello) = (util::file_size(&binaries.service), util::file_size(&binaries.hello));
        println!("release binary size (same profile)");
        println!(
            "  wxtopup: {} (hello-world {}) → {}",
            util::mib(service / 1024),
            util::mib(hello / 1024),
            util::times(service as f64, hello as f64)
        );
    }
    eprintln!("bench: finished in {:.0} s", started.elapsed().as_secs_f64());
}
