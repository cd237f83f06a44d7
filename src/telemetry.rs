//! Logging: human-readable in development, one JSON object per line in production (cloud hosting
//! collects stdout).

use tracing_subscriber::EnvFilter;

use crate::config::Settings;

pub fn init(settings: &Settings) {
    let filter = EnvFilter::try_new(&settings.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // try_init: tests and benches may build several applications in one process.
    let _ = if settings.is_production() { builder.json().flatten_event(true).try_init() } else { builder.try_init() };
}
