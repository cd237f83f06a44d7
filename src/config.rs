//! Typed settings. `.env.<APP_ENV>` is read first, then real environment variables win; `${VAR}` in the
//! file expands from the environment. This is the only module that reads the process environment.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

/// `development` trusts identity headers as they come and simulates WeChat; `production` does neither.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Production,
}

#[derive(Clone)]
pub struct Settings {
    pub app_env: AppEnv,
    pub port: u16,
    /// May hold a password: never logged (see the `Debug` impl).
    pub database_url: String,
    /// The pool's size on MySQL and PostgreSQL (`DATABASE_MAX_CONNECTIONS`, 1 to 200); SQLite always
    /// has one connection (see `app::connect`).
    pub database_max_connections: u32,
    /// `RUST_LOG` syntax.
    pub log_filter: String,
    pub wechat: WechatSettings,
    pub topup: TopUpSettings,
    pub fulfilment: FulfilmentSettings,
    pub lifecycle: LifecycleSettings,
    /// Bearer token for `/admin/*` and `/jobs/*`; those endpoints are off without one.
    pub admin_token: Option<String>,
    /// Run the compensation sweep on `COMPENSATION_CRON` (and once at start).
    pub scheduler_enabled: bool,
    pub compensation_cron: String,
    /// How long shutdown waits for in-flight top-ups before releasing their claims.
    pub shutdown_grace: Duration,
    /// WeCom group robot webhook; its URL holds the robot key, so it is never logged.
    pub alert_webhook_url: Option<String>,
    pub alert_max_per_minute: u32,
    pub http: HttpSettings,
    /// Serve the OpenAPI document and Swagger UI (`API_DOCS`).
    pub api_docs: bool,
    /// WeChat subscribe messages to buyers.
    pub notify: NotifySettings,
}

/// The subscribe messages sent to buyers: a template per event (unset: not sent), and which order field
/// fills each of its keys.
#[derive(Clone, Debug, Default)]
pub struct NotifySettings {
    /// `[delivered, refunding, refunded]`.
    pub templates: [Option<NotifyTemplate>; 3],
    /// The mini-program page a message opens.
    pub page: String,
    /// `formal`, `trial` or `developer`.
    pub miniprogram_state: String,
    pub lang: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifyTemplate {
    pub id: String,
    /// (template key, order field), e.g. `("thing1", "product")`.
    pub fields: Vec<(String, String)>,
}

/// The order fields a template key can show.
pub const NOTIFY_SOURCES: [&str; 7] = ["product", "amount", "phone", "order", "time", "status", "reason"];
/// `[delivered, refunding, refunded]`: the variables and the default key mapping, for the common
/// "充值成功通知" / "退款通知" style templates.
pub const NOTIFY_EVENTS: [(&str, &str, &str); 3] = [
    (
        "SUBSCRIBE_TEMPLATE_DELIVERED",
        "SUBSCRIBE_FIELDS_DELIVERED",
        "thing1=product,amount2=amount,character_string3=order,time4=time",
    ),
    (
        "SUBSCRIBE_TEMPLATE_REFUNDING",
        "SUBSCRIBE_FIELDS_REFUNDING",
        "thing1=product,amount2=amount,thing3=reason,time4=time",
    ),
    (
        "SUBSCRIBE_TEMPLATE_REFUNDED",
        "SUBSCRIBE_FIELDS_REFUNDED",
        "thing1=product,amount2=amount,character_string3=order,time4=time",
    ),
];

fn notify_settings(get: &impl Fn(&str) -> Option<String>) -> Result<NotifySettings, ConfigError> {
    let template = |(id_var, fields_var, default): (&'static str, &'static str, &str)| {
        let Some(id) = get(id_var) else { return Ok(None) };
        if id.len() > 128 || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                id_var,
                "must be a template id from the mini-program's subscribe message settings".into(),
            ));
        }
        let raw = get(fields_var).unwrap_or_else(|| default.to_string());
        let mut fields = Vec::new();
        for item in raw.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let parsed = item.split_once('=').map(|(k, v)| (k.trim(), v.trim())).filter(|(k, v)| {
                !k.is_empty()
                    && k.len() <= 32
                    && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && NOTIFY_SOURCES.contains(v)
            });
            let Some((key, source)) = parsed else {
                return Err(invalid(
                    fields_var,
                    format!("has {item:?}; each item is key=field, the field one of {}", NOTIFY_SOURCES.join(", ")),
                ));
            };
            fields.push((key.to_string(), source.to_string()));
        }
        if fields.is_empty() {
            return Err(invalid(fields_var, "names no template key".into()));
        }
        Ok(Some(NotifyTemplate { id, fields }))
    };
    let [delivered, refunding, refunded] = NOTIFY_EVENTS;
    let miniprogram_state = get("SUBSCRIBE_MINIPROGRAM_STATE").unwrap_or_else(|| "formal".into());
    if !["formal", "trial", "developer"].contains(&miniprogram_state.as_str()) {
        return Err(invalid(
            "SUBSCRIBE_MINIPROGRAM_STATE",
            format!("must be formal, trial or developer, not {miniprogram_state:?}"),
        ));
    }
    Ok(NotifySettings {
        templates: [template(delivered)?, template(refunding)?, template(refunded)?],
        page: get("SUBSCRIBE_PAGE").unwrap_or_else(|| "pages/index/index".into()),
        miniprogram_state,
        lang: get("SUBSCRIBE_LANG").unwrap_or_else(|| "zh_CN".into()),
    })
}

/// How long a client may take, and how often it may ask.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    /// Reading a request's headers (`HTTP_HEADER_TIMEOUT_SECONDS`).
    pub header_timeout: Duration,
    /// Reading its body (`HTTP_BODY_TIMEOUT_SECONDS`).
    pub body_timeout: Duration,
    /// The whole request, answer included (`HTTP_REQUEST_TIMEOUT_SECONDS`). Work that must finish
    /// (callbacks, refunds) runs on and completes even when this answers first.
    pub request_timeout: Duration,
    pub limits: RateLimits,
}

/// Requests per minute (each also the burst).
#[derive(Clone, Copy, Debug)]
pub struct RateLimits {
    /// `POST /orders` per openid.
    pub orders_per_openid: u32,
    /// `POST /payment/create` per openid.
    pub payments_per_openid: u32,
    /// `queryorder` calls a payment callback may trigger, per order.
    pub callback_queries_per_order: u32,
    /// Requests without a verified caller (callbacks, catalog, health, sandbox), per client address.
    pub public_per_address: u32,
}

