use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ActiveEnum, ActiveValue::NotSet, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait,
    FromQueryResult, IntoActiveModel, PaginatorTrait, QueryFilter, QueryOrder, QueryTrait, SqlErr, Statement,
};

use futures::future::BoxFuture;
use rust_decimal::Decimal;
use sea_orm::DatabaseExecutor;

use super::ServiceError;
use crate::domain::{now_utc, Money, OrderNumber, OrderStatus, Paging, PhoneNumber};
use crate::entities::{notification, order, product};
use crate::group_commit::{Batched, GroupCommit, Work};

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
///
/// One statement: the order is inserted from the product's row (`INSERT … SELECT … WHERE active`), so
/// the price and the snapshot of the product are read and written in the same step, and the row comes
/// back with `RETURNING`. A MySQL server without `RETURNING`, or one that would lock the table for the
/// statement, reads the product first (see [`MYSQL_PLAN`]). Nothing is read or written when the
/// product is missing or not on sale.
pub async fn place_order(
    db: &impl ConnectionTrait,
    openid: &str,
    product_id: i32,
    phone: &PhoneNumber,
) -> Result<order::Model, ServiceError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let now = now_utc();
        let draft = Draft {
            order_number: OrderNumber::generate(now.and_utc().timestamp_millis()).to_string(),
            openid,
            phone: phone.to_string(),
            now,
        };
        match insert_order(db, product_id, &draft).await {
            Ok(Some(order)) => return Ok(order),
            Ok(None) => return Err(not_orderable(db, product_id).await),
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

/// [`place_order`] as a write that may share its commit with others (see [`crate::group_commit`]).
pub struct PlaceOrder {
    pub openid: String,
    pub product_id: i32,
    pub phone: PhoneNumber,
}

impl Work for PlaceOrder {
    type Output = Result<order::Model, ServiceError>;

    fn run<'c>(&'c self, db: &'c DatabaseExecutor<'c>) -> BoxFuture<'c, Result<Self::Output, DbErr>> {
        Box::pin(async move {
            match place_order(db, &self.openid, self.product_id, &self.phone).await {
                Err(ServiceError::Database(error)) => Err(error),
                placed => Ok(placed),
            }
        })
    }
}

/// Where orders are placed. On SQLite through the group commit; on MySQL and PostgreSQL the orders
/// that wait together are one multi-row `INSERT … RETURNING` after one read of their products: two
/// round trips and one commit for all of them, where each alone costs one or two round trips and a
/// commit. A lone order, a server without `RETURNING` (MySQL), or a batch the database refuses (an
/// order number drawn twice) places each order alone, as [`place_order`] does.
#[derive(Clone)]
pub struct OrderIntake {
    writes: GroupCommit,
    batched: Option<Batched<PlaceOrder, Result<order::Model, ServiceError>>>,
}

/// Batches of orders in flight at once on MySQL and PostgreSQL.
const INSERTERS: usize = 4;

impl OrderIntake {
    pub fn new(db: &DatabaseConnection, writes: GroupCommit) -> Self {
        let batched = (db.get_database_backend() != DbBackend::Sqlite).then(|| {
            let db = db.clone();
            Batched::start(INSERTERS, move |requests: Vec<PlaceOrder>| {
                let db = db.clone();
                Box::pin(async move { place_orders(&db, requests).await })
            })
        });
        OrderIntake { writes, batched }
    }

    pub async fn place(&self, placing: PlaceOrder) -> Result<order::Model, ServiceError> {
        match &self.batched {
            Some(batched) => batched
                .submit(placing)
                .await
                .unwrap_or_else(|| Err(DbErr::Custom("the order's batch did not finish".into()).into())),
            None => self.writes.run(placing).await?,
        }
    }
}

/// Places `requests` together, answering each in its order.
async fn place_orders(db: &DatabaseConnection, requests: Vec<PlaceOrder>) -> Vec<Result<order::Model, ServiceError>> {
    if requests.len() > 1 && !NO_MULTI_ROW_RETURNING.load(Ordering::Relaxed) {
        match insert_together(db, &requests).await {
            Ok(placed) => return placed,
            Err(error) => {
                if is_mysql_parse_error(&error) {
                    tracing::info!("the MySQL server has no INSERT … RETURNING: orders are placed one by one");
                    NO_MULTI_ROW_RETURNING.store(true, Ordering::Relaxed);
                } else {
                    tracing::debug!(orders = requests.len(), %error, "a batch of orders was refused: each is placed alone");
                }
            }
        }
    }
    let alone = requests.iter().map(|r| place_order(db, &r.openid, r.product_id, &r.phone));
    futures::future::join_all(alone).await
}

