//! Wiring: the database, the WeChat client, the router, and the server's life.

use crate::group_commit::GroupCommit;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::Router;
use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr, TransactionTrait};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::alerts::{AlertKind, Alerter};
use crate::config::{redact_url, Settings};
use crate::error::{ApiError, ErrorCode};
use crate::fulfilment::{provider_from_settings, Fulfiller};
use crate::jobs;
use crate::limits::Limits;
use crate::routes::{self, ApiDoc};
use crate::telemetry;
use crate::wechat::WechatPay;

/// The platform refuses request bodies over 100 KiB; so does the service.
pub(crate) const MAX_BODY_BYTES: usize = 100 * 1024;

/// What every handler can reach: plain data. What happens after a change is `crate::lifecycle`'s.
/// One reference count to clone (axum clones the state for every route and layer at start, and for
/// every middleware of every request); its parts are reached through `Deref`.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Services {
    pub db: DatabaseConnection,
    /// Writes that may share a commit (see [`crate::group_commit`]).
    pub writes: GroupCommit,
    pub orders: crate::services::orders::OrderIntake,
    /// Where callback deliveries that change nothing else are stored.
    pub deliveries: crate::services::deliveries::DeliveryLog,
    pub settings: Arc<Settings>,
    pub wechat: WechatPay,
    pub fulfiller: Fulfiller,
    pub alerter: Alerter,
    pub notifier: crate::notify::Notifier,
    pub limits: Arc<Limits>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the database {url}: {source}")]
    Database { url: String, source: DbErr },
    #[error("cannot apply migrations: {0}")]
    Migration(DbErr),
    #[error("cannot build the WeChat client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("cannot listen on port {port}: {source}")]
    Bind { port: u16, source: std::io::Error },
    #[error(transparent)]
    Scheduler(#[from] jobs::SchedulerError),
}

pub struct Application {
    listener: TcpListener,
    port: u16,
    router: Router,
    state: AppState,
    jobs: Option<jobs::Jobs>,
}

