use async_trait::async_trait;
use rust_decimal::Decimal;

/// What the carrier is asked to deliver. `reference` is our order number: the carrier's idempotency
/// key, so submitting the same reference twice must not deliver twice.
#[derive(Clone, Debug)]
pub struct TopUpRequest {
    pub reference: String,
    pub phone_number: String,
    pub amount: Decimal,
    pub currency: String,
    pub product_code: String,
    /// The carrier's own product reference, as the operator entered it in the catalog (for Reloadly the
    /// numeric operator id; for the http adapter the same as `product_code` unless set).
    pub carrier_reference: String,
    /// The ISO 3166-1 alpha-2 country the phone number belongs to, as the catalog says (e.g. "MN").
    pub country: String,
}

/// Where a top-up stands at the carrier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopUpState {
    Delivered,
    Pending,
    Failed,
}

/// The carrier's answer about one top-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub state: TopUpState,
    pub provider_reference: Option<String>,
    pub message: Option<String>,
}

/// A call that did not produce a receipt.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The carrier refused the request for good (a 4xx): retrying will not help.
    #[error("carrier refused: {0}")]
    Refused(String),
    /// Timeout, 5xx, garbage: the top-up may or may not exist. Query before submitting again.
    #[error("outcome unknown: {0}")]
    Unknown(String),
}

/// The seam for carriers. Both calls must be safe to repeat.
#[async_trait]
pub trait TopUpProvider: Send + Sync {
    /// Asks the carrier to deliver; idempotent by `request.reference`.
    async fn submit(&self, request: &TopUpRequest) -> Result<Receipt, ProviderError>;

    /// Looks the top-up up by reference; `Ok(None)` means the carrier never received it.
    async fn query(&self, reference: &str) -> Result<Option<Receipt>, ProviderError>;
}
