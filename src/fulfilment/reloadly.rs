//! Reloadly's Airtime API. This file is the only place its format lives. Every call is safe to repeat:
//! `customIdentifier` is our order number, and Reloadly keeps it unique.
//!
//! What this adapter relies on, and where it is documented:
//! - Token: `POST {auth}/oauth/token` `{"client_id","client_secret","grant_type":"client_credentials",
//!   "audience"}`, answering `{"access_token","scope","expires_in","token_type":"Bearer"}`; the audience
//!   is `https://topups.reloadly.com` (live) or `https://topups-sandbox.reloadly.com` (sandbox), which
//!   are also the API's base URLs (<https://docs.reloadly.com/airtime/>,
//!   <https://raphaelugwu.gitbook.io/airtime/quickstart>). Tokens live 60 days live and 24 hours in the
//!   sandbox (<https://support.reloadly.com/locating-your-api-credentials>); an expired one is answered
//!   401 `TOKEN_EXPIRED` (<https://raphaelugwu.gitbook.io/airtime/airtime-errors/error-codes>). The
//!   token is cached until 60 s before `expires_in`, and a 401 fetches a new one and repeats the call
//!   once (safe: the same `customIdentifier`).
//! - Top-up: `POST {api}/topups` with `Authorization: Bearer …` and
//!   `Accept: application/com.reloadly.topups-v1+json`, body `{"operatorId","amount","useLocalAmount",
//!   "customIdentifier","recipientPhone":{"countryCode","number"}}`, answering a transaction
//!   `{"transactionId","status","operatorTransactionId","customIdentifier","requestedAmount",
//!   "deliveredAmount",…}`. "Once a reference has been used for a top-up transaction, it cannot be
//!   reused" (<https://docs.reloadly.com/airtime/top-ups/top-up>,
//!   <https://raphaelugwu.gitbook.io/airtime/top-ups/top-up>).
//! - Statuses: `SUCCESSFUL`; `PROCESSING` (still being verified with the operator); `REFUNDED` (not
//!   processed, funds returned); `FAILED` (failed at the operator, funds not debited)
//!   (<https://raphaelugwu.gitbook.io/airtime/top-ups/top-up-status>). `PENDING` is not in those docs; it
//!   is read as pending too. Any other status is an unknown outcome.
//! - Lookup: `GET {api}/topups/reports/transactions?customIdentifier=…` answers a page whose `content`
//!   holds transactions of the same shape (<https://docs.reloadly.com/airtime/transactions/get-transaction>);
//!   the page's `totalElements` is from the official Java SDK's fixtures (github.com/Reloadly/
//!   reloadly-sdk-java, `java-sdk-airtime/src/test/resources/report/`).
//! - Errors: `{"timeStamp","message","path","errorCode","infoLink","details"}`, with the codes listed at
//!   <https://raphaelugwu.gitbook.io/airtime/airtime-errors/error-codes>.
//! - Phone: the official SDK sends the number with its international prefix beside the ISO country
//!   (`new Phone("+50936377111", CountryCode.HT)`, `java-sdk-airtime/usage/TOPUP-OPERATIONS.md`), so the
//!   stored number goes as it is: no calling-code table here.
//! - Operator auto-detection (`GET /operators/auto-detect/phone/{phone}/countries/{iso}`) is documented
//!   (<https://raphaelugwu.gitbook.io/airtime/operators/auto-detect-an-operator>) but not used: the
//!   catalog names the operator.
//!
//! Not found in the docs, and how this adapter stays safe without it: the HTTP status of each error
//! code (a refusal needs a 4xx *and* a code from [`refuses_for_good`]); the error for a reused
//! `customIdentifier` (any undocumented error is an unknown outcome, so a duplicate is queried, never
//! failed); what the lookup answers for an identifier it never saw (only a 200 with an empty `content`
//! counts as "never received"); whether its filter is exact (our identifier is compared here); whether
//! failed top-ups and fresh ones appear in the report at once (a miss leads to a second submit of the
//! same `customIdentifier`, which Reloadly refuses to reuse).
//!
//! Decisions: `useLocalAmount` is always true, because the catalog's face value is in the operator's
//! currency (5,000 MNT); false would read it in the account's currency. `INSUFFICIENT_BALANCE` and the
//! other account-side codes (daily limits, inactive account, recently recharged, try later) prove that
//! nothing was created, but they are faults of our account, not of the order: they are unknown
//! outcomes, retried on the backoff (the lookup then finds nothing and the top-up is sent again), so
//! funding the wallet delivers the waiting orders; one left unresolved can still be refunded on the
//! lookup's proof. A request that cannot be sent (carrier reference not an operator id, no country) is
//! refused before anything leaves: nothing reached Reloadly, so nothing was delivered.
//!
//! Never logged or put in a message: the client secret, the access token, phone numbers (Reloadly's
//! messages have their digits masked).