impl Application {
    /// Connects, migrates, and binds the port (0 = any free port).
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        // A metric recorded before the recorder is installed is not counted.
        telemetry::metrics_handle();
        let db = connect_pool(&settings.database_url, settings.database_max_connections).await?;
        prepare(&db, &settings).await?;
        let wechat = WechatPay::from_settings(&settings.wechat, &db)?;
        let alerter = Alerter::new(db.clone(), settings.alert_webhook_url.clone(), settings.alert_max_per_minute);
        let writes = GroupCommit::new(db.clone());
        let provider = provider_from_settings(&settings.topup, &db, &writes)?;
        let fulfiller = Fulfiller::new(db.clone(), writes.clone(), provider, settings.fulfilment.clone());
        let limits = Limits::new(&settings.http.limits);
        let idle_limits = limits.clone();
        tokio::spawn(telemetry::contain_panics("limits", async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                every.tick().await;
                idle_limits.forget_idle();
                telemetry::release_free_memory();
            }
        }));
        let notifier = crate::notify::Notifier::new(
            db.clone(),
            writes.clone(),
            settings.notify.clone(),
            &settings.wechat.api_base,
            settings.wechat.sandbox,
        );
        let orders = crate::services::orders::OrderIntake::new(&db, writes.clone());
        let deliveries = crate::services::deliveries::DeliveryLog::new(&db, writes.clone());
        let state = AppState(Arc::new(Services {
            db,
            writes,
            orders,
            deliveries,
            settings: Arc::new(settings),
            wechat,
            fulfiller,
            alerter,
            notifier,
            limits,
        }));
        let port = state.settings.port;
        let listener =
            TcpListener::bind(("0.0.0.0", port)).await.map_err(|source| StartError::Bind { port, source })?;
        let port = listener.local_addr().map_err(|source| StartError::Bind { port, source })?.port();
        if let WechatPay::Sandbox(sandbox) = &state.wechat {
            // The simulated platform calls back here, like the real one calls container.path.
            sandbox.set_base(format!("http://127.0.0.1:{port}"));
        }
        tracing::info!(
            port,
            env = ?state.settings.app_env,
            sandbox = state.settings.wechat.sandbox,
            database = %redact_url(&state.settings.database_url),
            "wxtopup listening"
        );
        // Started when serving starts (`run_until`), beside the first request rather than before it.
        let jobs = if state.settings.scheduler_enabled { Some(jobs::prepare(&state)?) } else { None };
        let router = router(state.clone());
        telemetry::release_free_memory();
        Ok(Application { listener, port, router, state, jobs })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until SIGTERM or Ctrl-C, then shuts down gracefully and closes the database (see
    /// [`Application::run_to_exit`]).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.run_to_exit(shutdown_signal()).await
    }

    /// As [`Application::run_until`], then closes the database: the process is about to exit. On
    /// SQLite the last connection to close checkpoints the WAL into the file and removes it, so the next
    /// start (a scale from zero) opens the file without replaying what the last instance wrote.
    pub async fn run_to_exit(
        self,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let db = self.state.db.clone();
        let served = self.run_until(stop).await;
        close(&db).await;
        served
    }

    /// Serves until `stop` completes; then stops accepting, finishes in-flight requests, stops the
    /// scheduler, lets in-flight top-ups finish up to `SHUTDOWN_GRACE_SECONDS`, and releases the claims
    /// of those that did not so another replica takes them over.
    pub async fn run_until(self, stop: impl std::future::Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let header_timeout = self.state.settings.http.header_timeout;
        // The scheduler starts beside the first requests: an instance woken from zero by a request
        // answers it first. If it cannot start, the instance stops serving and `run_until` fails, as a
        // start that failed would: an instance that never sweeps must not look healthy.
        let (failed, scheduler_failed) = tokio::sync::oneshot::channel::<()>();
        let scheduling = self.jobs.map(|prepared| {
            let state = self.state.clone();
            tokio::spawn(async move {
                let scheduler = prepared.start().await;
                match &scheduler {
                    Ok(_) => {
                        // Instances start from zero on demand: sweep once now rather than at the next tick.
                        tokio::spawn(async move {
                            jobs::compensate::run_logged(&state).await;
                            jobs::reconcile::run_logged(&state).await;
                        });
                    }
                    Err(error) => {
                        tracing::error!(%error, "the scheduler did not start; stopping");
                        let _ = failed.send(());
                    }
                }
                scheduler
            })
        });
        let stop = async move {
            tokio::select! {
                () = stop => {}
                Ok(()) = scheduler_failed => {}
            }
        };
        let mut served = serve(self.listener, self.router, header_timeout, stop).await;
        if let Some(scheduling) = scheduling {
            let failure = match scheduling.await {
                Ok(Ok(mut scheduler)) => {
                    let _ = scheduler.shutdown().await;
                    None
                }
                Ok(Err(error)) => Some(error.to_string()),
                Err(error) => Some(error.to_string()),
            };
            if let Some(failure) = failure {
                served = Err(std::io::Error::other(format!("the scheduler did not start: {failure}")));
            }
        }
        if let Err(error) = self.state.fulfiller.shutdown(self.state.settings.shutdown_grace).await {
            tracing::error!(%error, "could not release claims at shutdown; their leases will expire");
        }
        tracing::info!("stopped");
        served
    }
}

