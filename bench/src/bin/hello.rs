//! The baseline server: bare axum on the same runtime as the service, nothing else. `GET /health` answers
//! 200 with a small JSON object; `POST /echo` parses the JSON body and answers like the payment callback
//! does (`{"errcode":0,"errmsg":"ok"}`). `GET /products` and `GET /orders` answer fixed bodies shaped and
//! sized like the service's (its four seeded products; a first page of 20 unpaid orders of 50), serialised
//! anew for each request as the service's are. Listens on `PORT` (default 3000) on all interfaces, like
//! the service.

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
    let (products, orders) = (products(), orders());
    let app = Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/echo", post(|Json(_body): Json<Value>| async { Json(json!({"errcode": 0, "errmsg": "ok"})) }))
        .route("/products", get(move || async move { Json(products.clone()) }))
        .route("/orders", get(move || async move { Json(orders.clone()) }));
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

/// What the service's `GET /products` answers on a fresh database: the catalog its migrations seed.
fn products() -> Value {
    let product = |id: u32, carrier: &str, face: &str, price: &str| {
        json!({
            "id": id,
            "name": format!("{carrier} {face} MNT"),
            "description": format!("{carrier} (Mongolia) prepaid credit, {face} MNT"),
            "price": price,
            "faceValue": face.replace(',', ""),
            "faceCurrency": "MNT",
            "carrier": carrier,
            "country": "MN",
        })
    };
    json!([
        product(1, "Unitel", "5,000", "12.00"),
        product(2, "Unitel", "10,000", "23.00"),
        product(3, "Mobicom", "5,000", "12.00"),
        product(4, "Mobicom", "10,000", "23.00"),
    ])
}

/// What the service's `GET /orders` answers a buyer with 50 unpaid orders: the first page of 20.
fn orders() -> Value {
    let items: Vec<Value> = (0..20)
        .map(|i| {
            let at = format!("2026-11-23T12:00:{:02}.{:03}Z", i / 10, (i % 10) * 100);
            json!({
                "orderNumber": format!("ORD176390000{i:04}Ab3x"),
                "productId": 1,
                "productName": "Unitel 5,000 MNT",
                "phoneNumber": format!("+9768811{:04}", 4 + i),
                "amount": "12.00",
                "status": "unpaid",
                "createdAt": at,
                "updatedAt": at,
                "paidAt": null,
                "transactionId": null,
                "refundAmount": "0.00",
            })
        })
        .collect();
    json!({"items": items, "page": 1, "pageSize": 20, "total": 50})
}