/// Callbacks, reconciliation, expiry and refunds.
#[derive(Clone, Debug)]
pub struct LifecycleSettings {
    /// Confirm every payment callback with `/_/pay/queryorder` before marking the order paid.
    pub callback_verify: bool,
    /// Unpaid orders with a prepay older than this are queried by the reconciliation job.
    pub reconcile_grace: Duration,
    /// Unpaid orders are closed after this.
    pub order_expiry: Duration,
    /// Refund automatically when a top-up fails for good.
    pub auto_refund_on_failure: bool,
    /// `GET /orders/{n}?refresh=true` queries WeChat at most this often per order.
    pub refresh_interval: Duration,
    /// Refund calls WeChat refuses before the refund is marked failed for an operator.
    pub refund_max_attempts: u32,
    /// Backoff of a refund WeChat did not accept yet: base and cap.
    pub refund_retry_base: Duration,
    pub refund_retry_max: Duration,
    pub reconcile_cron: String,
    /// `POST /orders` without an `Idempotency-Key` hands back the caller's unpaid order for the same
    /// product and number placed this recently, instead of a second one (zero: off).
    pub order_reuse_window: Duration,
}

/// Which carrier adapter delivers top-ups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopUpProviderKind {
    Sandbox,
    Http,
    Reloadly,
}

#[derive(Clone)]
pub struct TopUpSettings {
    pub provider: TopUpProviderKind,
    pub api_url: Option<String>,
    /// Secret: never logged.
    pub api_token: Option<String>,
    /// The whole of one carrier call (for Reloadly, token included).
    pub timeout: Duration,
    /// Set exactly when `provider` is [`TopUpProviderKind::Reloadly`].
    pub reloadly: Option<ReloadlySettings>,
}

impl fmt::Debug for TopUpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopUpSettings")
            .field("provider", &self.provider)
            .field("api_url", &self.api_url)
            .field("api_token", &self.api_token.as_ref().map(|_| "***"))
            .field("timeout", &self.timeout)
            .field("reloadly", &self.reloadly)
            .finish()
    }
}

/// Reloadly's two environments; each has its own credentials, token audience and API host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadlyEnvironment {
    /// Test mode: nothing is delivered and nothing is paid for.
    Sandbox,
    Live,
}

impl ReloadlyEnvironment {
    /// The token's `audience`, which is also the Airtime API's base URL.
    pub fn audience(self) -> &'static str {
        match self {
            ReloadlyEnvironment::Sandbox => "https://topups-sandbox.reloadly.com",
            ReloadlyEnvironment::Live => "https://topups.reloadly.com",
        }
    }
}

/// `TOPUP_PROVIDER=reloadly`: the Airtime API with OAuth2 client credentials.
#[derive(Clone)]
pub struct ReloadlySettings {
    pub client_id: String,
    /// Secret: never logged.
    pub client_secret: String,
    pub environment: ReloadlyEnvironment,
    /// The OAuth server, without `/oauth/token` (`RELOADLY_AUTH_URL`).
    pub auth_url: String,
    /// The Airtime API (`RELOADLY_API_URL`; by default the environment's).
    pub api_url: String,
}

impl fmt::Debug for ReloadlySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadlySettings")
            .field("client_id", &self.client_id)
            .field("client_secret", &"***")
            .field("environment", &self.environment)
            .field("auth_url", &self.auth_url)
            .field("api_url", &self.api_url)
            .finish()
    }
}

#[derive(Clone, Debug)]
pub struct FulfilmentSettings {
    /// Attempts (claims) before an order whose outcome stays unknown or pending is left `unresolved`.
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// How long a claim holds an order; a worker that dies is replaced after this.
    pub lease: Duration,
    /// Top-ups in flight at once per instance, for the sweep.
    pub concurrency: usize,
    /// Orders one sweep looks at.
    pub batch_size: u64,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("app_env", &self.app_env)
            .field("port", &self.port)
            .field("database_url", &redact_url(&self.database_url))
            .field("database_max_connections", &self.database_max_connections)
            .field("log_filter", &self.log_filter)
            .field("wechat", &self.wechat)
            .field("topup", &self.topup)
            .field("fulfilment", &self.fulfilment)
            .field("lifecycle", &self.lifecycle)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "***"))
            .field("scheduler_enabled", &self.scheduler_enabled)
            .field("compensation_cron", &self.compensation_cron)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("alert_webhook_url", &self.alert_webhook_url.as_ref().map(|_| "***"))
            .field("alert_max_per_minute", &self.alert_max_per_minute)
            .field("notify", &self.notify)
            .field("http", &self.http)
            .field("api_docs", &self.api_docs)
            .finish()
    }
}

/// The URL with its password replaced, for logs.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => raw.to_string(),
    }
}

#[derive(Clone, Debug)]
pub struct WechatSettings {
    /// `true`: never call WeChat; prepay parameters are simulated.
    pub sandbox: bool,
    pub api_base: String,
    /// The merchant number sent as `sub_mch_id` and expected back as `subMchId`.
    pub mch_id: Option<String>,
    pub env_id: Option<String>,
    pub callback_service: Option<String>,
    pub callback_path: String,
    /// `container.path` prefix for refund results.
    pub refund_callback_path: String,
    pub server_ip: IpAddr,
    pub timeout: Duration,
}

/// The settings that are missing or invalid, every one found: each problem names its variable.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

/// One variable at fault, and why.
#[derive(Debug, PartialEq, Eq)]
pub struct Problem {
    pub var: &'static str,
    pub reason: String,
}

impl ConfigError {
    /// The first variable at fault.
    pub fn var(&self) -> &'static str {
        self.problems.first().map_or("", |p| p.var)
    }

    /// Every variable at fault, in the order they were found.
    pub fn vars(&self) -> Vec<&'static str> {
        self.problems.iter().map(|p| p.var).collect()
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            [one] => write!(f, "invalid configuration: {} {}", one.var, one.reason),
            all => {
                write!(f, "invalid configuration, {} problems:", all.len())?;
                for p in all {
                    write!(f, "\n  - {} {}", p.var, p.reason)?;
                }
                Ok(())
            }
        }
    }
}