use async_trait::async_trait;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

use super::provider::{ProviderError, Receipt, TopUpProvider, TopUpRequest, TopUpState};
use crate::config::{ReloadlySettings, TopUpSettings};

const ACCEPT: &str = "application/com.reloadly.topups-v1+json";
/// A token is renewed this long before Reloadly says it expires.
const RENEW_MARGIN: Duration = Duration::from_secs(60);
/// Live tokens last 60 days, the longest documented lifetime.
const LONGEST_LIFETIME_SECS: u64 = 60 * 24 * 3600;

pub struct ReloadlyProvider {
    http: reqwest::Client,
    token_url: String,
    api: String,
    audience: &'static str,
    client_id: String,
    client_secret: String,
    /// The whole of one call, token and repeat included, so a claim's lease still outlives it.
    deadline: Duration,
    token: Mutex<Option<Token>>,
}

impl fmt::Debug for ReloadlyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadlyProvider").field("api", &self.api).field("audience", &self.audience).finish()
    }
}

struct Token {
    value: String,
    renew_at: Instant,
}

#[derive(Serialize)]
struct TokenRequest<'a> {
    client_id: &'a str,
    client_secret: &'a str,
    grant_type: &'static str,
    audience: &'static str,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: Option<u64>,
    token_type: Option<String>,
}

#[derive(Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
struct TopUpBody<'a> {
    operator_id: u64,
    amount: serde_json::Number,
    use_local_amount: bool,
    custom_identifier: &'a str,
    recipient_phone: Phone<'a>,
}

