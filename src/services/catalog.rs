//! The catalog, managed by operators: every change is checked here, written with its audit row in one
//! transaction, and never touches an existing order (orders keep a snapshot of what was bought).

use rust_decimal::Decimal;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, SqlErr, TransactionTrait, TryIntoModel,
};
use serde::Serialize;

use super::ServiceError;
use crate::domain::{now_utc, Money};
use crate::entities::{catalog_change, order, product};

/// The longest list a reorder takes (more is refused, not truncated).
pub const MAX_PRODUCTS_PER_REORDER: usize = 1000;
/// The largest sort position.
pub const MAX_SORT_ORDER: i32 = 1_000_000;
/// A face value as the API writes it: 1 to 12 digits, then optionally one or two decimals.
pub const FACE_VALUE_PATTERN: &str = "^[0-9]{1,12}(\\.[0-9]{1,2})?$";

/// A product's fields, each checked. What `create` needs whole and `update` takes in part.
#[derive(Clone, Debug, Default)]
pub struct ProductFields {
    pub code: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub price: Option<String>,
    pub face_value: Option<String>,
    pub face_currency: Option<String>,
    pub country: Option<String>,
    pub carrier: Option<String>,
    pub carrier_reference: Option<String>,
    pub enabled: Option<bool>,
    pub sort_order: Option<i32>,
}

/// Why a product change is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field} {problem}")]
pub struct InvalidProduct {
    pub field: &'static str,
    pub problem: String,
}

fn invalid(field: &'static str, problem: impl Into<String>) -> InvalidProduct {
    InvalidProduct { field, problem: problem.into() }
}

/// Text an operator typed: trimmed, within `1..=max` characters (or empty, if allowed), no control
/// characters.
fn text(field: &'static str, value: &str, max: usize, may_be_empty: bool) -> Result<String, InvalidProduct> {
    let value = value.trim();
    if value.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    let length = value.chars().count();
    if length == 0 && !may_be_empty {
        return Err(invalid(field, "must not be blank"));
    }
    if length > max {
        return Err(invalid(field, format!("must be at most {max} characters")));
    }
    Ok(value.to_string())
}

fn letters(field: &'static str, value: &str, count: usize) -> Result<String, InvalidProduct> {
    if value.len() == count && value.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(value.to_string())
    } else {
        Err(invalid(field, format!("must be {count} capital letters")))
    }
}

pub fn check_code(value: &str) -> Result<String, InvalidProduct> {
    let ok = (1..=64).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(value.to_string())
    } else {
        Err(invalid("code", "must be 1 to 64 letters, digits, '-', '_' or '.'"))
    }
}

pub fn check_price(value: &str) -> Result<Money, InvalidProduct> {
    let price = Money::parse(value).map_err(|e| invalid("price", e.to_string()))?;
    if price == Money::ZERO {
        return Err(invalid("price", "must be more than 0.00"));
    }
    Ok(price)
}

pub fn check_face_value(value: &str) -> Result<Decimal, InvalidProduct> {
    let digits = |part: &str, max: usize| (1..=max).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_digit());
    let (whole, fraction) = value.split_once('.').map_or((value, None), |(w, f)| (w, Some(f)));
    let shaped = digits(whole, 12) && fraction.is_none_or(|f| digits(f, 2));
    let parsed = value.parse::<Decimal>().ok().filter(|_| shaped);
    match parsed {
        Some(face) if face > Decimal::ZERO => Ok(face),
        _ => Err(invalid("faceValue", "must be a positive decimal string with at most 12 digits and 2 decimals")),
    }
}

pub fn check_sort_order(value: i32) -> Result<i32, InvalidProduct> {
    if (0..=MAX_SORT_ORDER).contains(&value) {
        Ok(value)
    } else {
        Err(invalid("sortOrder", format!("must be between 0 and {MAX_SORT_ORDER}")))
    }
}

/// Writes the checked fields onto `row`.
fn apply(fields: &ProductFields, row: &mut product::ActiveModel) -> Result<(), InvalidProduct> {
    if let Some(code) = &fields.code {
        row.code = Set(check_code(code)?);
    }
    if let Some(name) = &fields.name {
        row.name = Set(text("name", name, 128, false)?);
    }
    if let Some(description) = &fields.description {
        row.description = Set(text("description", description, 512, true)?);
    }
    if let Some(price) = &fields.price {
        row.price = Set(check_price(price)?.yuan());
    }
    if let Some(face) = &fields.face_value {
        row.face_value = Set(check_face_value(face)?);
    }
    if let Some(currency) = &fields.face_currency {
        row.face_currency = Set(letters("faceCurrency", currency, 3)?);
    }
    if let Some(country) = &fields.country {
        row.country = Set(letters("country", country, 2)?);
    }
    if let Some(carrier) = &fields.carrier {
        row.carrier = Set(text("carrier", carrier, 64, false)?);
    }
    if let Some(reference) = &fields.carrier_reference {
        row.carrier_reference = Set(text("carrierReference", reference, 128, false)?);
    }
    if let Some(enabled) = fields.enabled {
        row.active = Set(enabled);
    }
    if let Some(sort) = fields.sort_order {
        row.sort_order = Set(check_sort_order(sort)?);
    }
    Ok(())
}

