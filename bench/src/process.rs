//! Child server processes: started with a clean environment in a directory of their own, timed to their
//! first healthy answer, stopped with SIGTERM (SIGKILL if they linger), and killed whatever happens to
//! the bench: on drop, and by the kernel when the bench itself dies (`PR_SET_PDEATHSIG`).

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{self, Binaries, Memory};

/// How long to wait between tries of `GET /health` while a server starts. Each try costs well under a
/// millisecond; at 5 ms the hello-world's few milliseconds would mostly measure the polling period.
pub const POLL_INTERVAL: Duration = Duration::from_millis(1);
/// A server that is not healthy by then is reported as broken.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a SIGTERM is given before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What to run: `dir` is the working directory and holds `<name>.log` (stdout and stderr).
pub struct Launch<'a> {
    pub name: &'a str,
    pub program: &'a Path,
    pub dir: &'a Path,
    /// The whole environment apart from `PORT`, which is chosen here.
    pub env: Vec<(&'a str, String)>,
}

impl<'a> Launch<'a> {
    /// The service binary that has `database_url`'s driver, in development mode on it ([`service_env`]).
    pub fn service(name: &'a str, binaries: &'a Binaries, database_url: &str, dir: &'a Path) -> Self {
        Launch { name, program: binaries.service_for(database_url), dir, env: service_env(database_url) }
    }
}

pub struct Server {
    child: Option<Child>,
    pid: u32,
    port: u16,
    name: String,
    log: PathBuf,
}

impl Server {
    /// Spawns the program and polls `GET /health` every [`POLL_INTERVAL`] until it answers 200; returns
    /// the server and the time from just before the spawn to that answer.
    pub async fn start(launch: Launch<'_>) -> (Server, Duration) {
        let port = util::free_port();
        let log = launch.dir.join(format!("{}.log", launch.name));
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", log.display()));
        let err = out.try_clone().expect("duplicate the log file handle");
        let mut command = Command::new(launch.program);
        command
            .env_clear()
            .envs(launch.env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("PORT", port.to_string())
            // The bench measures throughput from one buyer and one address, not the rate limits.
            .env("RATE_LIMIT_ORDERS_PER_MINUTE", "100000000")
            .env("RATE_LIMIT_PAYMENTS_PER_MINUTE", "100000000")
            .env("RATE_LIMIT_CALLBACK_QUERIES_PER_MINUTE", "100000000")
            .env("RATE_LIMIT_PUBLIC_PER_MINUTE", "100000000")
            .current_dir(launch.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // SAFETY: runs in the forked child before exec and only calls prctl, which is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(2))
            .build()
            .expect("HTTP client for health polling");
        let url = format!("http://127.0.0.1:{port}/health");

        let started = Instant::now();
        let child = command.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", launch.program.display()));
        let mut server = Server { pid: child.id(), child: Some(child), port, name: launch.name.to_string(), log };
        loop {
            if let Ok(response) = client.get(&url).send().await {
                if response.status() == reqwest::StatusCode::OK {
                    return (server, started.elapsed());
                }
            }
            if let Some(status) = server.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                server.child = None;
                panic!("{} exited before it was healthy ({status}); its log:\n{}", server.name, server.log_tail());
            }
            if started.elapsed() > START_TIMEOUT {
                panic!("{} not healthy after {START_TIMEOUT:?}; its log:\n{}", server.name, server.log_tail());
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn memory(&self) -> Memory {
        util::memory(self.pid)
    }

    /// The CPU time the server has used so far.
    pub fn cpu_time(&self) -> Duration {
        util::cpu_time(self.pid)
    }

    /// `write_bytes` of `/proc/<pid>/io`: what the process has had written to storage so far.
    pub fn write_bytes(&self) -> u64 {
        let path = format!("/proc/{}/io", self.pid);
        let io = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
        io.lines()
            .find_map(|line| line.strip_prefix("write_bytes:")?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{path} has no write_bytes line"))
    }

    /// Lines of the server's output so far that contain `needle`.
    pub fn log_lines_with(&self, needle: &str) -> usize {
        std::fs::read_to_string(&self.log).unwrap_or_default().lines().filter(|l| l.contains(needle)).count()
    }

    /// SIGTERM, then SIGKILL if it is still there after [`STOP_TIMEOUT`].
    pub async fn stop(mut self) {
        let Some(mut child) = self.child.take() else { return };
        // SAFETY: plain syscall on the pid of a child this process spawned and has not reaped yet.
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
        }
        let asked = Instant::now();
        while asked.elapsed() < STOP_TIMEOUT {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        eprintln!("bench: {} ignored SIGTERM for {STOP_TIMEOUT:?}; killing it", self.name);
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The last lines of the server's output, for error messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The service in development mode with WeChat and the carrier simulated, callbacks taken as they come
/// (no confirming query, no merchant check), no scheduler, a short shutdown grace, and a pool of
/// [`crate::ceiling::CLIENTS`] connections.
pub fn service_env(database_url: &str) -> Vec<(&'static str, String)> {
    [
        ("APP_ENV", "development"),
        ("DATABASE_URL", database_url),
        ("RUST_LOG", "warn"),
        ("SCHEDULER_ENABLED", "false"),
        ("PAYMENT_SANDBOX", "true"),
        ("TOPUP_PROVIDER", "sandbox"),
        ("CALLBACK_VERIFY", "false"),
        ("SHUTDOWN_GRACE_SECONDS", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    // MySQL and PostgreSQL: as many connections as the ceiling's clients, so a write path's ratio to
    // the ceiling compares the same concurrency (the deployed default is 10).
    .chain([("DATABASE_MAX_CONNECTIONS", crate::ceiling::CLIENTS.to_string())])
    .collect()
}