#[derive(Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
struct Phone<'a> {
    country_code: String,
    number: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Transaction {
    transaction_id: Option<serde_json::Value>,
    status: Option<String>,
    custom_identifier: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TransactionPage {
    content: Option<Vec<Transaction>>,
    total_elements: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiError {
    error_code: Option<String>,
    message: Option<String>,
}

impl ReloadlyProvider {
    pub fn new(settings: &ReloadlySettings, deadline: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder().timeout(deadline).redirect(reqwest::redirect::Policy::none()).build()?;
        Ok(ReloadlyProvider {
            http,
            token_url: format!("{}/oauth/token", settings.auth_url.trim_end_matches('/')),
            api: settings.api_url.trim_end_matches('/').to_string(),
            audience: settings.environment.audience(),
            client_id: settings.client_id.clone(),
            client_secret: settings.client_secret.clone(),
            deadline,
            token: Mutex::new(None),
        })
    }

    /// The adapter for `settings`; settings without a Reloadly section (never built by
    /// `Settings::from_vars`) get one that sends nothing and answers every call unknown.
    pub fn from_settings(settings: &TopUpSettings) -> Result<Arc<dyn TopUpProvider>, reqwest::Error> {
        Ok(match &settings.reloadly {
            Some(reloadly) => Arc::new(ReloadlyProvider::new(reloadly, settings.timeout)?),
            None => Arc::new(Unconfigured),
        })
    }

    /// Runs `work` within the deadline; running out of time is an unknown outcome.
    async fn within_deadline<T>(
        &self,
        work: impl Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        tokio::time::timeout(self.deadline, work)
            .await
            .unwrap_or_else(|_| Err(ProviderError::Unknown("Reloadly timed out".into())))
    }

    /// The cached token, or a new one. The lock is held while fetching, so concurrent calls wait for
    /// one fetch instead of each asking.
    async fn token(&self) -> Result<String, ProviderError> {
        let mut slot = self.token.lock().await;
        if let Some(token) = slot.as_ref().filter(|t| Instant::now() < t.renew_at) {
            return Ok(token.value.clone());
        }
        let token = self.fetch_token().await?;
        let value = token.value.clone();
        *slot = Some(token);
        Ok(value)
    }

    /// Drops `stale` from the cache, unless another call already replaced it.
    async fn forget(&self, stale: &str) {
        let mut slot = self.token.lock().await;
        if slot.as_ref().is_some_and(|t| t.value == stale) {
            *slot = None;
        }
    }

    async fn fetch_token(&self) -> Result<Token, ProviderError> {
        let body = TokenRequest {
            client_id: &self.client_id,
            client_secret: &self.client_secret,
            grant_type: "client_credentials",
            audience: self.audience,
        };
        let request = self.http.post(&self.token_url).header(reqwest::header::ACCEPT, "application/json").json(&body);
        let (status, bytes) = send(request).await?;
        if !(200..=299).contains(&status) {
            return Err(ProviderError::Unknown(format!(
                "Reloadly token request answered HTTP {status}{}",
                code_suffix(&bytes)
            )));
        }
        let answer: TokenAnswer = serde_json::from_slice(&bytes)
            .map_err(|_| ProviderError::Unknown("Reloadly token request answered an unreadable body".into()))?;
        token_from(answer, Instant::now())
    }

    /// Sends the request `make` builds with the current token; on a 401 the token is renewed and the same
    /// request is sent once more. Repeating is safe: a 401 created nothing, and the body carries the same
    /// `customIdentifier` either way.
    async fn authorized(&self, make: impl Fn() -> reqwest::RequestBuilder) -> Result<(u16, Vec<u8>), ProviderError> {
        let token = self.token().await?;
        let (status, bytes) = send(make().bearer_auth(&token).header(reqwest::header::ACCEPT, ACCEPT)).await?;
        if status != 401 {
            return Ok((status, bytes));
        }
        let code = code_suffix(&bytes);
        tracing::warn!(code = code.trim(), "Reloadly refused the access token; fetching a new one");
        self.forget(&token).await;
        let token = self.token().await?;
        send(make().bearer_auth(&token).header(reqwest::header::ACCEPT, ACCEPT)).await
    }

    async fn submit_body(&self, reference: &str, body: &TopUpBody<'_>) -> Result<Receipt, ProviderError> {
        let url = format!("{}/topups", self.api);
        let (status, bytes) = self.authorized(|| self.http.post(&url).json(body)).await?;
        match status {
            200..=299 => submitted(reference, &bytes),
            status => Err(error_of(status, &bytes)),
        }
    }

    async fn look_up(&self, reference: &str) -> Result<Option<Receipt>, ProviderError> {
        let url = format!("{}/topups/reports/transactions", self.api);
        let (status, bytes) = self.authorized(|| self.http.get(&url).query(&[("customIdentifier", reference)])).await?;
        match status {
            200..=299 => found(reference, &bytes),
            status => {
                Err(ProviderError::Unknown(format!("Reloadly lookup answered HTTP {status}{}", code_suffix(&bytes))))
            }
        }
    }
}

/// Any transport failure is an unknown outcome; reqwest's own text carries the URL, which is dropped.
async fn send(request: reqwest::RequestBuilder) -> Result<(u16, Vec<u8>), ProviderError> {
    let response = request.send().await.map_err(transport)?;
    let status = response.status().as_u16();
    let bytes = response.bytes().await.map_err(transport)?;
    Ok((status, bytes.to_vec()))
}

fn transport(error: reqwest::Error) -> ProviderError {
    if error.is_timeout() {
        ProviderError::Unknown("Reloadly timed out".into())
    } else {
        ProviderError::Unknown(format!("Reloadly unreachable: {}", error.without_url()))
    }
}

fn token_from(answer: TokenAnswer, now: Instant) -> Result<Token, ProviderError> {
    if answer.token_type.as_deref().is_some_and(|t| !t.eq_ignore_ascii_case("bearer")) {
        return Err(ProviderError::Unknown("Reloadly issued a token that is not a bearer token".into()));
    }
    // Visible ASCII only: anything else cannot go in a header.
    if answer.access_token.is_empty() || !answer.access_token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ProviderError::Unknown("Reloadly issued an unusable access token".into()));
    }
    // Without a lifetime the token serves this call only; an absurd one is cut to the longest documented.
    let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(0).min(LONGEST_LIFETIME_SECS));
    let margin = RENEW_MARGIN.min(lifetime / 2);
    let renew_at = now.checked_add(lifetime.saturating_sub(margin)).unwrap_or(now);
    Ok(Token { value: answer.access_token, renew_at })
}