/// What the audit log keeps of a product.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Snapshot<'a> {
    code: &'a str,
    name: &'a str,
    description: &'a str,
    price: String,
    face_value: String,
    face_currency: &'a str,
    country: &'a str,
    carrier: &'a str,
    carrier_reference: &'a str,
    enabled: bool,
    sort_order: i32,
}

fn snapshot(p: &product::Model) -> String {
    let snapshot = Snapshot {
        code: &p.code,
        name: &p.name,
        description: &p.description,
        price: Money::from_stored(p.price).to_string(),
        face_value: p.face_value.normalize().to_string(),
        face_currency: &p.face_currency,
        country: &p.country,
        carrier: &p.carrier,
        carrier_reference: &p.carrier_reference,
        enabled: p.active,
        sort_order: p.sort_order,
    };
    // Plain strings, numbers and booleans: this cannot fail.
    serde_json::to_string(&snapshot).unwrap_or_default()
}

async fn record(
    db: &impl ConnectionTrait,
    actor: &str,
    action: &str,
    product_id: i32,
    before: Option<&product::Model>,
    after: Option<&product::Model>,
) -> Result<(), sea_orm::DbErr> {
    catalog_change::ActiveModel {
        product_id: Set(product_id),
        actor: Set(actor.chars().take(64).collect()),
        action: Set(action.into()),
        before: Set(before.map(snapshot)),
        after: Set(after.map(snapshot)),
        changed_at: Set(now_utc()),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok(())
}

fn code_taken(error: sea_orm::DbErr) -> ServiceError {
    if matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) {
        ServiceError::ProductCodeTaken
    } else {
        ServiceError::Database(error)
    }
}

/// Every product, selling or not, in catalog order.
pub async fn list_all(db: &impl ConnectionTrait) -> Result<Vec<product::Model>, ServiceError> {
    Ok(product::Entity::find()
        .order_by_asc(product::Column::SortOrder)
        .order_by_asc(product::Column::Id)
        .all(db)
        .await?)
}

/// Adds a product. Every field but `description`, `enabled` (default: selling) and `sortOrder`
/// (default: after the last) is required.
pub async fn create(
    db: &DatabaseConnection,
    actor: &str,
    fields: &ProductFields,
) -> Result<product::Model, ServiceError> {
    let required = [
        ("code", fields.code.is_none()),
        ("name", fields.name.is_none()),
        ("price", fields.price.is_none()),
        ("faceValue", fields.face_value.is_none()),
        ("faceCurrency", fields.face_currency.is_none()),
        ("country", fields.country.is_none()),
        ("carrier", fields.carrier.is_none()),
        ("carrierReference", fields.carrier_reference.is_none()),
    ];
    if let Some((field, _)) = required.iter().find(|(_, missing)| *missing) {
        return Err(invalid(field, "is required").into());
    }
    let now = now_utc();
    let mut row = product::ActiveModel {
        description: Set(String::new()),
        active: Set(true),
        created_at: Set(now),
        updated_at: Set(Some(now)),
        ..Default::default()
    };
    apply(fields, &mut row)?;
    let txn = db.begin().await?;
    if fields.sort_order.is_none() {
        let last = product::Entity::find().order_by_desc(product::Column::SortOrder).one(&txn).await?;
        let next = last.map_or(10, |p| p.sort_order.saturating_add(10)).min(MAX_SORT_ORDER);
        row.sort_order = Set(next);
    }
    let created = row.insert(&txn).await.map_err(code_taken)?;
    record(&txn, actor, "created", created.id, None, Some(&created)).await?;
    txn.commit().await?;
    tracing::info!(product_id = created.id, code = created.code, actor, "product created");
    Ok(created)
}

/// Changes the fields given; the others stay. A change that changes nothing is not recorded.
pub async fn update(
    db: &DatabaseConnection,
    actor: &str,
    id: i32,
    fields: &ProductFields,
) -> Result<product::Model, ServiceError> {
    let txn = db.begin().await?;
    let before = product::Entity::find_by_id(id).one(&txn).await?.ok_or(ServiceError::ProductNotFound)?;
    let mut row: product::ActiveModel = before.clone().into();
    apply(fields, &mut row)?;
    let unchanged = row.clone().try_into_model().is_ok_and(|proposed| proposed == before);
    if unchanged {
        txn.rollback().await?;
        return Ok(before);
    }
    row.updated_at = Set(Some(now_utc()));
    let after = row.update(&txn).await.map_err(code_taken)?;
    record(&txn, actor, "updated", id, Some(&before), Some(&after)).await?;
    txn.commit().await?;
    tracing::info!(product_id = id, actor, "product updated");
    Ok(after)
}