/// The accept loop: HTTP/1.1 (what cloud hosting's proxy speaks) with a header-read timeout, so a
/// client that sends its headers slowly cannot hold a connection; each request gets its peer address
/// (`ConnectInfo`). On `stop`: no new connections, then in-flight requests finish.
async fn serve(
    listener: TcpListener,
    router: Router,
    header_timeout: Duration,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt;

    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let service = router.clone().map_request(move |mut request: axum::http::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            request
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Applies the migrations and returns (`wxtopup migrate`).
pub async fn migrate(settings: &Settings) -> Result<(), StartError> {
    let db = connect_pool(&settings.database_url, settings.database_max_connections).await?;
    prepare(&db, settings).await?;
    tracing::info!("migrations applied");
    close(&db).await;
    Ok(())
}

/// Closes the pool on the way out (on SQLite: the WAL checkpointed and removed).
async fn close(db: &DatabaseConnection) {
    if let Err(error) = db.close_by_ref().await {
        tracing::warn!(%error, "the database was not closed cleanly");
    }
}

/// Migrates; in production, the catalog then starts empty (the demo products the migrations seed
/// are removed while nobody has changed or ordered them).
async fn prepare(db: &DatabaseConnection, settings: &Settings) -> Result<(), StartError> {
    apply_migrations(db).await.map_err(StartError::Migration)?;
    if settings.is_production() {
        crate::services::catalog::remove_untouched_demo(db).await.map_err(|e| match e {
            crate::services::ServiceError::Database(e) => StartError::Migration(e),
            other => StartError::Migration(DbErr::Custom(other.to_string())),
        })?;
    }
    Ok(())
}

/// Applies the pending migrations. An instance starting on its database usually finds none, which is
/// one read. SQLite's and PostgreSQL's DDL is transactional, so there the pending ones are applied in
/// one transaction: all or none, and one commit (on SQLite one sync to disk, not one per statement).
/// An empty SQLite file is given the schema snapshot first (`crate::sqlite_snapshot`). MySQL commits
/// each DDL statement by itself.
pub(crate) async fn apply_migrations(db: &DatabaseConnection) -> Result<(), DbErr> {
    apply_migrations_from(db, crate::sqlite_snapshot::SCRIPT).await
}

/// [`apply_migrations`] with `snapshot` as SQLite's snapshot.
pub(crate) async fn apply_migrations_from(db: &DatabaseConnection, snapshot: &str) -> Result<(), DbErr> {
    let pending = Migrator::get_pending_migrations_read_only(db).await?;
    if pending.is_empty() {
        return Ok(());
    }
    let backend = db.get_database_backend();
    if backend == sea_orm::DbBackend::MySql {
        return Migrator::up(db, None).await;
    }
    let txn = db.begin().await?;
    let unmigrated = pending.len() == Migrator::migrations().len();
    if backend == sea_orm::DbBackend::Sqlite && unmigrated && crate::sqlite_snapshot::is_empty(&txn).await? {
        crate::sqlite_snapshot::apply(&txn, snapshot).await?;
    }
    // After a snapshot: only what is newer than it.
    Migrator::up(&txn, None).await?;
    txn.commit().await
}

/// Opens the pool with the default size (see [`connect_pool`]).
pub async fn connect(url: &str) -> Result<DatabaseConnection, StartError> {
    connect_pool(url, crate::config::DEFAULT_MAX_CONNECTIONS).await
}

/// Opens the pool: `max_connections` on MySQL and PostgreSQL, one on SQLite. For SQLite the file's
/// folder is created and WAL is switched on, so readers do not wait for the writer.
pub async fn connect_pool(url: &str, max_connections: u32) -> Result<DatabaseConnection, StartError> {
    let fail = |source| StartError::Database { url: redact_url(url), source };
    if let Some(path) = sqlite_file(url) {
        if let Some(parent) = std::path::Path::new(&path).parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| fail(DbErr::Custom(e.to_string())))?;
        }
    }
    let mut options = ConnectOptions::new(url.to_string());
    // SQLite has one writer at a time. Connections of one process that wait for its lock poll it
    // (SQLite's busy handler sleeps up to 100 ms between tries) and can starve past the busy timeout, which
    // answered 503 to a burst of callbacks. One connection queues in the pool instead, first come first
    // served, and a WAL read is microseconds next to the commit it waits behind. The busy timeout is then
    // only for another process on the same file (a second replica, `wxtopup migrate`).
    let sqlite = url.starts_with("sqlite:");
    options
        .max_connections(if sqlite { 1 } else { max_connections })
        .min_connections(0)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(10))
        .sqlx_logging(false);
    // The pool pings a connection when it is handed back; pinging it again when it is taken out made
    // every statement three round trips instead of two. A local SQLite file cannot be dropped under us;
    // a server connection is pinged only after it sat idle long enough for a proxy to have cut it.
    if sqlite {
        options.test_before_acquire(false);
    } else {
        options.test_before_acquire_if_idle_for(IDLE_BEFORE_PING);
    }
    #[cfg(feature = "sqlite")]
    {
        let file = sqlite_file(url).is_some();
        options.map_sqlx_sqlite_opts(move |o| {
            let o = o.busy_timeout(Duration::from_secs(30));
            if !file {
                return o;
            }
            // WAL: readers never wait for the writer. `synchronous=FULL`: a commit is on disk when it
            // returns (see the README's "Durability on SQLite": a lost claim could top up twice).
            // The WAL is checkpointed every 1,000 pages (SQLite's default, ~4 MiB) and cut back to
            // `SQLITE_WAL_LIMIT` after each checkpoint, so it cannot grow with the load.
            o.pragma("journal_mode", "WAL")
                .pragma("synchronous", "FULL")
                .pragma("wal_autocheckpoint", "1000")
                .pragma("journal_size_limit", SQLITE_WAL_LIMIT.to_string())
        });
    }
    Database::connect(options).await.map_err(fail)
}