/// The body of a top-up, or the refusal of a request that cannot be sent (nothing reaches Reloadly).
fn top_up_body(request: &TopUpRequest) -> Result<TopUpBody<'_>, ProviderError> {
    let reference = request.carrier_reference.trim();
    let operator_id = Some(reference)
        .filter(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|r| r.parse::<u64>().ok())
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            ProviderError::Refused(format!(
                "the product's carrier reference {:?} is not a Reloadly operator id (a positive whole number); \
                 nothing was sent to Reloadly",
                reference.chars().take(40).collect::<String>()
            ))
        })?;
    let country = request.country.trim();
    if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(ProviderError::Refused(format!(
            "the product's country {:?} is not an ISO 3166-1 alpha-2 code; nothing was sent to Reloadly",
            country.chars().take(8).collect::<String>()
        )));
    }
    let amount = json_amount(request.amount).ok_or_else(|| {
        ProviderError::Refused(format!(
            "the face value {} cannot be sent to Reloadly; nothing was sent",
            request.amount.normalize()
        ))
    })?;
    let number = request.phone_number.trim();
    if number.is_empty() {
        return Err(ProviderError::Refused("the order has no phone number; nothing was sent to Reloadly".into()));
    }
    Ok(TopUpBody {
        operator_id,
        amount,
        // The face value is in the operator's currency.
        use_local_amount: true,
        custom_identifier: &request.reference,
        recipient_phone: Phone { country_code: country.to_ascii_uppercase(), number },
    })
}

/// A positive amount as a JSON number: a whole number stays an integer, a fraction must survive the
/// trip through `f64` unchanged.
fn json_amount(amount: Decimal) -> Option<serde_json::Number> {
    let amount = amount.normalize();
    if amount <= Decimal::ZERO {
        return None;
    }
    if amount.scale() == 0 {
        return amount.to_u64().map(serde_json::Number::from);
    }
    let float = amount.to_f64()?;
    let back: Decimal = float.to_string().parse().ok()?;
    if back != amount {
        return None;
    }
    serde_json::Number::from_f64(float)
}

/// What a top-up status proves.
fn state_of(status: &str) -> Option<TopUpState> {
    match status {
        "SUCCESSFUL" => Some(TopUpState::Delivered),
        "PROCESSING" | "PENDING" => Some(TopUpState::Pending),
        // FAILED: not debited; REFUNDED: not processed, funds returned. Neither delivered anything.
        "FAILED" | "REFUNDED" => Some(TopUpState::Failed),
        _ => None,
    }
}

/// Error codes that prove a request was refused for good: the number, the amount, the country or the
/// operator is not one Reloadly will top up. Nothing was created, and sending it again will not help.
fn refuses_for_good(code: &str) -> bool {
    matches!(
        code,
        "INVALID_RECIPIENT_PHONE"
            | "INVALID_PHONE_NUMBER"
            | "INVALID_SENDER_PHONE"
            | "INVALID_AMOUNT"
            | "INVALID_AMOUNT_FOR_OPERATOR"
            | "COUNTRY_NOT_SUPPORTED"
            | "COULD_NOT_AUTO_DETECT_OPERATOR"
            | "OPERATOR_UNAVAILABLE_OR_CURRENTLY_INACTIVE"
            | "OPERATOR_NOT_IN_SERVICE"
    )
}

/// What the operator can do about an account-side code (these stay unknown outcomes, retried).
fn hint(code: &str) -> Option<&'static str> {
    match code {
        "INSUFFICIENT_BALANCE" => Some("fund the Reloadly account; the top-up is retried"),
        "MAX_DAILY_TRANSACTION_AMOUNT_REACHED" | "MAX_DAILY_TRANSACTION_COUNT_REACHED" => {
            Some("the Reloadly account's daily limit is reached; the top-up is retried")
        }
        "PHONE_RECENTLY_RECHARGED" => Some("Reloadly waits two minutes between top-ups of one number"),
        _ => None,
    }
}