/// Puts the products in the order given: every product, each once.
pub async fn reorder(db: &DatabaseConnection, actor: &str, ids: &[i32]) -> Result<Vec<product::Model>, ServiceError> {
    if ids.len() > MAX_PRODUCTS_PER_REORDER {
        return Err(invalid("ids", format!("must list at most {MAX_PRODUCTS_PER_REORDER} products")).into());
    }
    let txn = db.begin().await?;
    let products = list_all(&txn).await?;
    let mut given = ids.to_vec();
    given.sort_unstable();
    let mut known: Vec<i32> = products.iter().map(|p| p.id).collect();
    known.sort_unstable();
    if given != known {
        txn.rollback().await?;
        return Err(invalid("ids", "must list every product exactly once").into());
    }
    let now = now_utc();
    for (position, id) in ids.iter().enumerate() {
        let Some(before) = products.iter().find(|p| p.id == *id) else { continue };
        // At most 1000 positions: (position + 1) * 10 is at most 10,010.
        let sort = i32::try_from((position + 1) * 10).unwrap_or(MAX_SORT_ORDER);
        if before.sort_order == sort {
            continue;
        }
        let mut row: product::ActiveModel = before.clone().into();
        row.sort_order = Set(sort);
        row.updated_at = Set(Some(now));
        let after = row.update(&txn).await?;
        record(&txn, actor, "reordered", *id, Some(before), Some(&after)).await?;
    }
    let reordered = list_all(&txn).await?;
    txn.commit().await?;
    tracing::info!(actor, products = ids.len(), "catalog reordered");
    Ok(reordered)
}

/// A product's changes, newest first.
pub async fn changes(db: &impl ConnectionTrait, id: i32) -> Result<Vec<catalog_change::Model>, ServiceError> {
    product::Entity::find_by_id(id).one(db).await?.ok_or(ServiceError::ProductNotFound)?;
    Ok(catalog_change::Entity::find()
        .filter(catalog_change::Column::ProductId.eq(id))
        .order_by_desc(catalog_change::Column::Id)
        .all(db)
        .await?)
}

/// The products the first migration seeded for a demo, by code and price.
const DEMO: [(&str, &str); 4] =
    [("UNITEL-5000", "12.00"), ("UNITEL-10000", "23.00"), ("MOBICOM-5000", "12.00"), ("MOBICOM-10000", "23.00")];

/// In production the catalog starts empty: the demo products the migrations seeded are removed, as
/// long as nobody changed them (through the catalog or by hand) and no order refers to them. Each
/// removal is recorded. Returns how many were removed.
pub async fn remove_untouched_demo(db: &DatabaseConnection) -> Result<usize, ServiceError> {
    let mut removed = 0;
    for (code, price) in DEMO {
        let Some(demo) = product::Entity::find().filter(product::Column::Code.eq(code)).one(db).await? else {
            continue;
        };
        let untouched = Money::from_stored(demo.price).to_string() == price && demo.updated_at.is_none();
        let changed =
            catalog_change::Entity::find().filter(catalog_change::Column::ProductId.eq(demo.id)).one(db).await?;
        let ordered = order::Entity::find().filter(order::Column::ProductId.eq(demo.id)).one(db).await?;
        if !untouched || changed.is_some() || ordered.is_some() {
            continue;
        }
        let txn = db.begin().await?;
        product::Entity::delete_by_id(demo.id).exec(&txn).await?;
        record(&txn, "wxtopup", "demo_removed", demo.id, Some(&demo), None).await?;
        txn.commit().await?;
        removed += 1;
    }
    if removed > 0 {
        tracing::info!(removed, "production: the demo catalog was removed; add products in the console");
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fields_are_checked_with_the_field_named() {
        assert_eq!(check_price("0").unwrap_err().field, "price");
        assert_eq!(check_price("12.345").unwrap_err().field, "price");
        assert_eq!(check_price("12.50").unwrap(), Money::parse("12.5").unwrap());
        assert!(check_face_value("5000").is_ok());
        assert!(check_face_value("0").is_err());
        assert!(check_face_value("1e3").is_err());
        assert!(check_face_value("1234567890123").is_err(), "13 digits");
        assert!(check_code("UNITEL-5000").is_ok());
        assert!(check_code("a b").is_err());
        assert!(check_code("").is_err());
        assert!(letters("country", "MN", 2).is_ok());
        assert!(letters("country", "mn", 2).is_err());
        assert!(text("name", "  ", 128, false).is_err());
        assert!(text("name", "a\u{0}b", 128, false).is_err());
        assert_eq!(text("name", " Unitel ", 128, false).unwrap(), "Unitel");
        assert!(check_sort_order(-1).is_err());
        assert!(check_sort_order(MAX_SORT_ORDER + 1).is_err());
    }

    proptest! {
        #[test]
        fn no_face_value_or_price_input_panics(input in ".{0,40}") {
            let _ = check_face_value(&input);
            let _ = check_price(&input);
            let _ = check_code(&input);
            let _ = text("name", &input, 128, false);
        }

        #[test]
        fn an_accepted_face_value_is_positive_and_fits_its_column(whole in 0u64..1_000_000_000_000, cents in 0u32..100) {
            let input = format!("{whole}.{cents:02}");
            if let Ok(face) = check_face_value(&input) {
                prop_assert!(face > Decimal::ZERO);
                prop_assert!(face < Decimal::from(10_000_000_000_000_000i64));
            } else {
                prop_assert!(whole == 0 && cents == 0);
            }
        }
    }
}
