//! Pure types: no I/O, no framework. Everything here is unit-tested in place. The two status enums derive
//! sea-orm's `DeriveActiveEnum` so the entities store them directly (no strings compared by hand).

mod money;
mod order_number;
mod order_status;
mod paging;
mod phone;
mod refund_status;
mod time;

pub use money::{Money, MoneyError};
pub use order_number::OrderNumber;
pub use order_status::{OrderEvent, OrderStatus, RefundScope, TransitionError};
pub use paging::{Paging, PagingError};
pub use phone::PhoneNumber;
pub use refund_status::RefundStatus;
pub use time::{
    beijing_to_utc, beijing_today, day_range, now_utc, parse_day, DayError, DAY_PATTERN, FIRST_DAY, LAST_DAY,
};