/// A failed call: a refusal only with a 4xx and a code from [`refuses_for_good`]. A 401 that survived a
/// new token, 408, 409 (a duplicate `customIdentifier` may mean the top-up exists), 429, 5xx, and any
/// code not documented as a refusal say nothing about whether the top-up exists.
fn error_of(status: u16, bytes: &[u8]) -> ProviderError {
    let error = serde_json::from_slice::<ApiError>(bytes).ok();
    let code = error.as_ref().and_then(|e| e.error_code.as_deref()).filter(|c| is_code(c));
    let mut detail = format!("Reloadly answered HTTP {status}");
    if let Some(code) = code {
        detail.push(' ');
        detail.push_str(code);
    }
    if let Some(message) = error.as_ref().and_then(|e| e.message.as_deref()).filter(|m| !m.trim().is_empty()) {
        detail.push_str(": ");
        detail.push_str(&masked(message, 160));
    }
    if let Some(hint) = code.and_then(hint) {
        detail.push_str(" (");
        detail.push_str(hint);
        detail.push(')');
    }
    let client_error = (400..=499).contains(&status) && !matches!(status, 401 | 408 | 409 | 429);
    match code {
        Some(code) if client_error && refuses_for_good(code) => ProviderError::Refused(detail),
        _ => ProviderError::Unknown(detail),
    }
}

/// The answer to a submit.
fn submitted(reference: &str, bytes: &[u8]) -> Result<Receipt, ProviderError> {
    let transaction: Transaction = serde_json::from_slice(bytes)
        .map_err(|_| ProviderError::Unknown("Reloadly answered an unreadable body".into()))?;
    if transaction.custom_identifier.as_deref().is_some_and(|c| c != reference) {
        return Err(ProviderError::Unknown("Reloadly answered with another customIdentifier".into()));
    }
    receipt_of(&transaction)
}

/// The answer to a lookup. `Ok(None)` only for a readable page with no transaction at all: Reloadly holds
/// nothing under this identifier.
fn found(reference: &str, bytes: &[u8]) -> Result<Option<Receipt>, ProviderError> {
    let page: TransactionPage = serde_json::from_slice(bytes)
        .map_err(|_| ProviderError::Unknown("Reloadly lookup answered an unreadable body".into()))?;
    let content =
        page.content.ok_or_else(|| ProviderError::Unknown("Reloadly lookup answered a page without content".into()))?;
    if content.is_empty() {
        return match page.total_elements {
            None | Some(0) => Ok(None),
            Some(_) => Err(ProviderError::Unknown("Reloadly lookup counted transactions it did not list".into())),
        };
    }
    let receipts: Vec<Result<Receipt, ProviderError>> =
        content.iter().filter(|t| t.custom_identifier.as_deref() == Some(reference)).map(receipt_of).collect();
    if receipts.is_empty() {
        // The filter matched something, but not this identifier: that proves nothing.
        return Err(ProviderError::Unknown("Reloadly lookup answered only other customIdentifiers".into()));
    }
    // Reloadly keeps the identifier unique; should it list several, a delivery anywhere is a delivery,
    // and a failure counts only when every one failed.
    let strength = |r: &Result<Receipt, ProviderError>| match r {
        Ok(Receipt { state: TopUpState::Delivered, .. }) => 0,
        Err(_) => 1,
        Ok(Receipt { state: TopUpState::Pending, .. }) => 2,
        Ok(Receipt { state: TopUpState::Failed, .. }) => 3,
    };
    let strongest = receipts.into_iter().min_by_key(strength);
    match strongest {
        Some(receipt) => receipt.map(Some),
        None => Err(ProviderError::Unknown("Reloadly lookup answered nothing usable".into())),
    }
}

fn receipt_of(transaction: &Transaction) -> Result<Receipt, ProviderError> {
    let status = transaction
        .status
        .as_deref()
        .ok_or_else(|| ProviderError::Unknown("Reloadly answered a transaction without a status".into()))?;
    let state = state_of(status)
        .ok_or_else(|| ProviderError::Unknown(format!("Reloadly answered unknown status {:?}", masked(status, 32))))?;
    let provider_reference = match &transaction.transaction_id {
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        Some(serde_json::Value::String(s)) if !s.is_empty() => Some(masked(s, 64)),
        _ => None,
    };
    Ok(Receipt { state, provider_reference, message: Some(format!("Reloadly reports the top-up {status}")) })
}

/// An error code as Reloadly spells them (`INVALID_RECIPIENT_PHONE`); anything else is not shown.
fn is_code(code: &str) -> bool {
    !code.is_empty() && code.len() <= 64 && code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
}

/// ` CODE` of an error body, for messages about calls whose body is not otherwise shown.
fn code_suffix(bytes: &[u8]) -> String {
    serde_json::from_slice::<ApiError>(bytes)
        .ok()
        .and_then(|e| e.error_code)
        .filter(|c| is_code(c))
        .map(|c| format!(" {c}"))
        .unwrap_or_default()
}

