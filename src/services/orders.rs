use sea_orm::{
    ActiveValue::NotSet, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter,
    QueryOrder, SqlErr,
};

use rust_decimal::Decimal;

use super::ServiceError;
use crate::domain::{now_utc, Money, OrderNumber, OrderStatus, Paging, PhoneNumber};
use crate::entities::{notification, order, product};

/// How often a colliding order number is drawn again before giving up (one in 14.7 million per ms).
const ORDER_NUMBER_ATTEMPTS: usize = 3;

/// The products on sale, in catalog order.
pub async fn list_products(db: &impl ConnectionTrait) -> Result<Vec<product::Model>, ServiceError> {
    Ok(product::Entity::find()
        .filter(product::Column::Active.eq(true))
        .order_by_asc(product::Column::SortOrder)
        .order_by_asc(product::Column::Id)
        .all(db)
        .await?)
}

/// The caller's newest unpaid order for this product and number placed since `since`, if any.
pub async fn recent_unpaid(
    db: &impl ConnectionTrait,
    openid: &str,
    product_id: i32,
    phone: &PhoneNumber,
    since: chrono::NaiveDateTime,
) -> Result<Option<order::Model>, ServiceError> {
    Ok(order::Entity::find()
        .filter(order::Column::Openid.eq(openid))
        .filter(order::Column::ProductId.eq(product_id))
        .filter(order::Column::PhoneNumber.eq(phone.to_string()))
        .filter(order::Column::Status.eq(OrderStatus::Unpaid))
        .filter(order::Column::CreatedAt.gte(since))
        .order_by_desc(order::Column::CreatedAt)
        .one(db)
        .await?)
}

/// Places an unpaid order for `openid`. The amount is the product's price, never the caller's.
pub async fn place_order(
    db: &impl ConnectionTrait,
    openid: &str,
    product_id: i32,
    phone: &PhoneNumber,
) -> Result<order::Model, ServiceError> {
    let product = product::Entity::find_by_id(product_id).one(db).await?.ok_or(ServiceError::ProductNotFound)?;
    if !product.active {
        return Err(ServiceError::ProductUnavailable);
    }
    let amount = Money::from_stored(product.price);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let now = now_utc();
        let order = order::Model {
            id: 0,
            order_number: OrderNumber::generate(now.and_utc().timestamp_millis()).to_string(),
            openid: openid.to_string(),
            product_id: product.id,
            product_name: product.name.clone(),
            phone_number: phone.to_string(),
            amount: amount.yuan(),
            status: OrderStatus::Unpaid,
            prepay_id: None,
            prepay_params: None,
            prepay_at: None,
            transaction_id: None,
            paid_at: None,
            anomaly: None,
            created_at: now,
            updated_at: now,
            product_code: product.code.clone(),
            face_value: product.face_value,
            face_currency: product.face_currency.clone(),
            fulfil_attempts: 0,
            submitted: false,
            lease_owner: None,
            lease_expires_at: None,
            recharge_at: None,
            delivered_at: None,
            provider_reference: None,
            failure_reason: None,
            refund_requested: Decimal::ZERO,
            refund_seq: 0,
            last_queried_at: None,
            closed_at: None,
            budget_from: 0,
            unresolved_at: None,
            country: Some(product.country.clone()),
            carrier_reference: Some(product.carrier_reference.clone()),
        };
        // One INSERT, no read-back: the row is what was sent, and the id comes with the answer
        // (RETURNING, or MySQL's last insert id).
        let mut row = order.clone().into_active_model();
        row.id = NotSet;
        match order::Entity::insert(row).exec(db).await {
            Ok(inserted) => return Ok(order::Model { id: inserted.last_insert_id, ..order }),
            Err(e)
                if attempt < ORDER_NUMBER_ATTEMPTS
                    && matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) =>
            {
                tracing::warn!("order number collision, drawing another");
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// One page of the caller's orders, newest first, and the total count.
pub async fn list_orders(
    db: &impl ConnectionTrait,
    openid: &str,
    paging: Paging,
) -> Result<(Vec<order::Model>, u64), ServiceError> {
    let query = order::Entity::find()
        .filter(order::Column::Openid.eq(openid))
        .order_by_desc(order::Column::CreatedAt)
        .order_by_desc(order::Column::Id);
    let paginator = query.paginate(db, paging.size());
    let total = paginator.num_items().await?;
    let items = paginator.fetch_page(paging.index()).await?;
    Ok((items, total))
}

/// The caller's order. Someone else's order is "not found", so order numbers cannot be probed.
pub async fn find_order(
    db: &impl ConnectionTrait,
    openid: &str,
    order_number: &str,
) -> Result<order::Model, ServiceError> {
    order::Entity::find()
        .filter(order::Column::OrderNumber.eq(order_number))
        .filter(order::Column::Openid.eq(openid))
        .one(db)
        .await?
        .ok_or(ServiceError::OrderNotFound)
}

/// The order by number, whoever owns it.
pub async fn find_by_number(
    db: &impl ConnectionTrait,
    order_number: &str,
) -> Result<Option<order::Model>, sea_orm::DbErr> {
    order::Entity::find().filter(order::Column::OrderNumber.eq(order_number)).one(db).await
}

/// The subscribe messages about an order, oldest first: the buyer's view and the operator's share them.
pub async fn notifications_of(
    db: &impl ConnectionTrait,
    order_number: &str,
) -> Result<Vec<notification::Model>, ServiceError> {
    Ok(notification::Entity::find()
        .filter(notification::Column::OrderNumber.eq(order_number))
        .order_by_asc(notification::Column::Id)
        .all(db)
        .await?)
}
