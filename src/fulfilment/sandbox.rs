//! The built-in carrier for trying things by hand. The phone number's last two digits choose what
//! happens, deterministically:
//!
//! | ends in | behaviour |
//! |---|---|
//! | `00` | refused permanently (like a 4xx) → `failed`, then refunded automatically |
//! | `01` | the first submit never arrives (like a 5xx), the next attempt delivers |
//! | `02` | the submit arrives and is delivered but the answer times out; the next attempt finds it by query |
//! | `03` | stays pending for ever; `unresolved` when the attempts run out, for an operator (never refunded without one) |
//! | anything else | delivered at once |
//!
//! What the carrier received is kept in the database (`sandbox_topups`, one row per reference), so
//! after a restart, or on another replica, a query for a reference answers what was received, and a
//! submit of a reference received already answers that instead of delivering again. The first write for
//! a reference wins (a unique key), as at a carrier that is idempotent by reference. A database failure
//! is an unknown outcome, as a carrier's 5xx is: the next attempt queries first.

use async_trait::async_trait;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::Set, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, SqlErr};

use super::provider::{ProviderError, Receipt, TopUpProvider, TopUpRequest, TopUpState};
use crate::domain::now_utc;
use crate::entities::sandbox_topup::{self, SandboxTopUpState};
use crate::group_commit::GroupCommit;

#[derive(Clone)]
pub struct SandboxProvider {
    db: DatabaseConnection,
    /// Where what it receives is written: it shares the service's commits.
    writes: GroupCommit,
}

impl From<SandboxTopUpState> for TopUpState {
    fn from(state: SandboxTopUpState) -> Self {
        match state {
            SandboxTopUpState::Delivered => TopUpState::Delivered,
            SandboxTopUpState::Pending => TopUpState::Pending,
        }
    }
}