/// Reloadly's text, cut short, with every digit masked (it may quote the phone number) and control
/// characters dropped.
fn masked(text: &str, max_chars: usize) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(max_chars)
        .map(|c| if c.is_ascii_digit() || c.is_numeric() { '#' } else { c })
        .collect()
}

#[async_trait]
impl TopUpProvider for ReloadlyProvider {
    async fn submit(&self, request: &TopUpRequest) -> Result<Receipt, ProviderError> {
        let body = top_up_body(request)?;
        let span = tracing::info_span!("reloadly.submit", reference = %request.reference);
        let work = self.within_deadline(self.submit_body(&request.reference, &body));
        tracing::Instrument::instrument(work, span).await
    }

    async fn query(&self, reference: &str) -> Result<Option<Receipt>, ProviderError> {
        let span = tracing::info_span!("reloadly.query", reference);
        let work = self.within_deadline(self.look_up(reference));
        tracing::Instrument::instrument(work, span).await
    }
}

/// Stands in when the settings name Reloadly but carry no Reloadly section: sends nothing.
struct Unconfigured;

#[async_trait]
impl TopUpProvider for Unconfigured {
    async fn submit(&self, _request: &TopUpRequest) -> Result<Receipt, ProviderError> {
        Err(ProviderError::Unknown("Reloadly is not configured".into()))
    }