/// This server refused a multi-row `INSERT … RETURNING` (MySQL), learned at its first batch.
static NO_MULTI_ROW_RETURNING: AtomicBool = AtomicBool::new(false);

/// The orders in one read of their products and one `INSERT` of every order on sale; the answer to a
/// product missing or not on sale comes from that read.
async fn insert_together(
    db: &DatabaseConnection,
    requests: &[PlaceOrder],
) -> Result<Vec<Result<order::Model, ServiceError>>, DbErr> {
    let mut ids: Vec<i32> = requests.iter().map(|r| r.product_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let products: std::collections::HashMap<i32, product::Model> = product::Entity::find()
        .filter(product::Column::Id.is_in(ids))
        .all(db)
        .await?
        .into_iter()
        .map(|p| (p.id, p))
        .collect();
    let now = now_utc();
    let mut numbers = std::collections::HashSet::with_capacity(requests.len());
    let mut placed: Vec<Result<order::Model, ServiceError>> = Vec::with_capacity(requests.len());
    let mut rows = Vec::with_capacity(requests.len());
    for request in requests {
        let product = match products.get(&request.product_id) {
            None => Err(ServiceError::ProductNotFound),
            Some(product) if !product.active => Err(ServiceError::ProductUnavailable),
            Some(product) => Ok(product),
        };
        let product = match product {
            Ok(product) => product,
            Err(refused) => {
                placed.push(Err(refused));
                continue;
            }
        };
        // Distinct within the batch; a collision with an earlier order fails the INSERT (placed alone).
        let order_number = loop {
            let number = OrderNumber::generate(now.and_utc().timestamp_millis()).to_string();
            if numbers.insert(number.clone()) {
                break number;
            }
        };
        let draft = Draft { order_number, openid: &request.openid, phone: request.phone.to_string(), now };
        let order = new_order(product.clone(), &draft);
        placed.push(Ok(order.clone()));
        let mut row = order.into_active_model();
        row.id = NotSet;
        rows.push(row);
    }
    if rows.is_empty() {
        return Ok(placed);
    }
    let mut insert = order::Entity::insert_many(rows).into_query();
    insert.returning_all();
    let backend = db.get_database_backend();
    let mut statement = backend.build(&insert);
    if backend == DbBackend::MySql {
        statement.sql.push_str(" RETURNING *");
    }
    let mut stored: std::collections::HashMap<String, order::Model> = std::collections::HashMap::new();
    for row in db.query_all_raw(statement).await? {
        let order = order::Model::from_query_result(&row, "")?;
        stored.insert(order.order_number.clone(), order);
    }
    // The INSERT is kept from here on: an order missing from its answer is an error for that order
    // alone, never a reason to place the batch again.
    for answer in &mut placed {
        if let Ok(order) = answer {
            *answer = stored.remove(&order.order_number).ok_or_else(|| {
                DbErr::Custom(format!("order {} did not come back from its INSERT", order.order_number)).into()
            });
        }
    }
    Ok(placed)
}

/// What an order takes from the request rather than from the product.
struct Draft<'a> {
    order_number: String,
    openid: &'a str,
    phone: String,
    now: chrono::NaiveDateTime,
}

/// How this MySQL-protocol server takes an order, found at its first order: one `INSERT … SELECT …
/// RETURNING`, or the product read and then a plain `INSERT`. The one statement needs `RETURNING`
/// (MariaDB 10.5 and later have it, MySQL does not; a server that refuses the syntax writes nothing)
/// and `innodb_autoinc_lock_mode = 2`: below that (MariaDB's default is 1), InnoDB holds the table's
/// AUTO-INC lock until an `INSERT … SELECT` ends, so concurrent orders would wait for each other, while
/// a single-row `INSERT … VALUES` takes it only for the moment it draws the id.
static MYSQL_PLAN: AtomicU8 = AtomicU8::new(UNKNOWN);
const UNKNOWN: u8 = 0;
const ONE_STATEMENT: u8 = 1;
const READ_FIRST: u8 = 2;