fn is_duplicate(error: &DbErr) -> bool {
    matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

fn unknown(error: DbErr) -> ProviderError {
    tracing::warn!(%error, "sandbox carrier: database call failed");
    ProviderError::Unknown("sandbox: the simulated carrier is unavailable".into())
}

impl SandboxProvider {
    pub fn new(db: DatabaseConnection, writes: GroupCommit) -> Self {
        SandboxProvider { db, writes }
    }

    async fn find(&self, reference: &str) -> Result<Option<sandbox_topup::Model>, DbErr> {
        sandbox_topup::Entity::find().filter(sandbox_topup::Column::Reference.eq(reference)).one(&self.db).await
    }

    /// Inserts the reference's row unless it has one; false when it had.
    async fn insert(&self, reference: &str, state: Option<SandboxTopUpState>, lost: bool) -> Result<bool, DbErr> {
        let row = sandbox_topup::ActiveModel {
            reference: Set(reference.to_string()),
            state: Set(state),
            lost_first_submit: Set(lost),
            created_at: Set(now_utc()),
            ..Default::default()
        };
        let inserted = self.writes.write(move |db| {
            let row = row.clone();
            Box::pin(async move { sandbox_topup::Entity::insert(row).exec_without_returning(db).await })
        });
        match inserted.await {
            Ok(_) => Ok(true),
            Err(e) if is_duplicate(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The carrier receives `reference` in `state`, unless it received it already: returns what it holds.
    async fn remember(&self, reference: &str, state: SandboxTopUpState) -> Result<TopUpState, DbErr> {
        if self.insert(reference, Some(state), false).await? {
            return Ok(state.into());
        }
        // Only a lost first submit was recorded: this one arrives. Anything received earlier stands.
        let arrives = sandbox_topup::Entity::update_many()
            .col_expr(sandbox_topup::Column::State, Expr::value(Some(state)))
            .filter(sandbox_topup::Column::Reference.eq(reference))
            .filter(sandbox_topup::Column::State.is_null());
        self.writes
            .write(move |db| {
                let arrives = arrives.clone();
                Box::pin(async move { arrives.exec(db).await.map(|_| ()) })
            })
            .await?;
        let held = self.find(reference).await?.and_then(|row| row.state);
        held.map(TopUpState::from).ok_or_else(|| DbErr::RecordNotFound(format!("sandbox top-up {reference}")))
    }

    /// A number whose ending scripts a behaviour (`00` to `03`, see the table above); what was received
    /// already for the reference stands.
    async fn scripted(&self, reference: &str, ending: &str) -> Result<Receipt, ProviderError> {
        if let Some(received) = self.query(reference).await? {
            return Ok(received);
        }
        match ending {
            "00" => Err(ProviderError::Refused("sandbox: number not eligible for top-up".into())),
            "01" => {
                // The first submit of a reference is the one lost, on whichever replica it happens.
                let first = self.insert(reference, None, true).await.map_err(unknown)?;
                if first {
                    Err(ProviderError::Unknown("sandbox: HTTP 503".into()))
                } else {
                    let state = self.remember(reference, SandboxTopUpState::Delivered).await.map_err(unknown)?;
                    Ok(Self::receipt(reference, state))
                }
            }
            "02" => {
                self.remember(reference, SandboxTopUpState::Delivered).await.map_err(unknown)?;
                Err(ProviderError::Unknown("sandbox: timed out".into()))
            }
            // `03`
            _ => {
                let state = self.remember(reference, SandboxTopUpState::Pending).await.map_err(unknown)?;
                Ok(Self::receipt(reference, state))
            }
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
        // `get`, not indexing: a number whose last two bytes are not whole characters has no scripted
        // ending (it cannot panic the task).
        let ending = request.phone_number.get(request.phone_number.len().saturating_sub(2)..).unwrap_or_default();
        match ending {
            "00" | "01" | "02" | "03" => self.scripted(reference, ending).await,
            // No lookup first: `remember` answers what was received already.
            _ => {
                let state = self.remember(reference, SandboxTopUpState::Delivered).await.map_err(unknown)?;
                Ok(Self::receipt(reference, state))
            }
        }
    }

    async fn query(&self, reference: &str) -> Result<Option<Receipt>, ProviderError> {
        let state = self.find(reference).await.map_err(unknown)?.and_then(|row| row.state);
        Ok(state.map(|s| Self::receipt(reference, s.into())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use migration::{Migrator, MigratorTrait};

    /// A migrated in-memory database (one connection, so every call sees the same one).
    async fn database() -> DatabaseConnection {
        let db = crate::app::connect("sqlite::memory:").await.unwrap();
        Migrator::up(&db, None).await.unwrap();
        db
    }

    async fn sandbox() -> SandboxProvider {
        provider(database().await)
    }

    fn provider(db: DatabaseConnection) -> SandboxProvider {
        SandboxProvider::new(db.clone(), GroupCommit::new(db))
    }

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
        let sandbox = sandbox().await;
        let r = request("88112233");
        assert_eq!(sandbox.submit(&r).await.unwrap().state, TopUpState::Delivered);
        assert_eq!(sandbox.submit(&r).await.unwrap().state, TopUpState::Delivered);
        assert_eq!(sandbox.query(&r.reference).await.unwrap().unwrap().state, TopUpState::Delivered);
        assert_eq!(sandbox.query("ORD-unknown").await.unwrap(), None);
    }

    /// The carrier's first receipt of an ordinary number is one statement: the row written, with no
    /// lookup before it (a second submit finds the row through the refused insert).
    #[tokio::test]
    async fn an_ordinary_number_is_received_with_one_statement() {
        let (db, statements) = crate::services::testing::logged_database(|sql| {
            sql.contains("sandbox_topups").then(|| sql.split_whitespace().next().unwrap_or_default().to_string())
        })
        .await;
        let sandbox = provider(db);
        let r = request("88112233");
        assert_eq!(sandbox.submit(&r).await.unwrap().state, TopUpState::Delivered);
        assert_eq!(*statements.lock().unwrap(), ["INSERT"]);
    }

    /// A number that ends inside a character (never one the order intake accepts) is ordinary, not a
    /// panic.
    #[tokio::test]
    async fn a_number_ending_inside_a_character_is_delivered() {
        let sandbox = sandbox().await;
        assert_eq!(sandbox.submit(&request("8811223中")).await.unwrap().state, TopUpState::Delivered);
    }

    #[tokio::test]
    async fn numbers_ending_00_are_refused() {
        let sandbox = sandbox().await;
        assert!(matches!(sandbox.submit(&request("88112200")).await, Err(ProviderError::Refused(_))));
    }

    #[tokio::test]
    async fn numbers_ending_01_fail_once_then_succeed() {
        let sandbox = sandbox().await;
        let r = request("88112201");
        assert!(matches!(sandbox.submit(&r).await, Err(ProviderError::Unknown(_))));
        assert_eq!(sandbox.query(&r.reference).await.unwrap(), None);
        assert_eq!(sandbox.submit(&r).await.unwrap().state, TopUpState::Delivered);
    }

    #[tokio::test]
    async fn numbers_ending_02_time_out_but_are_delivered() {
        let sandbox = sandbox().await;
        let r = request("88112202");
        assert!(matches!(sandbox.submit(&r).await, Err(ProviderError::Unknown(_))));
        assert_eq!(sandbox.query(&r.reference).await.unwrap().unwrap().state, TopUpState::Delivered);
    }

    #[tokio::test]
    async fn numbers_ending_03_stay_pending() {
        let sandbox = sandbox().await;
        let r = request("88112203");
        assert_eq!(sandbox.submit(&r).await.unwrap().state, TopUpState::Pending);
        assert_eq!(sandbox.query(&r.reference).await.unwrap().unwrap().state, TopUpState::Pending);
    }

    #[tokio::test]
    async fn another_instance_on_the_same_database_knows_what_was_received() {
        let db = database().await;
        let timed_out = request("88112202");
        assert!(matches!(provider(db.clone()).submit(&timed_out).await, Err(ProviderError::Unknown(_))));
        let lost = request("88112201");
        assert!(matches!(provider(db.clone()).submit(&lost).await, Err(ProviderError::Unknown(_))));
        let pending = request("88112203");
        provider(db.clone()).submit(&pending).await.unwrap();

        let restarted = provider(db);
        let found = restarted.query(&timed_out.reference).await.unwrap().unwrap();
        assert_eq!(found.state, TopUpState::Delivered);
        assert_eq!(restarted.query(&lost.reference).await.unwrap(), None, "a lost submit was never received");
        assert_eq!(restarted.submit(&lost).await.unwrap().state, TopUpState::Delivered, "only the first is lost");
        assert_eq!(restarted.query(&pending.reference).await.unwrap().unwrap().state, TopUpState::Pending);
    }

    #[tokio::test]
    async fn racing_submits_of_one_reference_agree() {
        let db = database().await;
        let r = request("88112201");
        let answers = futures::future::join_all((0..8).map(|_| async { provider(db.clone()).submit(&r).await })).await;
        assert_eq!(answers.iter().filter(|a| a.is_err()).count(), 1, "one submit is lost: {answers:?}");
        assert!(answers.iter().flatten().all(|receipt| receipt.state == TopUpState::Delivered));
    }
}
