//! sea-orm entities, one per table. Timestamps are naive UTC instants.

pub mod alert;
pub mod catalog_change;
pub mod fulfilment_attempt;
pub mod idempotency_key;
pub mod notification;
pub mod order;
pub mod payment_event;
pub mod product;
pub mod refund;
pub mod sandbox_payment;
pub mod sandbox_refund;
pub mod sandbox_topup;