/// How long a server connection may sit in the pool before it is pinged on its way out.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(30);

/// What the WAL is truncated to after a checkpoint, in bytes.
#[cfg(feature = "sqlite")]
const SQLITE_WAL_LIMIT: u64 = 8 * 1024 * 1024;

fn sqlite_file(url: &str) -> Option<String> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then(|| path.to_string())
}

/// Every endpoint, once: the routes are registered from this list at start, and the OpenAPI document
/// is built from the same list, so an endpoint cannot be served undocumented. The document is built only
/// when `/api/openapi.json` is first asked for: building every operation's schemas took ~1.5 ms of each
/// cold start, and about a third of it at a migrated start, for a page no buyer opens.
macro_rules! endpoints {
    ($($($segment:ident)::+),* $(,)?) => {
        /// The API's routes, without building their documentation.
        fn api_routes() -> Router<AppState> {
            use utoipa_axum::PathItemExt;
            let mut router = Router::new();
            $(
                let path: String = routes!(@path [path()] of $($segment)::+);
                let methods: Vec<utoipa::openapi::HttpMethod> = routes!(@path [methods()] of $($segment)::+);
                let handler = methods
                    .iter()
                    .fold(axum::routing::MethodRouter::new(), |handler, method| handler.on(method.to_method_filter(), $($segment)::+));
                // Two handlers on one path (`GET` and `POST /orders`) are merged by axum.
                router = router.route(&path, handler);
            )*
            router
        }

        /// The OpenAPI document of [`api_routes`].
        pub fn api_document() -> utoipa::openapi::OpenApi {
            let documented = OpenApiRouter::<AppState>::with_openapi(ApiDoc::openapi());
            $( let documented = documented.routes(routes!($($segment)::+)); )*
            documented.split_for_parts().1
        }
    };
}

endpoints!(
    routes::health::health,
    routes::metrics::metrics,
    routes::products::list_products,
    routes::orders::create_order,
    routes::orders::list_orders,
    routes::orders::get_order,
    routes::payment::create_payment,
    routes::payment::handle_payment_callback,
    routes::admin::list_orders,
    routes::admin::get_order,
    routes::payment::handle_refund_callback,
    routes::admin::retry_order,
    routes::admin::refund_order,
    routes::admin::mark_delivered,
    routes::admin::retry_refund,
    routes::admin::replace_refund,
    routes::admin::reconciliation,
    routes::admin::list_alerts,
    routes::admin::get_stats,
    routes::admin::run_compensation,
    routes::admin::run_reconciliation,
    routes::catalog::list_products,
    routes::catalog::create_product,
    routes::catalog::update_product,
    routes::catalog::reorder_products,
    routes::catalog::product_changes,
    routes::sandbox::pay_sandbox_order,
);

pub fn router(state: AppState) -> Router {
    let state_alerter = state.alerter.clone();
    let api = api_routes().with_state(state.clone());
    let console = Router::new()
        .route("/console", get(routes::console::index))
        .route("/console/", get(routes::console::index))
        .route("/console/app.js", get(routes::console::script))
        .route("/console/style.css", get(routes::console::style))
        .route("/console/config.json", get(routes::console::config))
        .with_state(state.clone());
    let mut app = Router::new().merge(api).merge(with_page_headers(console, CONSOLE_CSP));
    if state.settings.api_docs {
        let docs = routes::docs::router(api_document, &state.settings);
        app = app.merge(with_page_headers(docs, SWAGGER_CSP));
    }
    let http = &state.settings.http;
    app.fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such endpoint") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // Innermost first. A panic is answered inside the deadline and the logging layer, so it is
        // logged with its request id like any other 500.
        .layer(CatchPanicLayer::custom(PanicResponse { alerter: Some(state_alerter) }))
        .layer(axum::middleware::from_fn_with_state(state.clone(), routes::idempotency::layer))
        .layer(axum::middleware::from_fn_with_state(http.request_timeout, deadline))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(http.body_timeout))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(state.clone(), limit_unverified))
        // Outermost, and a `layer` rather than a `route_layer`: unmatched paths are logged and counted too.
        .layer(axum::middleware::from_fn(telemetry::observe))
}

/// The console: its own scripts and styles only, never framed.
const CONSOLE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
/// Swagger UI sets inline styles from its scripts and draws icons as data: images.
const SWAGGER_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