/// The problems found so far while reading the settings.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn push(&mut self, error: ConfigError) {
        self.0.extend(error.problems);
    }

    /// The value, or `None` with its problems recorded.
    fn take<T>(&mut self, result: Result<T, ConfigError>) -> Option<T> {
        result.map_err(|e| self.push(e)).ok()
    }

    /// The value, or `fallback` with its problems recorded (the settings are refused in the end).
    fn or<T>(&mut self, result: Result<T, ConfigError>, fallback: T) -> T {
        self.take(result).unwrap_or(fallback)
    }

    fn positive(&mut self, get: &impl Fn(&str) -> Option<String>, var: &'static str, default: u64) -> u64 {
        self.or(positive(get, var, default), default)
    }

    fn per_minute(&mut self, get: &impl Fn(&str) -> Option<String>, var: &'static str, default: u32) -> u32 {
        let n = self.positive(get, var, u64::from(default));
        self.or(u32::try_from(n).map_err(|_| invalid(var, "is too large".into())), default)
    }

    fn into_result<T>(self, value: T) -> Result<T, ConfigError> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(ConfigError { problems: self.0 })
        }
    }
}

impl std::error::Error for ConfigError {}

impl Settings {
    /// Reads `.env.<APP_ENV>` (from the working directory) and the process environment.
    pub fn load() -> Result<Self, ConfigError> {
        let process: HashMap<String, String> = std::env::vars().collect();
        let app_env = process.get("APP_ENV").cloned().unwrap_or_else(|| "development".into());
        let mut vars = HashMap::new();
        let file = format!(".env.{app_env}");
        if Path::new(&file).exists() {
            let iter = dotenvy::from_path_iter(&file)
                .map_err(|e| invalid("APP_ENV", format!("names {file}, which cannot be read: {e}")))?;
            for item in iter {
                let (key, value) =
                    item.map_err(|e| invalid("APP_ENV", format!("names {file}, which cannot be parsed: {e}")))?;
                vars.insert(key, value);
            }
        }
        vars.extend(process);
        Self::from_vars(&vars)
    }

    /// Builds and validates settings from a variable map (empty values count as unset).
    /// Every problem found is reported in the one error, so an operator fixes them in one redeploy.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |name: &str| vars.get(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        // A value that is at fault is recorded and replaced by its default, so the checks after it
        // still run and find their own problems.
        let mut problems = Problems::default();

        let app_env = match get("APP_ENV").as_deref() {
            None | Some("development") => AppEnv::Development,
            Some("production") => AppEnv::Production,
            // The environment decides the other defaults: nothing after it can be judged.
            Some(other) => return Err(invalid("APP_ENV", format!("must be development or production, not {other:?}"))),
        };
        let production = app_env == AppEnv::Production;

        let port = match get("PORT") {
            Some(p) => {
                problems.or(p.parse().map_err(|_| invalid("PORT", format!("must be a port number, not {p:?}"))), 0)
            }
            None if production => 80,
            None => 3000,
        };

        let database_url = match (get("DATABASE_URL"), get("MYSQL_ADDRESS")) {
            (Some(url), _) => url,
            (None, Some(address)) => {
                let user = problems.or(
                    get("MYSQL_USERNAME").ok_or_else(|| required("MYSQL_USERNAME", "when MYSQL_ADDRESS is set")),
                    String::new(),
                );
                let password = get("MYSQL_PASSWORD").unwrap_or_default();
                let database = get("MYSQL_DATABASE").unwrap_or_else(|| "wxtopup".into());
                format!("mysql://{}:{}@{address}/{database}", encode(&user), encode(&password))
            }
            // A cloud hosting container's disk is neither kept nor shared between replicas: production
            // runs on SQLite only when asked to by name.
            (None, None) if production => {
                problems.push(required(
                    "DATABASE_URL",
                    "in production (or cloud hosting's MYSQL_ADDRESS and MYSQL_USERNAME): a container's local \
                     disk is lost on restart and not shared between replicas; set DATABASE_URL=sqlite://… to \
                     use SQLite on purpose",
                ));
                String::new()
            }
            (None, None) => "sqlite://data/wxtopup.db?mode=rwc".into(),
        };
        let known = ["sqlite:", "mysql:", "postgres:", "postgresql:"].iter().any(|s| database_url.starts_with(s));
        if !known && !database_url.is_empty() {
            problems.push(invalid("DATABASE_URL", "must start with sqlite://, mysql:// or postgres://".into()));
        } else if let Some(feature) = missing_driver(&database_url) {
            problems.push(invalid(
                "DATABASE_URL",
                format!(
                    "needs the {feature} driver, which this build does not have; build with `--features {feature}`"
                ),
            ));
        }

        let sandbox = problems.or(parse_bool("PAYMENT_SANDBOX", get("PAYMENT_SANDBOX"), !production), !production);
        // In production a simulated payment would buy real top-ups from the carrier.
        let allow_payment_sandbox =
            problems.or(parse_bool("PAYMENT_ALLOW_SANDBOX", get("PAYMENT_ALLOW_SANDBOX"), false), false);
        if production && sandbox && !allow_payment_sandbox {
            problems.push(invalid(
                "PAYMENT_SANDBOX",
                "is true in production; set PAYMENT_ALLOW_SANDBOX=true if that is really meant".into(),
            ));
        }
        let api_base = get("WECHAT_API_BASE").unwrap_or_else(|| "http://api.weixin.qq.com".into());
        if let Err(e) = url::Url::parse(&api_base) {
            problems.push(invalid("WECHAT_API_BASE", format!("is not a URL: {e}")));
        }
        let callback_path = get("WECHAT_PAYMENT_CALLBACK_PATH").unwrap_or_else(|| "/payment/callback".into());
        if !callback_path.starts_with('/') || callback_path.ends_with('/') {
            problems.push(invalid("WECHAT_PAYMENT_CALLBACK_PATH", "must start with / and not end with /".into()));
        }
        let refund_callback_path =
            get("WECHAT_REFUND_CALLBACK_PATH").unwrap_or_else(|| "/payment/refund-callback".into());
        if !refund_callback_path.starts_with('/') || refund_callback_path.ends_with('/') {
            problems.push(invalid("WECHAT_REFUND_CALLBACK_PATH", "must start with / and not end with /".into()));
        }
        let server_ip = match get("WECHAT_PAYMENT_SERVER_IP") {
            Some(ip) => problems.or(
                ip.parse().map_err(|_| invalid("WECHAT_PAYMENT_SERVER_IP", format!("is not an IP address: {ip:?}"))),
                IpAddr::from([127, 0, 0, 1]),
            ),
            None => IpAddr::from([127, 0, 0, 1]),
        };
        let timeout_ms: u64 = match get("WECHAT_TIMEOUT_MS") {
            Some(t) => problems.or(
                t.parse().ok().filter(|t| *t > 0).ok_or_else(|| {
                    invalid("WECHAT_TIMEOUT_MS", format!("must be a positive number of milliseconds, not {t:?}"))
                }),
                5000,
            ),
            None => 5000,
        };
        let wechat = WechatSettings {
            sandbox,
            api_base: api_base.trim_end_matches('/').to_string(),
            mch_id: get("WECHAT_MCH_ID"),
            env_id: get("WECHAT_ENV_ID").or_else(|| get("CBR_ENV_ID")),
            callback_service: get("WECHAT_PAYMENT_CALLBACK_SERVICE"),
            callback_path,
            refund_callback_path,
            server_ip,
            timeout: Duration::from_millis(timeout_ms),
        };
        if !sandbox {
            if wechat.mch_id.is_none() {
                problems.push(required("WECHAT_MCH_ID", "when PAYMENT_SANDBOX is false"));
            }
            if wechat.env_id.is_none() {
                problems.push(required("WECHAT_ENV_ID", "(or CBR_ENV_ID) when PAYMENT_SANDBOX is false"));
            }
            if wechat.callback_service.is_none() {
                problems.push(required("WECHAT_PAYMENT_CALLBACK_SERVICE", "when PAYMENT_SANDBOX is false"));
            }
        }