/// The new order, or `None` when the product is missing or not on sale.
async fn insert_order(
    db: &impl ConnectionTrait,
    product_id: i32,
    draft: &Draft<'_>,
) -> Result<Option<order::Model>, DbErr> {
    if db.get_database_backend() != DbBackend::MySql {
        return insert_returning(db, product_id, draft).await;
    }
    let mut plan = MYSQL_PLAN.load(Ordering::Relaxed);
    if plan == UNKNOWN && locks_the_table(autoinc_lock_mode(db).await) {
        tracing::info!("the MySQL server locks the table for INSERT … SELECT: orders read their product first");
        MYSQL_PLAN.store(READ_FIRST, Ordering::Relaxed);
        plan = READ_FIRST;
    }
    match plan {
        ONE_STATEMENT => insert_returning(db, product_id, draft).await,
        READ_FIRST => insert_after_reading(db, product_id, draft).await,
        _ => match insert_returning(db, product_id, draft).await {
            Err(e) if is_mysql_parse_error(&e) => {
                tracing::info!("the MySQL server has no INSERT … RETURNING: orders read their product first");
                MYSQL_PLAN.store(READ_FIRST, Ordering::Relaxed);
                insert_after_reading(db, product_id, draft).await
            }
            placed => {
                if placed.is_ok() {
                    MYSQL_PLAN.store(ONE_STATEMENT, Ordering::Relaxed);
                }
                placed
            }
        },
    }
}

/// The server's `innodb_autoinc_lock_mode`, `None` where it has none or the read failed.
async fn autoinc_lock_mode(db: &impl ConnectionTrait) -> Option<i64> {
    let sql = "SELECT CAST(@@innodb_autoinc_lock_mode AS SIGNED) AS mode";
    let row = db.query_one_raw(Statement::from_string(DbBackend::MySql, sql)).await.ok()??;
    row.try_get::<i64>("", "mode").ok()
}

/// Whether an `INSERT … SELECT` holds the table's AUTO-INC lock until it ends: under every mode but
/// "interleaved" (2), and where the mode is unknown.
fn locks_the_table(mode: Option<i64>) -> bool {
    mode != Some(2)
}

/// MySQL's answer to a statement it cannot parse (`ER_PARSE_ERROR`).
#[cfg(feature = "mysql")]
fn is_mysql_parse_error(error: &DbErr) -> bool {
    use sea_orm::sqlx::mysql::MySqlDatabaseError;
    const ER_PARSE_ERROR: u16 = 1064;
    super::database_error(error)
        .and_then(|e| e.try_downcast_ref::<MySqlDatabaseError>())
        .is_some_and(|e| e.number() == ER_PARSE_ERROR)
}

#[cfg(not(feature = "mysql"))]
fn is_mysql_parse_error(_: &DbErr) -> bool {
    false
}