/// Security headers for the pages people open in a browser.
fn with_page_headers(router: Router, csp: &'static str) -> Router {
    use axum::http::header::{self, HeaderValue};
    use tower_http::set_header::SetResponseHeaderLayer;
    router
        .layer(SetResponseHeaderLayer::overriding(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp)))
        .layer(SetResponseHeaderLayer::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(SetResponseHeaderLayer::overriding(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .layer(SetResponseHeaderLayer::overriding(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")))
}

/// The per-address limit on requests without a verified caller (`RATE_LIMIT_PUBLIC_PER_MINUTE`):
/// the catalog, health, the console, the API document, the sandbox, and failed attempts at the rest
/// (a wrong admin token, an untrusted openid). Payment callbacks come from the platform's few
/// addresses and are limited per order instead. The address is the platform's
/// `X-Original-Forwarded-For` (then `X-Forwarded-For`), else the peer.
async fn limit_unverified(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let path = request.uri().path();
    let callback = [&state.settings.wechat.callback_path, &state.settings.wechat.refund_callback_path]
        .iter()
        .any(|prefix| path.strip_prefix(prefix.as_str()).is_some_and(|rest| rest.starts_with('/')));
    let verified = routes::identity::has_verified_caller(request.headers(), &state.settings);
    if !callback && !verified {
        let peer = request
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
        let address = routes::identity::client_ip(request.headers(), peer);
        if let Err(seconds) = state.limits.public.check(&address.to_string()) {
            return axum::response::IntoResponse::into_response(ApiError::RateLimited(seconds));
        }
    }
    next.run(request).await
}

/// The whole-request deadline: a handler still running after `limit` is answered 408. Work that must
/// finish (callbacks, refunds) runs on its own task and completes anyway (`lifecycle::to_completion`).
async fn deadline(
    axum::extract::State(limit): axum::extract::State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(limit_s = limit.as_secs(), "request took too long; answered 408");
            axum::response::IntoResponse::into_response(ApiError::RequestTimeout)
        }
    }
}

/// What a handler that panicked answers: a JSON 500 like any internal error. The panic is logged,
/// counted (`http_panics_total`) and alerted (at most one alert per hour); the process keeps serving.
#[derive(Clone)]
pub struct PanicResponse {
    pub alerter: Option<Alerter>,
}

impl tower_http::catch_panic::ResponseForPanic for PanicResponse {
    type ResponseBody = axum::body::Body;

    fn response_for_panic(
        &mut self,
        panic: Box<dyn std::any::Any + Send + 'static>,
    ) -> axum::http::Response<Self::ResponseBody> {
        let detail = telemetry::panic_message(panic.as_ref());
        tracing::error!(panic = detail, "a request handler panicked; answered 500");
        metrics::counter!("http_panics_total").increment(1);
        if let Some(alerter) = &self.alerter {
            // One alert per hour: the alert key is (kind, "order number"), here the hour.
            let hour = chrono::Utc::now().format("panic-%Y%m%d%H").to_string();
            alerter.raise(AlertKind::Panic, &hour, &format!("a request handler panicked: {detail}"));
        }
        axum::response::IntoResponse::into_response(ApiError::Internal)
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown signal received");
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    async fn boom() -> &'static str {
        panic!("boom")
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_a_json_500_and_the_router_keeps_serving() {
        let app: Router = Router::new()
            .route("/boom", get(boom))
            .route("/ok", get(|| async { "ok" }))
            .route_layer(CatchPanicLayer::custom(PanicResponse { alerter: None }));
        let request = |path: &str| axum::http::Request::builder().uri(path).body(axum::body::Body::empty()).unwrap();
        let boom = app.clone().oneshot(request("/boom")).await.unwrap();
        assert_eq!(boom.status(), axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(boom.into_body(), 1024).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["code"], "INTERNAL_ERROR");
        assert!(!body["message"].as_str().unwrap().contains("boom"), "the panic text is not shown");
        let ok = app.oneshot(request("/ok")).await.unwrap();
        assert_eq!(ok.status(), axum::http::StatusCode::OK);
    }

    /// A writer that waits behind a slow commit of the same process is served when the lock is free,
    /// never refused with "database is locked" (the lock holder here keeps it longer than SQLite's
    /// default busy timeout of 5 s, standing in for commits queued on a slow disk).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_writers_of_one_process_queue_instead_of_failing_on_the_lock() {
        use sea_orm::{ConnectionTrait, TransactionTrait};
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("lock.db").display());
        let db = connect(&url).await.unwrap();
        db.execute_unprepared("CREATE TABLE t (n INTEGER)").await.unwrap();

        let holder = db.begin().await.unwrap();
        holder.execute_unprepared("INSERT INTO t VALUES (1)").await.unwrap();
        let waiter = {
            let db = db.clone();
            tokio::spawn(async move { db.execute_unprepared("INSERT INTO t VALUES (2)").await })
        };
        tokio::time::sleep(Duration::from_millis(5_500)).await;
        holder.commit().await.unwrap();
        waiter.await.unwrap().expect("the waiting writer is served once the lock is free");
        let rows =
            db.query_all_raw(sea_orm::Statement::from_string(db.get_database_backend(), "SELECT n FROM t")).await;
        assert_eq!(rows.unwrap().len(), 2);
    }

    /// An instance that exits leaves no WAL behind: the next start does not replay it.
    #[tokio::test]
    async fn an_instance_that_exits_leaves_no_sqlite_wal_behind() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("exit.db");
        let vars = crate::config::vars(&[
            ("APP_ENV", "development"),
            ("DATABASE_URL", &format!("sqlite://{}?mode=rwc", file.display())),
            ("PORT", "0"),
            ("PAYMENT_SANDBOX", "true"),
            ("TOPUP_PROVIDER", "sandbox"),
            ("SCHEDULER_ENABLED", "false"),
            ("SHUTDOWN_GRACE_SECONDS", "1"),
        ]);
        let application = Application::build(Settings::from_vars(&vars).unwrap()).await.unwrap();
        let wal = dir.path().join("exit.db-wal");
        assert!(wal.exists(), "the migrations went through the WAL");

        application.run_to_exit(async {}).await.unwrap();

        assert!(!wal.exists(), "the WAL was checkpointed and removed");
        let db = connect(&format!("sqlite://{}?mode=rwc", file.display())).await.unwrap();
        assert!(Migrator::get_pending_migrations_read_only(&db).await.unwrap().is_empty(), "nothing was lost");
    }

    /// The WAL is cut back to its limit once a checkpoint has copied it into the database, whatever one
    /// large transaction made it grow to: a long burst cannot leave a WAL that the next start replays.
    #[tokio::test]
    async fn the_sqlite_wal_is_cut_back_after_a_checkpoint() {
        use sea_orm::{ConnectionTrait, TransactionTrait};
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("wal.db");
        let db = connect(&format!("sqlite://{}?mode=rwc", file.display())).await.unwrap();
        let pragma = |name: &str| {
            let db = db.clone();
            let sql = format!("PRAGMA {name}");
            async move {
                let row = db.query_one_raw(sea_orm::Statement::from_string(db.get_database_backend(), sql)).await;
                let row = row.unwrap().unwrap();
                row.try_get_by_index::<String>(0).or_else(|_| row.try_get_by_index::<i64>(0).map(|n| n.to_string()))
            }
        };
        assert_eq!(pragma("journal_mode").await.unwrap(), "wal");
        assert_eq!(pragma("synchronous").await.unwrap(), "2", "FULL");
        db.execute_unprepared("CREATE TABLE t (n INTEGER, pad BLOB)").await.unwrap();

        // About 3× the limit in one transaction: the WAL must hold all of it until the commit.
        let big = db.begin().await.unwrap();
        let rows = 3 * SQLITE_WAL_LIMIT / 4096;
        big.execute_unprepared(&format!(
            "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < {rows}) \
             INSERT INTO t SELECT n, randomblob(4000) FROM c"
        ))
        .await
        .unwrap();
        big.commit().await.unwrap();
        let wal = dir.path().join("wal.db-wal");
        let grown = std::fs::metadata(&wal).unwrap().len();
        assert!(grown > 2 * SQLITE_WAL_LIMIT, "{grown}");
        // The commit checkpointed it; the next writer starts the WAL over and truncates it.
        for n in 0..3 {
            db.execute_unprepared(&format!("INSERT INTO t VALUES ({n}, NULL)")).await.unwrap();
        }
        let after = std::fs::metadata(&wal).unwrap().len();
        assert!(after <= SQLITE_WAL_LIMIT, "the WAL is still {after} bytes");
    }
}