        let log_filter = get("RUST_LOG").unwrap_or_else(|| "info,sqlx=warn,sea_orm=warn".into());

        let provider = match get("TOPUP_PROVIDER").as_deref() {
            Some("sandbox") => TopUpProviderKind::Sandbox,
            Some("http") => TopUpProviderKind::Http,
            Some("reloadly") => TopUpProviderKind::Reloadly,
            None if production => TopUpProviderKind::Http,
            None => TopUpProviderKind::Sandbox,
            Some(other) => {
                problems.push(invalid("TOPUP_PROVIDER", format!("must be sandbox, http or reloadly, not {other:?}")));
                // Judged as the sandbox would be: no credentials to ask for, no refusal to repeat.
                TopUpProviderKind::Sandbox
            }
        };
        let provider_named = matches!(get("TOPUP_PROVIDER").as_deref(), None | Some("sandbox" | "http" | "reloadly"));
        let allow_sandbox = problems.or(parse_bool("TOPUP_ALLOW_SANDBOX", get("TOPUP_ALLOW_SANDBOX"), false), false);
        if production && provider == TopUpProviderKind::Sandbox && !allow_sandbox && provider_named {
            problems.push(invalid(
                "TOPUP_PROVIDER",
                "is sandbox in production; set TOPUP_ALLOW_SANDBOX=true if that is really meant".into(),
            ));
        }
        let reloadly = match provider {
            TopUpProviderKind::Reloadly => problems.take(reloadly_settings(&get, production, allow_sandbox)),
            TopUpProviderKind::Sandbox | TopUpProviderKind::Http => None,
        };
        let api_url = get("TOPUP_API_URL").map(|u| u.trim_end_matches('/').to_string());
        if provider == TopUpProviderKind::Http {
            match api_url.as_deref().map(url::Url::parse) {
                None => problems.push(required("TOPUP_API_URL", "when TOPUP_PROVIDER is http")),
                Some(Err(e)) => problems.push(invalid("TOPUP_API_URL", format!("is not a URL: {e}"))),
                Some(Ok(_)) => {}
            }
        }
        let topup_timeout = Duration::from_millis(problems.positive(&get, "TOPUP_TIMEOUT_MS", 10_000));
        let topup =
            TopUpSettings { provider, api_url, api_token: get("TOPUP_API_TOKEN"), timeout: topup_timeout, reloadly };

        // A claim must outlive a query plus a submit.
        let default_lease = 2 * topup_timeout.as_secs() + 30;
        let fulfilment = FulfilmentSettings {
            max_attempts: problems.positive(&get, "FULFILMENT_MAX_ATTEMPTS", 6) as u32,
            retry_base: Duration::from_secs(problems.positive(&get, "FULFILMENT_RETRY_BASE_SECONDS", 30)),
            retry_max: Duration::from_secs(problems.positive(&get, "FULFILMENT_RETRY_MAX_SECONDS", 1800)),
            lease: Duration::from_secs(problems.positive(&get, "FULFILMENT_LEASE_SECONDS", default_lease)),
            concurrency: problems.positive(&get, "FULFILMENT_CONCURRENCY", 8) as usize,
            batch_size: problems.positive(&get, "COMPENSATION_BATCH_SIZE", 100),
        };
        if fulfilment.lease <= 2 * topup_timeout {
            problems.push(invalid("FULFILMENT_LEASE_SECONDS", "must exceed twice TOPUP_TIMEOUT_MS".into()));
        }

        // The sandbox answers queryorder too, so callbacks are confirmed there as well.
        let callback_verify = problems.or(parse_bool("CALLBACK_VERIFY", get("CALLBACK_VERIFY"), true), true);
        let unsafe_unverified = problems.or(
            parse_bool("UNSAFE_ACCEPT_UNVERIFIED_CALLBACKS", get("UNSAFE_ACCEPT_UNVERIFIED_CALLBACKS"), false),
            false,
        );
        // An unverified callback marks an order paid on an unsigned body anyone can POST.
        if production && !callback_verify && !unsafe_unverified {
            problems.push(invalid(
                "CALLBACK_VERIFY",
                "is false in production: anyone could mark an order paid; set UNSAFE_ACCEPT_UNVERIFIED_CALLBACKS=true if that is really meant".into(),
            ));
        }
        let admin_token = get("ADMIN_TOKEN");
        if production && admin_token.as_deref().is_some_and(|t| t.chars().count() < 32) {
            problems.push(invalid("ADMIN_TOKEN", "must be at least 32 characters in production".into()));
        }
        let http = HttpSettings {
            header_timeout: Duration::from_secs(problems.positive(&get, "HTTP_HEADER_TIMEOUT_SECONDS", 10)),
            body_timeout: Duration::from_secs(problems.positive(&get, "HTTP_BODY_TIMEOUT_SECONDS", 10)),
            request_timeout: Duration::from_secs(problems.positive(&get, "HTTP_REQUEST_TIMEOUT_SECONDS", 30)),
            limits: RateLimits {
                orders_per_openid: problems.per_minute(&get, "RATE_LIMIT_ORDERS_PER_MINUTE", 20),
                payments_per_openid: problems.per_minute(&get, "RATE_LIMIT_PAYMENTS_PER_MINUTE", 30),
                callback_queries_per_order: problems.per_minute(&get, "RATE_LIMIT_CALLBACK_QUERIES_PER_MINUTE", 30),
                public_per_address: problems.per_minute(&get, "RATE_LIMIT_PUBLIC_PER_MINUTE", 600),
            },
        };

