//! The built-in carrier for trying things by hand. The phone number's last two digits choose what
//! happens, deterministically:
//!
//! | ends in | behaviour |
//! |---|---|
//! | `00` | refused permanently (like a 4xx) → `failed` |
//! | `01` | the first submit never arrives (like a 5xx), the next attempt delivers |
//! | `02` | the submit arrives and is delivered but the answer times out; the next attempt finds it by query |
//! | `03` | stays pending for ever; ends `failed` when the attempts run out |
//! | anything else | delivered at once |

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::provider::{ProviderError, Receipt, TopUpProvider, TopUpRequest, TopUpState};

#[derive(Clone, Default)]
pub struct SandboxProvider {
    /// reference → state, for this process only.
    received: Arc<Mutex<HashMap<String, TopUpState>>>,
    /// references whose first submit was already "lost".
    lost_once: Arc<Mutex<HashMap<String, ()>>>,
}

impl SandboxProvider {
    fn remember(&self, reference: &str, state: TopUpState) {
        if let Ok(mut received) = self.received.lock() {
            received.entry(reference.to_string()).or_insert(state);
        }
    }

    fn receipt(reference: &str, state: TopUpState) -> Receipt {
        Receipt { state, provider_reference: Some(format!("SBX-{reference}")), message: Some("sandbox".into()) }
    }
}

#[async_trait]
impl TopUpProvider for SandboxProvider {
    async fn submit(&self, request: &TopUpRequest) -> Result<Receipt, ProviderError> {
        let reference = request.reference.as_str();
        if let Some(state) = self.received.lock().ok().and_then(|r| r.get(reference).copied()) {
            return Ok(Self::receipt(reference, state));
        }
        let ending = &request.phone_number[request.phone_number.len().saturating_sub(2)..];
        match ending {
            "00" => Err(ProviderError::Refused("sandbox: number not eligible for top-up".into())),
            "01" => {
                let first =
                    self.lost_once.lock().map(|mut l| l.insert(reference.to_string(), ()).is_none()).unwrap_or(false);
                if first {
                    Err(ProviderError::Unknown("sandbox: HTTP 503".into()))
                } else {
                    self.remember(reference, TopUpState::Delivered);
                    Ok(Self::receipt(reference, TopUpState::Delivered))
                }
            }
            "02" => {
                self.remember(reference, TopUpState::Delivered);
                Err(ProviderError::Unknown("sandbox: timed out".into()))
            }
            "03" => {
                self.remember(reference, TopUpState::Pending);
                Ok(Self::receipt(reference, TopUpState::Pending))
            }
            _ => {
                self.remember(reference, TopUpState::Delivered);
                Ok(Self::receipt(reference, TopUpState::Delivered))
            }
        }
    }

    async fn query(&self, reference: &str) -> Result<Option<Receipt>, ProviderError> {
        let state = self.received.lock().ok().and_then(|r| r.get(reference).copied());
        Ok(state.map(|s| Self::receipt(reference, s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(phone: &str) -> TopUpRequest {
        TopUpRequest {
            reference: format!("ORD-{phone}"),
            phone_number: phone.into(),
            amount: 5000.into(),
            currency: "MNT".into(),
            product_code: "UNITEL-5000".into(),
            carrier_reference: "UNITEL-5000".into(),
            country: "MN".into(),
        }
    }

    #[tokio::test]
    async fn ordinary_numbers_are_delivered_once_per_reference() {
        let sandbox = SandboxProvider::default();
        let r = request("88112233");
        assert_eq!(sandbox.submit(&r).await.unwrap().state, TopUpState::Delivered);
        assert_eq!(sandbox.submit(&r).await.unwrap().state, TopUpState::Delivered);
        assert_eq!(sandbox.query(&r.reference).await.unwrap().unwrap().state, TopUpState::Delivered);
        assert_eq!(sandbox.query("ORD-unknown").await.unwrap(), None);
    }

    #[tokio::test]
    async fn numbers_ending_00_are_refused() {
        let sandbox = SandboxProvider::default();
        assert!(matches!(sandbox.submit(&request("88112200")).await, Err(ProviderError::Refused(_))));
    }

    #[tokio::test]
    async fn numbers_ending_01_fail_once_then_succeed() {
        let sandbox = SandboxProvider::default();
        let r = request("88112201");
        assert!(matches!(sandbox.submit(&r).await, Err(ProviderError::Unknown(_))));
        assert_eq!(sandbox.query(&r.reference).await.unwrap(), None);
        assert_eq!(sandbox.submit(&r).await.unwrap().state, TopUpState::Delivered);
    }

    #[tokio::test]
    async fn numbers_ending_02_time_out_but_are_delivered() {
        let sandbox = SandboxProvider::default();
        let r = request("88112202");
        assert!(matches!(sandbox.submit(&r).await, Err(ProviderError::Unknown(_))));
        assert_eq!(sandbox.query(&r.reference).await.unwrap().unwrap().state, TopUpState::Delivered);
    }

    #[tokio::test]
    async fn numbers_ending_03_stay_pending() {
        let sandbox = SandboxProvider::default();
        let r = request("88112203");
        assert_eq!(sandbox.submit(&r).await.unwrap().state, TopUpState::Pending);
        assert_eq!(sandbox.query(&r.reference).await.unwrap().unwrap().state, TopUpState::Pending);
    }
}
