use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
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
        let order = order::ActiveModel {
            order_number: Set(OrderNumber::generate(now.and_utc().timestamp_millis()).to_string()),
            openid: Set(openid.to_string()),
            product_id: Set(product.id),
            product_name: Set(product.name.clone()),
            phone_number: Set(phone.to_string()),
            amount: Set(amount.yuan()),
            status: Set(OrderStatus::Unpaid),
            prepay_id: Set(None),
            prepay_params: Set(None),
            prepay_at: Set(None),
            transaction_id: Set(None),
            paid_at: Set(None),
            anomaly: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
            product_code: Set(product.code.clone()),
            face_value: Set(product.face_value),
            face_currency: Set(product.face_currency.clone()),
            fulfil_attempts: Set(0),
            submitted: Set(false),
            lease_owner: Set(None),
            lease_expires_at: Set(None),
            recharge_at: Set(None),
            delivered_at: Set(None),
            provider_reference: Set(None),
            failure_reason: Set(None),
            refund_requested: Set(Decimal::ZERO),
            refund_seq: Set(0),
            last_queried_at: Set(None),
            closed_at: Set(None),
            budget_from: Set(0),
            unresolved_at: Set(None),
            country: Set(Some(product.country.clone())),
            carrier_reference: Set(Some(product.carrier_reference.clone())),
            ..Default::default()
        };
        match order.insert(db).await {
            Ok(model) => return Ok(model),
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