        let lifecycle = LifecycleSettings {
            callback_verify,
            reconcile_grace: Duration::from_secs(problems.positive(&get, "RECONCILE_GRACE_SECONDS", 60)),
            order_expiry: Duration::from_secs(60 * problems.positive(&get, "ORDER_EXPIRE_MINUTES", 30)),
            auto_refund_on_failure: problems
                .or(parse_bool("AUTO_REFUND_ON_FAILURE", get("AUTO_REFUND_ON_FAILURE"), true), true),
            refresh_interval: Duration::from_secs(problems.positive(&get, "REFRESH_MIN_INTERVAL_SECONDS", 5)),
            refund_max_attempts: problems.positive(&get, "REFUND_MAX_ATTEMPTS", 5) as u32,
            refund_retry_base: Duration::from_secs(problems.positive(&get, "REFUND_RETRY_BASE_SECONDS", 60)),
            refund_retry_max: Duration::from_secs(problems.positive(&get, "REFUND_RETRY_MAX_SECONDS", 3600)),
            reconcile_cron: get("RECONCILE_CRON").unwrap_or_else(|| "30 * * * * *".into()),
            order_reuse_window: Duration::from_secs(problems.or(reuse_window(&get), 0)),
        };

        let database_max_connections = problems.or(
            positive(&get, "DATABASE_MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS.into()).and_then(|n| {
                u32::try_from(n)
                    .ok()
                    .filter(|n| *n <= 200)
                    .ok_or_else(|| invalid("DATABASE_MAX_CONNECTIONS", format!("must be 1 to 200, not {n}")))
            }),
            DEFAULT_MAX_CONNECTIONS,
        );
        let settings = Settings {
            app_env,
            port,
            database_url,
            database_max_connections,
            log_filter,
            wechat,
            topup,
            fulfilment,
            lifecycle,
            admin_token,
            scheduler_enabled: problems.or(parse_bool("SCHEDULER_ENABLED", get("SCHEDULER_ENABLED"), true), true),
            compensation_cron: get("COMPENSATION_CRON").unwrap_or_else(|| "0 * * * * *".into()),
            shutdown_grace: Duration::from_secs(problems.positive(&get, "SHUTDOWN_GRACE_SECONDS", 10)),
            alert_webhook_url: match get("ALERT_WEBHOOK_URL") {
                Some(u) => problems.take(
                    url::Url::parse(&u)
                        .map(|_| u)
                        .map_err(|e| invalid("ALERT_WEBHOOK_URL", format!("is not a URL: {e}"))),
                ),
                None => None,
            },
            alert_max_per_minute: problems.positive(&get, "ALERT_MAX_PER_MINUTE", 20) as u32,
            http,
            api_docs: problems.or(parse_bool("API_DOCS", get("API_DOCS"), true), true),
            notify: problems.or(notify_settings(&get), NotifySettings::default()),
        };
        problems.into_result(settings)
    }

    pub fn is_production(&self) -> bool {
        self.app_env == AppEnv::Production
    }
}

/// The Reloadly section, with every problem in it.
fn reloadly_settings(
    get: &impl Fn(&str) -> Option<String>,
    production: bool,
    allow_sandbox: bool,
) -> Result<ReloadlySettings, ConfigError> {
    let mut problems = Problems::default();
    let client_id = get("RELOADLY_CLIENT_ID");
    let client_secret = get("RELOADLY_CLIENT_SECRET");
    for (var, value) in [("RELOADLY_CLIENT_ID", &client_id), ("RELOADLY_CLIENT_SECRET", &client_secret)] {
        if value.is_none() {
            problems.push(required(var, "when TOPUP_PROVIDER is reloadly"));
        }
    }
    let environment = match get("RELOADLY_ENVIRONMENT").map(|e| e.to_ascii_lowercase()).as_deref() {
        Some("sandbox") => Some(ReloadlyEnvironment::Sandbox),
        Some("live") => Some(ReloadlyEnvironment::Live),
        // Live credentials move real money: production names its environment.
        None if production => {
            problems.push(invalid(
                "RELOADLY_ENVIRONMENT",
                "is required in production when TOPUP_PROVIDER is reloadly (sandbox or live)".into(),
            ));
            None
        }
        None => Some(ReloadlyEnvironment::Sandbox),
        Some(other) => {
            problems.push(invalid("RELOADLY_ENVIRONMENT", format!("must be sandbox or live, not {other:?}")));
            None
        }
    };
    // Sandbox top-ups are never delivered: in production that sells nothing for real money.
    if production && environment == Some(ReloadlyEnvironment::Sandbox) && !allow_sandbox {
        problems.push(invalid(
            "RELOADLY_ENVIRONMENT",
            "is sandbox in production; set TOPUP_ALLOW_SANDBOX=true if that is really meant".into(),
        ));
    }
    let mut url = |var: &'static str, default: Option<&str>| -> Option<String> {
        let value = get(var).or_else(|| default.map(str::to_string))?;
        match url::Url::parse(&value) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Some(value.trim_end_matches('/').to_string()),
            Ok(_) => {
                problems.push(invalid(var, "must be an http or https URL".into()));
                None
            }
            Err(e) => {
                problems.push(invalid(var, format!("is not a URL: {e}")));
                None
            }
        }
    };
    let auth_url = url("RELOADLY_AUTH_URL", Some("https://auth.reloadly.com"));
    let api_url = url("RELOADLY_API_URL", environment.map(ReloadlyEnvironment::audience));
    match (client_id, client_secret, environment, auth_url, api_url) {
        (Some(client_id), Some(client_secret), Some(environment), Some(auth_url), Some(api_url))
            if problems.0.is_empty() =>
        {
            Ok(ReloadlySettings { client_id, client_secret, environment, auth_url, api_url })
        }
        // Every `None` above recorded its problem.
        _ => Err(ConfigError { problems: problems.0 }),
    }
}

fn positive(get: &impl Fn(&str) -> Option<String>, var: &'static str, default: u64) -> Result<u64, ConfigError> {
    match get(var) {
        Some(v) => v
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| invalid(var, format!("must be a positive whole number, not {v:?}"))),
        None => Ok(default),
    }
}

/// `ORDER_REUSE_WINDOW_SECONDS`: 0 (off, the default) to 3600.
fn reuse_window(get: &impl Fn(&str) -> Option<String>) -> Result<u64, ConfigError> {
    const VAR: &str = "ORDER_REUSE_WINDOW_SECONDS";
    match get(VAR) {
        Some(v) => v
            .parse()
            .ok()
            .filter(|n| *n <= 3600)
            .ok_or_else(|| invalid(VAR, format!("must be a whole number of seconds from 0 to 3600, not {v:?}"))),
        None => Ok(0),
    }
}

