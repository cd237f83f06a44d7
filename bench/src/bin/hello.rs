//! The baseline server: bare axum on the same runtime as the service, nothing else. `GET /health` answers
//! 200 with a small JSON object; `POST /echo` parses the JSON body and answers like the payment callback
//! does (`{"errcode":0,"errmsg":"ok"}`). Listens on `PORT` (default 3000) on all interfaces, like the service.

use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let port = match std::env::var("PORT").map(|p| p.parse::<u16>()) {
        Err(_) => 3000,
        Ok(Ok(port)) => port,
        Ok(Err(_)) => {
            eprintln!("PORT must be a port number");
            return ExitCode::from(2);
        }
    };
    let app = Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/echo", post(|Json(_body): Json<Value>| async { Json(json!({"errcode": 0, "errmsg": "ok"})) }));
    let listener = match tokio::net::TcpListener::bind(("0.0.0.0", port)).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("cannot listen on port {port}: {error}");
            return ExitCode::FAILURE;
        }
    };
    match axum::serve(listener, app).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("server stopped: {error}");
            ExitCode::FAILURE
        }
    }
}
