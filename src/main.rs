use std::process::ExitCode;

use wxtopup::app::{self, Application};
use wxtopup::config::Settings;
use wxtopup::telemetry;

const USAGE: &str = "usage: wxtopup [serve | migrate | --help]";

const HELP: &str = "\
wxtopup: top-ups sold through a WeChat mini-program, paid with WeChat Pay on WeChat Cloud Hosting.

usage: wxtopup [serve | migrate | --help]

  serve      apply the migrations and serve HTTP on PORT (the default command)
  migrate    apply the migrations and exit
  --help     print this and exit (also -h)

Configuration comes from the environment (and .env.development outside production). The ones that
matter first:
  APP_ENV           development (default) or production
  DATABASE_URL      sqlite://data/wxtopup.db?mode=rwc (default), mysql://..., postgres://...
  PORT              3000 (default)
  PAYMENT_SANDBOX   true: simulate WeChat Pay (no credentials needed)
  ADMIN_TOKEN       bearer token of the admin API and the console (32+ characters in production)
Every variable, with its default, is listed in the README's Configuration section.
";

#[tokio::main]
async fn main() -> ExitCode {
    let command = std::env::args().nth(1);
    if matches!(command.as_deref(), Some("--help" | "-h" | "help")) {
        // Before the settings are read: help works whatever the environment holds.
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => {
            // Tracing is configured from the settings, so this goes straight to stderr.
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
