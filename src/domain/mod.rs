//! Pure types: no I/O, no framework. Everything here is unit-tested in place.

mod money;
mod order_number;
mod order_status;
mod phone;
mod time;

pub use money::{Money, MoneyError};
pub use order_number::OrderNumber;
pub use order_status::{OrderEvent, OrderStatus, TransitionError};
pub use phone::PhoneNumber;
pub use time::{beijing_to_utc, beijing_today, now_utc};
