use sea_orm::entity::prelude::{DeriveActiveEnum, EnumIter, StringLen};
use std::fmt;

/// Where one refund stands. Its amount stays counted against the order (`refund_requested`) in every
/// state: a refund that WeChat refused or failed is retried by an operator with the same
/// `out_refund_no`, or replaced by a new one only once WeChat proves it never paid it.
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
    /// Failed, and WeChat proved it never paid it back (it has no such refund, or closed it): an
    /// operator replaced it with a new `out_refund_no` for the same amount, which now counts instead.
    #[sea_orm(string_value = "replaced")]
    Replaced,
}

impl RefundStatus {
    pub const ALL: [RefundStatus; 5] = [
        RefundStatus::Pending,
        RefundStatus::Submitted,
        RefundStatus::Success,
        RefundStatus::Failed,
        RefundStatus::Replaced,
    ];

    /// Still to be driven by the service.
    pub const OPEN: [RefundStatus; 2] = [RefundStatus::Pending, RefundStatus::Submitted];

    pub fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Pending => "pending",
            RefundStatus::Submitted => "submitted",
            RefundStatus::Success => "success",
            RefundStatus::Failed => "failed",
            RefundStatus::Replaced => "replaced",
        }
    }

    pub fn is_open(self) -> bool {
        Self::OPEN.contains(&self)
    }

    /// Nothing is left to do under this number: paid back, or replaced by a newer refund (which then
    /// carries the money). An order is refunded once all of its refunds are settled.
    pub fn is_settled(self) -> bool {
        matches!(self, RefundStatus::Success | RefundStatus::Replaced)
    }
}

impl fmt::Display for RefundStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
