//! API tests: the real application on a random port, a fresh database per test (SQLite by default;
//! `TEST_DATABASE_URL=mysql://…` or `postgres://…` for a server), and a fake WeChat.

mod helpers;

mod admin;
mod catalog;
mod cli;
mod compensation;
mod fulfilment;
mod group_commit;
mod hardening;
mod health;
mod idempotency;
mod identity;
mod lifecycle;
mod notifications;
mod observability;
mod openapi;
mod orders;
mod payment_callback;
mod payment_create;
mod refunds;
mod reloadly;
mod sandbox;
