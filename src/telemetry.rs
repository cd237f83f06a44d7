//! Logging and metrics. Logs are human-readable in development and one JSON object per line in
//! production (cloud hosting collects stdout). Every request is logged once, at its end, with a request
//! id, and counted in Prometheus metrics.

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use rand::distr::Alphanumeric;
use rand::Rng;
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

use crate::config::Settings;

mod prometheus;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn init(settings: &Settings) {
    let filter = EnvFilter::try_new(&settings.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // try_init: tests and benches may build several applications in one process.
    let _ = if settings.is_production() {
        builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init()
    } else {
        builder.try_init()
    };
}

/// The process-wide metrics (the recorder is installed on first use; every application in the process
/// shares it). Building it reads no clock, so it is done in line at start.
pub fn metrics_handle() -> &'static Arc<prometheus::Registry> {
    static HANDLE: OnceLock<Arc<prometheus::Registry>> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let registry = Arc::new(prometheus::Registry::default());
        // Another recorder may already be installed (a host program); then ours only renders.
        let _ = metrics::set_global_recorder(prometheus::PrometheusRecorder(registry.clone()));
        registry
    })
}

/// Short, stable, non-reversible tag for an openid in logs (FNV-1a, 32 bits).
pub fn openid_tag(openid: &str) -> String {
    let hash = openid.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    format!("{hash:08x}")
}

/// A caller-supplied request id is kept when it is short and printable; otherwise one is made.
fn request_id(request: &Request) -> String {
    request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| rand::rng().sample_iter(&Alphanumeric).take(16).map(char::from).collect())
}

/// Middleware: request id (taken or made, and returned), one log line per request, HTTP metrics.
pub async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(&request);
    let method = request.method().to_string();
    let route =
        request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let openid = ["x-wx-openid", "x-wx-from-openid", "x-mock-openid"]
        .iter()
        .find_map(|h| request.headers().get(*h)?.to_str().ok())
        .map(openid_tag)
        .unwrap_or_else(|| "-".into());
    let span = tracing::info_span!("http.request", request_id = %id, method = %method, route = %route);
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let latency = started.elapsed();
    span.in_scope(|| {
        tracing::info!(status, latency_ms = latency.as_millis() as u64, openid = %openid, "request finished");
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    let labels = [("route", route), ("method", method), ("status", status.to_string())];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels[..2]).record(latency.as_secs_f64());
    response
}

/// What a panic said, for the log and the alert.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Runs a background task so that a panic in it ends only that task: logged, counted
/// (`task_panics_total{task}`), and the scheduler, the fulfiller and every other task keep going.
pub async fn contain_panics<F>(task: &'static str, work: F)
where
    F: std::future::Future<Output = ()>,
{
    use futures::FutureExt;
    if let Err(panic) = std::panic::AssertUnwindSafe(work).catch_unwind().await {
        let detail = panic_message(panic.as_ref());
        tracing::error!(task, panic = detail, "a background task panicked; the service keeps running");
        metrics::counter!("task_panics_total", "task" => task).increment(1);
    }
}

/// Hands the heap's free memory back to the system. glibc keeps what a burst freed (and what start-up
/// freed: routes, the OpenAPI document's pieces) mapped for later; idle, that is resident memory the
/// instance is billed for. Called once the service is up and with the minute's housekeeping.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and shrinks the allocator's own free lists; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openid_tags_are_short_stable_and_distinct() {
        assert_eq!(openid_tag("oZp5njTTsWaCeEoXi14oeOVCKlik"), openid_tag("oZp5njTTsWaCeEoXi14oeOVCKlik"));
        assert_ne!(openid_tag("a"), openid_tag("b"));
        assert_eq!(openid_tag("anything").len(), 8);
    }

    #[tokio::test]
    async fn a_panicking_task_is_contained() {
        super::contain_panics("test", async { panic!("boom") }).await;
        let mut ran = false;
        super::contain_panics("test", async { ran = true }).await;
        assert!(ran, "later tasks still run");
    }
}