    async fn query(&self, _reference: &str) -> Result<Option<Receipt>, ProviderError> {
        Err(ProviderError::Unknown("Reloadly is not configured".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const REFERENCE: &str = "ORD20261201000001";

    fn request() -> TopUpRequest {
        TopUpRequest {
            reference: REFERENCE.into(),
            phone_number: "+97688112233".into(),
            amount: Decimal::new(500000, 2),
            currency: "MNT".into(),
            product_code: "UNITEL-5000".into(),
            carrier_reference: "174".into(),
            country: "mn".into(),
        }
    }

    fn transaction(status: &str) -> serde_json::Value {
        json!({"transactionId": 26523, "status": status, "operatorTransactionId": null,
            "customIdentifier": REFERENCE, "recipientPhone": "97688112233", "countryCode": "MN",
            "operatorId": 174, "requestedAmount": 5000, "deliveredAmount": 5000,
            "deliveredAmountCurrencyCode": "MNT", "transactionDate": "2026-12-01 10:00:00"})
    }

    fn bytes(value: &serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(value).unwrap()
    }

    fn state(result: Result<Receipt, ProviderError>) -> Result<TopUpState, ProviderError> {
        result.map(|r| r.state)
    }

    #[test]
    fn the_body_follows_the_documented_shape() {
        let request = request();
        let body = serde_json::to_value(top_up_body(&request).unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"operatorId": 174, "amount": 5000, "useLocalAmount": true, "customIdentifier": REFERENCE,
                "recipientPhone": {"countryCode": "MN", "number": "+97688112233"}})
        );
        let fraction = TopUpRequest { amount: Decimal::new(1050, 2), ..request };
        assert_eq!(serde_json::to_value(top_up_body(&fraction).unwrap()).unwrap()["amount"], json!(10.5));
    }

    #[test]
    fn a_request_that_cannot_be_sent_is_refused_and_says_why() {
        for (carrier_reference, country) in
            [("UNITEL-5000", "MN"), ("", "MN"), ("0", "MN"), ("+174", "MN"), ("99999999999999999999", "MN")]
        {
            let request =
                TopUpRequest { carrier_reference: carrier_reference.into(), country: country.into(), ..request() };
            let Err(ProviderError::Refused(message)) = top_up_body(&request) else {
                panic!("{carrier_reference:?} must be refused");
            };
            assert!(message.contains("operator id") && message.contains("nothing was sent"), "{message}");
        }
        for country in ["", "M", "MNG", "M1", "ÅÅ"] {
            let request = TopUpRequest { country: country.into(), ..request() };
            let Err(ProviderError::Refused(message)) = top_up_body(&request) else {
                panic!("{country:?} must be refused");
            };
            assert!(message.contains("ISO 3166-1"), "{message}");
        }
        for amount in [Decimal::ZERO, Decimal::new(-5, 0)] {
            let request = TopUpRequest { amount, ..request() };
            assert!(matches!(top_up_body(&request), Err(ProviderError::Refused(_))), "{amount}");
        }
    }

    #[test]
    fn statuses_map_to_what_they_prove() {
        for (status, expected) in [
            ("SUCCESSFUL", Ok(TopUpState::Delivered)),
            ("PROCESSING", Ok(TopUpState::Pending)),
            ("PENDING", Ok(TopUpState::Pending)),
            ("FAILED", Ok(TopUpState::Failed)),
            ("REFUNDED", Ok(TopUpState::Failed)),
        ] {
            assert_eq!(state(submitted(REFERENCE, &bytes(&transaction(status)))), expected, "{status}");
        }
        for status in ["successful", "CANCELLED", ""] {
            let answer = submitted(REFERENCE, &bytes(&transaction(status)));
            assert!(matches!(answer, Err(ProviderError::Unknown(_))), "{status}: {answer:?}");
        }
        let receipt = submitted(REFERENCE, &bytes(&transaction("SUCCESSFUL"))).unwrap();
        assert_eq!(receipt.provider_reference.as_deref(), Some("26523"));
    }

    #[test]
    fn garbage_or_a_foreign_answer_to_a_submit_is_unknown() {
        let mut foreign = transaction("SUCCESSFUL");
        foreign["customIdentifier"] = json!("ORD-SOMEONE-ELSE");
        let mut no_status = transaction("SUCCESSFUL");
        no_status.as_object_mut().unwrap().remove("status");
        for body in [b"<html>".to_vec(), b"".to_vec(), b"[]".to_vec(), bytes(&foreign), bytes(&no_status)] {
            assert!(matches!(submitted(REFERENCE, &body), Err(ProviderError::Unknown(_))));
        }
    }

    fn error_body(code: &str, message: &str) -> Vec<u8> {
        bytes(&json!({"timeStamp": "2026-12-01 10:00:00", "message": message, "path": "/topups",
            "errorCode": code, "infoLink": null, "details": []}))
    }

    #[test]
    fn only_documented_refusals_with_a_4xx_are_refusals() {
        for code in ["INVALID_RECIPIENT_PHONE", "INVALID_AMOUNT_FOR_OPERATOR", "COUNTRY_NOT_SUPPORTED"] {
            assert!(matches!(error_of(400, &error_body(code, "no")), ProviderError::Refused(_)), "{code}");
            assert!(matches!(error_of(404, &error_body(code, "no")), ProviderError::Refused(_)), "{code}");
            // The same code with a status that says nothing is not a refusal.
            for status in [401, 408, 409, 429, 500, 503] {
                assert!(matches!(error_of(status, &error_body(code, "no")), ProviderError::Unknown(_)), "{status}");
            }
        }
        for code in [
            "INSUFFICIENT_BALANCE",
            "PHONE_RECENTLY_RECHARGED",
            "MAX_DAILY_TRANSACTION_COUNT_REACHED",
            "TRANSACTION_CANNOT_BE_PROCESSED_AT_THE_MOMENT",
            "TOPUP_TRANSACTION_FAILED",
            "TOKEN_EXPIRED",
            "DUPLICATED_CUSTOM_IDENTIFIER",
            "OPERATOR_NOT_FOUND",
        ] {
            assert!(matches!(error_of(400, &error_body(code, "no")), ProviderError::Unknown(_)), "{code}");
        }
        for body in [b"".to_vec(), b"<html>".to_vec(), bytes(&json!({"message": "bad request"}))] {
            assert!(matches!(error_of(400, &body), ProviderError::Unknown(_)));
        }
        let ProviderError::Unknown(message) = error_of(400, &error_body("INSUFFICIENT_BALANCE", "Not enough funds"))
        else {
            panic!("unknown expected");
        };
        assert!(message.contains("INSUFFICIENT_BALANCE") && message.contains("fund the Reloadly account"), "{message}");
    }

    #[test]
    fn messages_never_carry_the_phone_number() {
        let body = error_body("INVALID_RECIPIENT_PHONE", "Phone +976 8811 2233 (97688112233) is not valid for MN");
        let message = error_of(400, &body).to_string();
        assert!(!message.contains("8811") && !message.contains("2233") && !message.contains("976"), "{message}");
        assert!(message.contains("INVALID_RECIPIENT_PHONE") && message.contains("HTTP 400"), "{message}");
        let odd = bytes(&json!({"errorCode": "97688112233", "message": null}));
        assert!(!error_of(400, &odd).to_string().contains("9768"));
        let status = submitted(REFERENCE, &bytes(&transaction("NUMBER 97688112233"))).unwrap_err().to_string();
        assert!(!status.contains("9768"), "{status}");
    }

    fn page(content: serde_json::Value, total: Option<u64>) -> Vec<u8> {
        let mut page = json!({"content": content, "pageable": {"pageNumber": 0, "pageSize": 100}, "first": true,
            "last": true, "size": 100, "number": 0});
        if let Some(total) = total {
            page["totalElements"] = json!(total);
        }
        bytes(&page)
    }

    #[test]
    fn only_an_empty_page_proves_reloadly_never_received_it() {
        assert_eq!(found(REFERENCE, &page(json!([]), Some(0))), Ok(None));
        assert_eq!(found(REFERENCE, &page(json!([]), None)), Ok(None));
        let unknown = |body: Vec<u8>| matches!(found(REFERENCE, &body), Err(ProviderError::Unknown(_)));
        assert!(unknown(page(json!([]), Some(3))), "counted but not listed");
        let mut other = transaction("SUCCESSFUL");
        other["customIdentifier"] = json!(format!("{REFERENCE}9"));
        assert!(unknown(page(json!([other]), Some(1))), "someone else's transaction proves nothing");
        assert!(unknown(b"{}".to_vec()), "no content");
        assert!(unknown(b"{\"content\": null}".to_vec()));
        assert!(unknown(b"<html>".to_vec()));
        assert!(unknown(page(json!([transaction("MYSTERY")]), Some(1))));
    }

    #[test]
    fn the_lookup_maps_our_transaction_and_prefers_a_delivery() {
        let state = |content: serde_json::Value| found(REFERENCE, &page(content, None)).map(|r| r.map(|r| r.state));
        assert_eq!(state(json!([transaction("SUCCESSFUL")])), Ok(Some(TopUpState::Delivered)));
        assert_eq!(state(json!([transaction("PROCESSING")])), Ok(Some(TopUpState::Pending)));
        assert_eq!(state(json!([transaction("FAILED")])), Ok(Some(TopUpState::Failed)));
        assert_eq!(state(json!([transaction("REFUNDED")])), Ok(Some(TopUpState::Failed)));
        assert_eq!(state(json!([transaction("FAILED"), transaction("SUCCESSFUL")])), Ok(Some(TopUpState::Delivered)));
        assert_eq!(state(json!([transaction("FAILED"), transaction("PROCESSING")])), Ok(Some(TopUpState::Pending)));
        assert!(state(json!([transaction("FAILED"), transaction("ODD")])).is_err(), "a failure must be unanimous");
    }

    #[test]
    fn tokens_are_renewed_a_minute_early_and_checked() {
        let now = Instant::now();
        let answer = |token: &str, expires_in: Option<u64>, token_type: Option<&str>| TokenAnswer {
            access_token: token.into(),
            expires_in,
            token_type: token_type.map(str::to_string),
        };
        let token = token_from(answer("eyJ.abc", Some(86_400), Some("Bearer")), now).unwrap();
        assert_eq!(token.renew_at, now + Duration::from_secs(86_340));
        let short = token_from(answer("eyJ.abc", Some(30), None), now).unwrap();
        assert_eq!(short.renew_at, now + Duration::from_secs(15));
        assert_eq!(token_from(answer("eyJ.abc", None, None), now).unwrap().renew_at, now);
        let absurd = token_from(answer("eyJ.abc", Some(u64::MAX), None), now).unwrap();
        assert_eq!(absurd.renew_at, now + Duration::from_secs(LONGEST_LIFETIME_SECS - 60));
        for bad in [answer("", Some(60), None), answer("a b", Some(60), None), answer("t", Some(60), Some("MAC"))] {
            assert!(matches!(token_from(bad, now), Err(ProviderError::Unknown(_))));
        }
    }

    #[test]
    fn debug_output_names_no_credential() {
        let settings = ReloadlySettings {
            client_id: "client-id".into(),
            client_secret: "client-secret-value".into(),
            environment: crate::config::ReloadlyEnvironment::Sandbox,
            auth_url: "https://auth.reloadly.com".into(),
            api_url: "https://topups-sandbox.reloadly.com".into(),
        };
        let provider = ReloadlyProvider::new(&settings, Duration::from_secs(1)).unwrap();
        let printed = format!("{provider:?}");
        assert!(!printed.contains("client-secret-value"), "{printed}");
    }
}