async fn insert_returning(
    db: &impl ConnectionTrait,
    product_id: i32,
    draft: &Draft<'_>,
) -> Result<Option<order::Model>, DbErr> {
    use order::Column as O;
    use product::Column as P;
    let from_product = |column: P| Expr::col((product::Entity, column));
    let columns = [
        (O::OrderNumber, Expr::val(draft.order_number.as_str())),
        (O::Openid, Expr::val(draft.openid)),
        (O::ProductId, from_product(P::Id)),
        (O::ProductName, from_product(P::Name)),
        (O::PhoneNumber, Expr::val(draft.phone.as_str())),
        (O::Amount, from_product(P::Price)),
        (O::Status, Expr::val(OrderStatus::Unpaid.to_value())),
        (O::CreatedAt, Expr::val(draft.now)),
        (O::UpdatedAt, Expr::val(draft.now)),
        (O::ProductCode, from_product(P::Code)),
        (O::FaceValue, from_product(P::FaceValue)),
        (O::FaceCurrency, from_product(P::FaceCurrency)),
        (O::FulfilAttempts, Expr::val(0)),
        (O::Submitted, Expr::val(false)),
        (O::RefundRequested, Expr::val(Decimal::ZERO)),
        (O::RefundSeq, Expr::val(0)),
        (O::BudgetFrom, Expr::val(0)),
        (O::Country, from_product(P::Country)),
        (O::CarrierReference, from_product(P::CarrierReference)),
    ];
    let mut product_row = Query::select();
    product_row
        .from(product::Entity)
        .and_where(from_product(P::Id).eq(product_id))
        .and_where(from_product(P::Active).eq(true));
    let mut insert = Query::insert();
    insert.into_table(order::Entity).columns(columns.iter().map(|(column, _)| *column));
    for (_, value) in columns {
        product_row.expr(value);
    }
    insert.select_from(product_row).map_err(|e| DbErr::Custom(e.to_string()))?.returning_all();
    let backend = db.get_database_backend();
    let mut statement = backend.build(&insert);
    if backend == DbBackend::MySql {
        // sea-query leaves RETURNING out of MySQL statements; MariaDB takes it after the SELECT.
        statement.sql.push_str(" RETURNING *");
    }
    // Every row is read, so the statement runs to its end before the answer: stopped after its first
    // row, SQLite kept the statement open, and with it a snapshot that let the WAL grow without bound.
    match db.query_all_raw(statement).await?.first() {
        Some(row) => Ok(Some(order::Model::from_query_result(row, "")?)),
        None => Ok(None),
    }
}

/// For MySQL: the product read, then one INSERT whose id comes with the answer (last insert id).
async fn insert_after_reading(
    db: &impl ConnectionTrait,
    product_id: i32,
    draft: &Draft<'_>,
) -> Result<Option<order::Model>, DbErr> {
    let Some(product) = product::Entity::find_by_id(product_id).one(db).await?.filter(|p| p.active) else {
        return Ok(None);
    };
    let order = new_order(product, draft);
    let mut row = order.clone().into_active_model();
    row.id = NotSet;
    let inserted = order::Entity::insert(row).exec(db).await?;
    Ok(Some(order::Model { id: inserted.last_insert_id, ..order }))
}

/// The order `draft` makes of `product`, before the database gives it an id.
fn new_order(product: product::Model, draft: &Draft<'_>) -> order::Model {
    order::Model {
        id: 0,
        order_number: draft.order_number.clone(),
        openid: draft.openid.to_string(),
        product_id: product.id,
        product_name: product.name,
        phone_number: draft.phone.clone(),
        amount: Money::from_stored(product.price).yuan(),
        status: OrderStatus::Unpaid,
        prepay_id: None,
        prepay_params: None,
        prepay_at: None,
        transaction_id: None,
        paid_at: None,
        anomaly: None,
        created_at: draft.now,
        updated_at: draft.now,
        product_code: product.code,
        face_value: product.face_value,
        face_currency: product.face_currency,
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
        country: Some(product.country),
        carrier_reference: Some(product.carrier_reference),
    }
}

