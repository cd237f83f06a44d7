use std::process::ExitCode;

use wxtopup::app::{self, Application};
use wxtopup::config::Settings;
use wxtopup::telemetry;

const USAGE: &str = "usage: wxtopup [serve | migrate]";

#[tokio::main]
async fn main() -> ExitCode {
    let command = std::env::args().nth(1);
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => {
            // Tracing is configured from the settings, so this one line goes straight to stderr.
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&settings);
    let result = match command.as_deref() {
        None | Some("serve") => serve(settings).await,
        Some("migrate") => app::migrate(&settings).await.map_err(|e| e.to_string()),
        Some(other) => {
            eprintln!("unknown command {other:?}; {USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "wxtopup stopped");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> Result<(), String> {
    let application = Application::build(settings).await.map_err(|e| e.to_string())?;
    application.run_until_stopped().await.map_err(|e| e.to_string())
}
