//! `cargo run --release -p bench`: figures for wxtopup, each against a baseline measured in the same run.
//! The parts, in the order they run, by the names `BENCH_ONLY` takes:
//!
//! - `fulfilment`: fulfilment throughput against the ideal for the same concurrency (fake carrier
//!   answering in 50 ms), on SQLite and MariaDB;
//! - `startup`: cold start of the release binary, on an empty and on a migrated SQLite file, against a
//!   bare axum hello-world (`src/bin/hello.rs`);
//! - `ceiling`: each database's own write ceiling (single-row commits from 32 clients): SQLite opened the
//!   service's way and, for comparison, plainly at `synchronous=NORMAL` and `FULL`; MariaDB; PostgreSQL;
//! - `writes`: `POST /orders` from 32 concurrent writers on SQLite, MariaDB and PostgreSQL, against that
//!   database's ceiling, with the 503s, "database is locked" answers and, on SQLite, the WAL's size and
//!   the bytes written per order; then the same orders placed in process (the service's `place_order`
//!   on its pool, no HTTP), so the distance between the two is the service's own cost;
//! - `storm`: a storm of duplicate payment callbacks on SQLite, MariaDB and PostgreSQL, against the
//!   hello-world's `POST /echo` and the database's ceiling, with a check that every order was marked paid
//!   exactly once; memory of the service process idle and after that load, against the hello-world's;
//! - `reads`: `GET /products` and `GET /orders` on SQLite from 32 concurrent clients, against hello-world
//!   routes answering bodies of the same shape;
//! - `create`: the latency `POST /payment/create` adds over a fake WeChat open API answering in 20 ms;
//! - `size`: the size of the release binary against the hello-world's.
//!
//! `BENCH_ONLY=startup,storm` (any of the names above, comma-separated) runs only those parts. `writes`
//! and `storm` need the ceilings as their denominator: selecting either measures them too (and prints
//! them, as `ceiling` would), once, before the first of them.
//! Both binaries are built first (`cargo build --release`, or `--profile $BENCH_PROFILE`), so this one
//! command measures the current code.
//! Figures are printed, never asserted (the storm's exactly-once count included: it is reported as found).
//! MariaDB and PostgreSQL figures need a server at `BENCH_MYSQL_URL` (default `mysql://root@127.0.0.1:3306`)
//! and `BENCH_PG_URL` (default `postgres://postgres@127.0.0.1:5432`); without one they say so and are
//! skipped. The databases made there are named `wxtopup_bench_*` and dropped after use, whatever happens
//! to the part (see `util::ScratchDb`). All traffic stays on 127.0.0.1, and child processes die with the
//! bench.

mod ceiling;
mod create;
mod fulfilment;
mod process;
mod reads;
mod startup;
mod storm;
mod util;
mod writes;

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
    let ceilings = if wanted("ceiling") || wanted("writes") || wanted("storm") {
        let since = Instant::now();
        let ceilings = ceiling::run().await;
        timed("ceiling", since);
        Some(ceilings)
    } else {
        None
    };
    if let (true, Some(ceilings)) = (wanted("writes"), &ceilings) {
        let since = Instant::now();
        writes::run(&binaries, ceilings).await;
        timed("writes", since);
    }
    if let (true, Some(ceilings)) = (wanted("storm"), &ceilings) {
        let since = Instant::now();
        storm::run(&binaries, ceilings).await;
        timed("storm", since);
    }
    if wanted("reads") {
        let since = Instant::now();
        reads::run(&binaries).await;
        timed("reads", since);
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