fn parse_bool(var: &'static str, value: Option<String>, default: bool) -> Result<bool, ConfigError> {
    match value.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => Ok(default),
        Some("true" | "1" | "yes" | "on") => Ok(true),
        Some("false" | "0" | "no" | "off") => Ok(false),
        Some(other) => Err(invalid(var, format!("must be true or false, not {other:?}"))),
    }
}

/// `DATABASE_MAX_CONNECTIONS` when unset.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;

/// The cargo feature a database URL needs when this build was made without it (see Cargo.toml).
fn missing_driver(database_url: &str) -> Option<&'static str> {
    let (feature, built) = match database_url.split(':').next()? {
        "sqlite" => ("sqlite", cfg!(feature = "sqlite")),
        "mysql" => ("mysql", cfg!(feature = "mysql")),
        "postgres" | "postgresql" => ("postgres", cfg!(feature = "postgres")),
        _ => return None,
    };
    (!built).then_some(feature)
}

fn invalid(var: &'static str, reason: String) -> ConfigError {
    ConfigError { problems: vec![Problem { var, reason }] }
}

fn required(var: &'static str, when: &str) -> ConfigError {
    invalid(var, format!("is required {when}"))
}

/// Percent-encodes a URL userinfo part (passwords may hold `@`, `:` or `/`).
fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20")
}

