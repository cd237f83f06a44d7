use sea_orm::entity::prelude::{DeriveActiveEnum, EnumIter, StringLen};
use std::fmt;

/// Where one refund stands. Its amount stays counted against the order (`refund_requested`) in every
/// state: a refund that WeChat refused or failed is retried or settled by an operator with the same
/// `out_refund_no`, never silently replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum RefundStatus {
    /// Stored, not accepted by WeChat yet (also after a retryable refusal: tried again on a backoff).
    #[sea_orm(string_value = "pending")]
    Pending,
    /// Accepted by WeChat; confirmed with `queryrefund`.
    #[sea_orm(string_value = "submitted")]
    Submitted,
    #[sea_orm(string_value = "success")]
    Success,
    /// Refused for good, or failed at WeChat: needs an operator (`POST /admin/refunds/{n}/retry`).
    #[sea_orm(string_value = "failed")]
    Failed,
}

impl RefundStatus {
    /// Still to be driven by the service.
    pub const OPEN: [RefundStatus; 2] = [RefundStatus::Pending, RefundStatus::Submitted];

    pub fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Pending => "pending",
            RefundStatus::Submitted => "submitted",
            RefundStatus::Success => "success",
            RefundStatus::Failed => "failed",
        }
    }

    pub fn is_open(self) -> bool {
        Self::OPEN.contains(&self)
    }
}

impl fmt::Display for RefundStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
