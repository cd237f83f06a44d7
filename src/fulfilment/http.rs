//! A generic JSON carrier API:
//! `POST {url}/topups {"reference","phoneNumber","amount","currency","productCode"}` (`productCode` is
//! the product's carrier reference in the catalog) and
//! `GET {url}/topups/{reference}`, both answering `{"status":"success"|"pending"|"failed",
//! "providerReference","message"}`. Bearer token auth. This file is the only place that format lives.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::time::Duration;

use super::provider::{ProviderError, Receipt, TopUpProvider, TopUpRequest, TopUpState};

#[derive(Clone)]
pub struct HttpProvider {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SubmitBody<'a> {
    reference: &'a str,
    phone_number: &'a str,
    amount: String,
    currency: &'a str,
    product_code: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CarrierAnswer {
    status: String,
    provider_reference: Option<String>,
    message: Option<String>,
}

impl HttpProvider {
    pub fn new(base: &str, token: Option<String>, timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder().timeout(timeout).redirect(reqwest::redirect::Policy::none()).build()?;
        Ok(HttpProvider { http, base: base.trim_end_matches('/').to_string(), token })
    }

    /// Sends with the bearer token; any transport failure is an unknown outcome.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<(u16, Vec<u8>), ProviderError> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request.send().await.map_err(unknown)?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(unknown)?;
        Ok((status, bytes.to_vec()))
    }
}

fn unknown(error: reqwest::Error) -> ProviderError {
    if error.is_timeout() {
        ProviderError::Unknown("carrier timed out".into())
    } else {
        ProviderError::Unknown(format!("carrier unreachable: {}", without_url(error)))
    }
}

/// reqwest errors print the URL; the carrier URL may carry credentials, so drop it.
fn without_url(error: reqwest::Error) -> String {
    error.without_url().to_string()
}

fn receipt(bytes: &[u8]) -> Result<Receipt, ProviderError> {
    let answer: CarrierAnswer = serde_json::from_slice(bytes)
        .map_err(|_| ProviderError::Unknown("carrier answered an unreadable body".into()))?;
    let state = match answer.status.as_str() {
        "success" => TopUpState::Delivered,
        "pending" => TopUpState::Pending,
        "failed" => TopUpState::Failed,
        other => return Err(ProviderError::Unknown(format!("carrier answered unknown status {other:?}"))),
    };
    Ok(Receipt { state, provider_reference: answer.provider_reference, message: answer.message })
}

fn message_of(bytes: &[u8]) -> String {
    serde_json::from_slice::<CarrierAnswer>(bytes)
        .ok()
        .and_then(|a| a.message)
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned())
}

#[async_trait]
impl TopUpProvider for HttpProvider {
    async fn submit(&self, request: &TopUpRequest) -> Result<Receipt, ProviderError> {
        let body = SubmitBody {
            reference: &request.reference,
            phone_number: &request.phone_number,
            amount: request.amount.normalize().to_string(),
            currency: &request.currency,
            // What the carrier calls the product: the catalog's carrier reference.
            product_code: &request.carrier_reference,
        };
        let (status, bytes) = self.send(self.http.post(format!("{}/topups", self.base)).json(&body)).await?;
        match status {
            200..=299 => receipt(&bytes),
            // A conflict on an idempotency key means the carrier already holds this reference; a
            // request timeout or a rate limit says nothing about whether the top-up exists.
            408 | 409 | 429 => {
                Err(ProviderError::Unknown(format!("carrier answered {status}: {}", message_of(&bytes))))
            }
            400..=499 => Err(ProviderError::Refused(format!("carrier answered {status}: {}", message_of(&bytes)))),
            code => Err(ProviderError::Unknown(format!("carrier answered HTTP {code}"))),
        }
    }

    async fn query(&self, reference: &str) -> Result<Option<Receipt>, ProviderError> {
        let (status, bytes) = self.send(self.http.get(format!("{}/topups/{reference}", self.base))).await?;
        match status {
            200..=299 => receipt(&bytes).map(Some),
            404 => Ok(None),
            code => Err(ProviderError::Unknown(format!("carrier query answered HTTP {code}"))),
        }
    }
}