/// Settings variables from pairs, for tests that build [`Settings::from_vars`].
#[cfg(test)]
pub(crate) fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn development_defaults_need_nothing() {
        let s = Settings::from_vars(&vars(&[])).unwrap();
        assert_eq!(s.app_env, AppEnv::Development);
        assert_eq!(s.port, 3000);
        assert!(s.wechat.sandbox);
        assert_eq!(s.database_url, "sqlite://data/wxtopup.db?mode=rwc");
        assert_eq!(s.wechat.callback_path, "/payment/callback");
    }

    #[test]
    fn production_names_the_missing_merchant() {
        let err =
            Settings::from_vars(&vars(&[("APP_ENV", "production"), ("DATABASE_URL", "mysql://u@db/w")])).unwrap_err();
        assert_eq!(err.var(), "WECHAT_MCH_ID");
        assert!(err.to_string().contains("WECHAT_MCH_ID"));
    }

    /// What a cloud hosting container gets: the image's `.env.production`, `container.config.json`'s
    /// variables (after the real environment, so they win) and what the platform injects.
    fn cloud_hosting(console: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let deployed: serde_json::Value = serde_json::from_str(include_str!("../container.config.json")).unwrap();
        let mut environment: HashMap<String, String> = deployed["envParams"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        let injected = [("CBR_ENV_ID", "prod-1"), ("MYSQL_ADDRESS", "10.0.0.2:3306"), ("MYSQL_USERNAME", "root")];
        environment.extend(injected.iter().chain(console).map(|(k, v)| (k.to_string(), v.to_string())));
        let mut all = HashMap::new();
        let file = dotenvy::from_read_iter(include_str!("../.env.production").as_bytes());
        for item in file {
            let (key, value) = item.unwrap();
            all.insert(key, value);
        }
        all.extend(environment);
        Settings::from_vars(&all)
    }

    #[test]
    fn the_deployment_placeholders_are_exactly_what_production_still_needs() {
        // As shipped, the placeholders left empty are what the service names, all at once.
        let err = cloud_hosting(&[]).unwrap_err();
        assert_eq!(err.vars(), ["WECHAT_MCH_ID", "WECHAT_PAYMENT_CALLBACK_SERVICE", "TOPUP_API_URL"], "{err}");
        // Filled in, production starts.
        let filled = [
            ("WECHAT_MCH_ID", "1712734762"),
            ("WECHAT_PAYMENT_CALLBACK_SERVICE", "wxtopup"),
            ("TOPUP_API_URL", "https://carrier.example/api"),
        ];
        let settings = cloud_hosting(&filled).unwrap();
        assert!(settings.is_production() && !settings.wechat.sandbox);
        assert!(settings.database_url.starts_with("mysql://root:@10.0.0.2:3306/wxtopup"), "{settings:?}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = Settings::from_vars(&vars(&[
            ("APP_ENV", "production"),
            ("PORT", "eighty"),
            ("FULFILMENT_MAX_ATTEMPTS", "0"),
            ("ALERT_WEBHOOK_URL", "not a url"),
            ("CALLBACK_VERIFY", "maybe"),
        ]))
        .unwrap_err();
        assert_eq!(
            err.vars(),
            [
                "PORT",
                "DATABASE_URL",
                "WECHAT_MCH_ID",
                "WECHAT_ENV_ID",
                "WECHAT_PAYMENT_CALLBACK_SERVICE",
                "TOPUP_API_URL",
                "FULFILMENT_MAX_ATTEMPTS",
                "CALLBACK_VERIFY",
                "ALERT_WEBHOOK_URL",
            ]
        );
        let printed = err.to_string();
        assert!(printed.starts_with("invalid configuration, 9 problems:\n  - PORT must be a port number"), "{printed}");
        assert_eq!(printed.lines().count(), 10, "{printed}");
        // A single problem stays one line.
        let one = production(&[("ADMIN_TOKEN", "short-token")]).unwrap_err().to_string();
        assert_eq!(one, "invalid configuration: ADMIN_TOKEN must be at least 32 characters in production");
    }

    #[test]
    fn an_unknown_carrier_is_named_once_not_also_as_the_sandbox() {
        let err = production(&[("TOPUP_PROVIDER", "carrier-x")]).unwrap_err();
        assert_eq!(err.vars(), ["TOPUP_PROVIDER"], "{err}");
    }

    #[test]
    fn production_takes_env_id_from_cbr_env_id_and_mysql_from_cloud_hosting() {
        let s = Settings::from_vars(&vars(&[
            ("APP_ENV", "production"),
            ("WECHAT_MCH_ID", "1712734762"),
            ("CBR_ENV_ID", "prod-1"),
            ("WECHAT_PAYMENT_CALLBACK_SERVICE", "pay"),
            ("TOPUP_API_URL", "https://carrier.example/api/"),
            ("MYSQL_ADDRESS", "10.0.0.2:3306"),
            ("MYSQL_USERNAME", "root"),
            ("MYSQL_PASSWORD", "p@ss:w/rd"),
        ]))
        .unwrap();
        assert_eq!(s.port, 80);
        assert!(!s.wechat.sandbox);
        assert_eq!(s.wechat.env_id.as_deref(), Some("prod-1"));
        assert_eq!(s.database_url, "mysql://root:p%40ss%3Aw%2Frd@10.0.0.2:3306/wxtopup");
    }

    #[test]
    fn production_runs_on_sqlite_only_when_asked_by_name() {
        let mut settings = vec![
            ("APP_ENV", "production"),
            ("WECHAT_MCH_ID", "1"),
            ("WECHAT_ENV_ID", "e"),
            ("WECHAT_PAYMENT_CALLBACK_SERVICE", "pay"),
            ("TOPUP_API_URL", "http://carrier"),
        ];
        let err = Settings::from_vars(&vars(&settings)).unwrap_err();
        assert_eq!(err.var(), "DATABASE_URL");
        assert!(err.to_string().contains("MYSQL_ADDRESS") && err.to_string().contains("sqlite://"), "{err}");
        settings.push(("DATABASE_URL", "sqlite:///data/wxtopup.db?mode=rwc"));
        assert!(Settings::from_vars(&vars(&settings)).unwrap().database_url.starts_with("sqlite:"));
    }

    #[test]
    fn a_database_url_is_refused_when_the_build_lacks_its_driver() {
        let on_postgres = Settings::from_vars(&vars(&[("DATABASE_URL", "postgres://u@db:5432/wxtopup")]));
        if cfg!(feature = "postgres") {
            assert!(on_postgres.is_ok());
        } else {
            let err = on_postgres.unwrap_err();
            assert_eq!(err.var(), "DATABASE_URL");
            assert!(err.to_string().contains("--features postgres"), "{err}");
        }
        for url in ["sqlite://data/x.db?mode=rwc", "mysql://root@db:3306/wxtopup"] {
            assert!(Settings::from_vars(&vars(&[("DATABASE_URL", url)])).is_ok(), "{url}");
        }
    }

    #[test]
    fn the_pool_size_is_bounded() {
        assert_eq!(Settings::from_vars(&vars(&[])).unwrap().database_max_connections, 10);
        let set = |n| Settings::from_vars(&vars(&[("DATABASE_MAX_CONNECTIONS", n)]));
        assert_eq!(set("32").unwrap().database_max_connections, 32);
        for refused in ["0", "201", "99999999999999999999", "-1", "ten"] {
            assert_eq!(set(refused).unwrap_err().var(), "DATABASE_MAX_CONNECTIONS", "{refused}");
        }
    }

    #[test]
    fn debug_output_hides_the_database_password() {
        let s = Settings::from_vars(&vars(&[("DATABASE_URL", "mysql://root:hunter2@db:3306/wxtopup")])).unwrap();
        let printed = format!("{s:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("mysql://root:***@db:3306/wxtopup"));
    }

    #[test]
    fn production_refuses_the_sandbox_carrier_unless_allowed() {
        let base = [
            ("APP_ENV", "production"),
            ("DATABASE_URL", "mysql://u@db/w"),
            ("WECHAT_MCH_ID", "1"),
            ("WECHAT_ENV_ID", "e"),
            ("WECHAT_PAYMENT_CALLBACK_SERVICE", "pay"),
        ];
        let err = Settings::from_vars(&vars(&base)).unwrap_err();
        assert_eq!(err.var(), "TOPUP_API_URL");
        let mut sandbox = base.to_vec();
        sandbox.push(("TOPUP_PROVIDER", "sandbox"));
        assert_eq!(Settings::from_vars(&vars(&sandbox)).unwrap_err().var(), "TOPUP_PROVIDER");
        sandbox.push(("TOPUP_ALLOW_SANDBOX", "true"));
        assert_eq!(Settings::from_vars(&vars(&sandbox)).unwrap().topup.provider, TopUpProviderKind::Sandbox);
    }

    #[test]
    fn production_refuses_simulated_payments_unless_allowed() {
        let base = [
            ("APP_ENV", "production"),
            ("DATABASE_URL", "mysql://u@db/w"),
            ("PAYMENT_SANDBOX", "true"),
            ("TOPUP_API_URL", "http://carrier"),
        ];
        assert_eq!(Settings::from_vars(&vars(&base)).unwrap_err().var(), "PAYMENT_SANDBOX");
        let mut allowed = base.to_vec();
        allowed.push(("PAYMENT_ALLOW_SANDBOX", "true"));
        assert!(Settings::from_vars(&vars(&allowed)).unwrap().wechat.sandbox);
    }

    fn production(extra: &[(&'static str, &'static str)]) -> Result<Settings, ConfigError> {
        let mut all = vec![
            ("APP_ENV", "production"),
            ("DATABASE_URL", "mysql://wxtopup@db:3306/wxtopup"),
            ("WECHAT_MCH_ID", "1"),
            ("WECHAT_ENV_ID", "e"),
            ("WECHAT_PAYMENT_CALLBACK_SERVICE", "pay"),
            ("TOPUP_API_URL", "http://carrier"),
        ];
        all.extend_from_slice(extra);
        Settings::from_vars(&vars(&all))
    }

    #[test]
    fn production_refuses_unverified_callbacks_unless_loudly_allowed() {
        assert_eq!(production(&[("CALLBACK_VERIFY", "false")]).unwrap_err().var(), "CALLBACK_VERIFY");
        let allowed = production(&[("CALLBACK_VERIFY", "false"), ("UNSAFE_ACCEPT_UNVERIFIED_CALLBACKS", "true")]);
        assert!(!allowed.unwrap().lifecycle.callback_verify);
        assert!(production(&[]).unwrap().lifecycle.callback_verify);
    }

    #[test]
    fn production_refuses_a_short_admin_token() {
        assert_eq!(production(&[("ADMIN_TOKEN", "short-token")]).unwrap_err().var(), "ADMIN_TOKEN");
        assert!(production(&[("ADMIN_TOKEN", "0123456789abcdef0123456789abcdef")]).is_ok());
        // Development takes any token.
        assert!(Settings::from_vars(&vars(&[("ADMIN_TOKEN", "dev")])).is_ok());
    }

    #[test]
    fn the_api_document_is_served_unless_switched_off() {
        assert!(production(&[]).unwrap().api_docs);
        assert!(!production(&[("API_DOCS", "false")]).unwrap().api_docs);
    }

    #[test]
    fn debug_output_hides_tokens() {
        let s = Settings::from_vars(&vars(&[
            ("ADMIN_TOKEN", "admin-secret"),
            ("TOPUP_PROVIDER", "http"),
            ("TOPUP_API_URL", "http://carrier"),
            ("TOPUP_API_TOKEN", "carrier-secret"),
        ]))
        .unwrap();
        let printed = format!("{s:?}");
        assert!(!printed.contains("admin-secret") && !printed.contains("carrier-secret"), "{printed}");
    }

    const RELOADLY: [(&str, &str); 3] = [
        ("TOPUP_PROVIDER", "reloadly"),
        ("RELOADLY_CLIENT_ID", "client-id"),
        ("RELOADLY_CLIENT_SECRET", "s3cret-value"),
    ];

    #[test]
    fn reloadly_outside_production_defaults_to_its_sandbox() {
        let s = Settings::from_vars(&vars(&RELOADLY)).unwrap();
        assert_eq!(s.topup.provider, TopUpProviderKind::Reloadly);
        let r = s.topup.reloadly.unwrap();
        assert_eq!(r.environment, ReloadlyEnvironment::Sandbox);
        assert_eq!(r.api_url, "https://topups-sandbox.reloadly.com");
        assert_eq!(r.auth_url, "https://auth.reloadly.com");
        assert_eq!((r.client_id.as_str(), r.client_secret.as_str()), ("client-id", "s3cret-value"));
        // Other providers carry no Reloadly section.
        assert!(Settings::from_vars(&vars(&[])).unwrap().topup.reloadly.is_none());
    }

    #[test]
    fn reloadly_names_every_missing_credential_in_one_error() {
        let err = Settings::from_vars(&vars(&[("TOPUP_PROVIDER", "reloadly")])).unwrap_err();
        assert_eq!(err.var(), "RELOADLY_CLIENT_ID");
        assert_eq!(
            err.to_string(),
            "invalid configuration, 2 problems:\n  - RELOADLY_CLIENT_ID is required when TOPUP_PROVIDER is reloadly\
             \n  - RELOADLY_CLIENT_SECRET is required when TOPUP_PROVIDER is reloadly"
        );
        let err =
            Settings::from_vars(&vars(&[("TOPUP_PROVIDER", "reloadly"), ("RELOADLY_CLIENT_ID", "id")])).unwrap_err();
        assert_eq!(err.var(), "RELOADLY_CLIENT_SECRET");
    }

    #[test]
    fn production_names_the_reloadly_environment_and_refuses_its_sandbox_unless_allowed() {
        let err = production(&[("TOPUP_PROVIDER", "reloadly")]).unwrap_err();
        let printed = err.to_string();
        for var in ["RELOADLY_CLIENT_ID", "RELOADLY_CLIENT_SECRET", "RELOADLY_ENVIRONMENT"] {
            assert!(printed.contains(var), "{printed}");
        }
        assert_eq!(production(&RELOADLY).unwrap_err().var(), "RELOADLY_ENVIRONMENT");
        let mut live = RELOADLY.to_vec();
        live.push(("RELOADLY_ENVIRONMENT", "live"));
        let r = production(&live).unwrap().topup.reloadly.unwrap();
        assert_eq!(r.environment, ReloadlyEnvironment::Live);
        assert_eq!(r.api_url, "https://topups.reloadly.com");
        let mut sandbox = RELOADLY.to_vec();
        sandbox.push(("RELOADLY_ENVIRONMENT", "sandbox"));
        assert_eq!(production(&sandbox).unwrap_err().var(), "RELOADLY_ENVIRONMENT");
        sandbox.push(("TOPUP_ALLOW_SANDBOX", "true"));
        assert_eq!(production(&sandbox).unwrap().topup.reloadly.unwrap().environment, ReloadlyEnvironment::Sandbox);
    }

    #[test]
    fn reloadly_urls_can_be_pointed_elsewhere_and_bad_values_are_named() {
        let mut custom = RELOADLY.to_vec();
        custom.extend([("RELOADLY_AUTH_URL", "http://127.0.0.1:9/"), ("RELOADLY_API_URL", "http://127.0.0.1:9/api/")]);
        let r = Settings::from_vars(&vars(&custom)).unwrap().topup.reloadly.unwrap();
        assert_eq!((r.auth_url.as_str(), r.api_url.as_str()), ("http://127.0.0.1:9", "http://127.0.0.1:9/api"));
        for (var, value) in [
            ("RELOADLY_ENVIRONMENT", "production"),
            ("RELOADLY_AUTH_URL", "not a url"),
            ("RELOADLY_API_URL", "ftp://topups.example"),
        ] {
            let mut bad = RELOADLY.to_vec();
            bad.push((var, value));
            let err = Settings::from_vars(&vars(&bad)).unwrap_err();
            assert_eq!(err.var(), var, "{value}");
        }
        // Several at once: each is named.
        let mut bad = RELOADLY.to_vec();
        bad.extend([("RELOADLY_ENVIRONMENT", "prod"), ("RELOADLY_AUTH_URL", "nope")]);
        let printed = Settings::from_vars(&vars(&bad)).unwrap_err().to_string();
        assert!(printed.contains("RELOADLY_ENVIRONMENT") && printed.contains("RELOADLY_AUTH_URL"), "{printed}");
    }

    #[test]
    fn debug_output_hides_the_reloadly_client_secret() {
        let printed = format!("{:?}", Settings::from_vars(&vars(&RELOADLY)).unwrap());
        assert!(!printed.contains("s3cret-value"), "{printed}");
        assert!(printed.contains("client-id"), "{printed}");
    }

    #[test]
    fn empty_placeholders_count_as_unset() {
        let err = Settings::from_vars(&vars(&[("PAYMENT_SANDBOX", "false"), ("WECHAT_MCH_ID", "")])).unwrap_err();
        assert_eq!(err.var(), "WECHAT_MCH_ID");
    }

    #[test]
    fn invalid_values_name_their_variable() {
        for (var, value) in [
            ("PORT", "eighty"),
            ("PAYMENT_SANDBOX", "maybe"),
            ("WECHAT_TIMEOUT_MS", "0"),
            ("WECHAT_PAYMENT_SERVER_IP", "localhost"),
            ("DATABASE_URL", "oracle://x"),
            ("APP_ENV", "staging"),
            ("TOPUP_PROVIDER", "ftp"),
            ("FULFILMENT_MAX_ATTEMPTS", "0"),
            ("SCHEDULER_ENABLED", "sometimes"),
        ] {
            let err = Settings::from_vars(&vars(&[(var, value)])).unwrap_err();
            assert_eq!(err.var(), var, "{value}");
        }
    }
}