/// Why no order was placed for `product_id`: read only after the insert found no product on sale.
async fn not_orderable(db: &impl ConnectionTrait, product_id: i32) -> ServiceError {
    match product::Entity::find_by_id(product_id).one(db).await {
        Ok(Some(_)) => ServiceError::ProductUnavailable,
        Ok(None) => ServiceError::ProductNotFound,
        Err(e) => e.into(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use migration::{Migrator, MigratorTrait};
    use sea_orm::{ActiveModelTrait, DatabaseConnection, Set};
    use std::sync::{Arc, Mutex};

    /// A migrated in-memory database that logs the first word of every statement it runs.
    async fn logged_database() -> (DatabaseConnection, Arc<Mutex<Vec<String>>>) {
        crate::services::testing::logged_database(|sql| sql.split_whitespace().next().map(str::to_string)).await
    }

    fn phone() -> PhoneNumber {
        PhoneNumber::parse("+8613800000000").unwrap()
    }

    #[tokio::test]
    async fn an_order_is_one_statement_that_copies_the_product() {
        let (db, statements) = logged_database().await;
        let product = product::Entity::find_by_id(1).one(&db).await.unwrap().unwrap();
        statements.lock().unwrap().clear();

        let order = place_order(&db, "oBuyer", 1, &phone()).await.unwrap();

        assert_eq!(*statements.lock().unwrap(), ["INSERT"]);
        let stored = order::Entity::find_by_id(order.id).one(&db).await.unwrap().unwrap();
        assert_eq!(order, stored, "the answer is the stored row");
        assert_eq!(Money::from_stored(order.amount), Money::from_stored(product.price));
        assert_eq!(
            (order.product_id, order.product_name.as_str(), order.product_code.as_str()),
            (product.id, product.name.as_str(), product.code.as_str())
        );
        assert_eq!(
            (order.face_value, order.face_currency.as_str()),
            (product.face_value, product.face_currency.as_str())
        );
        assert_eq!(order.country.as_deref(), Some(product.country.as_str()));
        assert_eq!(order.carrier_reference.as_deref(), Some(product.carrier_reference.as_str()));
        assert_eq!((order.openid.as_str(), order.phone_number.as_str()), ("oBuyer", "+8613800000000"));
        assert_eq!(order.status, OrderStatus::Unpaid);
        assert!(OrderNumber::parse(&order.order_number).is_some());
    }

    /// MySQL's way (the product read first) stores the same row as the one statement.
    #[tokio::test]
    async fn reading_the_product_first_stores_the_same_order() {
        let (db, _) = logged_database().await;
        let one = place_order(&db, "oBuyer", 1, &phone()).await.unwrap();
        let now = now_utc();
        let draft =
            Draft { order_number: "ORD1763900000000Ab3x".into(), openid: "oBuyer", phone: phone().to_string(), now };

        let other = insert_after_reading(&db, 1, &draft).await.unwrap().unwrap();

        let stored = order::Entity::find_by_id(other.id).one(&db).await.unwrap().unwrap();
        assert_eq!(other, stored);
        let same = order::Model {
            id: one.id,
            order_number: one.order_number.clone(),
            created_at: one.created_at,
            updated_at: one.updated_at,
            ..stored
        };
        assert_eq!(same, one);
    }

    #[test]
    fn only_interleaved_autoinc_locking_takes_an_order_in_one_statement_on_mysql() {
        assert!(!locks_the_table(Some(2)));
        for table_locking in [Some(0), Some(1), None] {
            assert!(locks_the_table(table_locking), "{table_locking:?}");
        }
    }

    #[tokio::test]
    async fn a_product_not_on_sale_or_missing_places_nothing() {
        let (db, statements) = logged_database().await;
        let mut product: product::ActiveModel = product::Entity::find_by_id(1).one(&db).await.unwrap().unwrap().into();
        product.active = Set(false);
        product.update(&db).await.unwrap();
        statements.lock().unwrap().clear();

        let unavailable = place_order(&db, "oBuyer", 1, &phone()).await;
        assert!(matches!(unavailable, Err(ServiceError::ProductUnavailable)), "{unavailable:?}");
        let missing = place_order(&db, "oBuyer", 4242, &phone()).await;
        assert!(matches!(missing, Err(ServiceError::ProductNotFound)), "{missing:?}");

        assert_eq!(*statements.lock().unwrap(), ["INSERT", "SELECT", "INSERT", "SELECT"]);
        assert_eq!(order::Entity::find().count(&db).await.unwrap(), 0);
    }

    /// Each order's statement ends before its answer, so the WAL is checkpointed and reused as orders
    /// come in (an open statement keeps a snapshot that stops the WAL from being reused).
    #[tokio::test]
    async fn orders_keep_the_sqlite_wal_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("orders.db");
        let db = crate::app::connect(&format!("sqlite://{}?mode=rwc", file.display())).await.unwrap();
        Migrator::up(&db, None).await.unwrap();
        let wal = || std::fs::metadata(dir.path().join("orders.db-wal")).map(|m| m.len()).unwrap_or(0);

        let mut largest = 0;
        for _ in 0..600 {
            place_order(&db, "oBuyer", 1, &phone()).await.unwrap();
            largest = std::cmp::Ord::max(largest, wal());
        }

        // The autocheckpoint runs every 1,000 pages (4 MiB); 600 orders write about 20 MiB of frames.
        assert!(largest < 6 * 1024 * 1024, "the WAL grew to {largest} bytes");
        assert_eq!(order::Entity::find().count(&db).await.unwrap(), 600);
    }
}
