//! Group commit: concurrent writes share one transaction, and so one commit.
//!
//! SQLite has one writer at a time, and each commit writes every page it changed to the WAL and syncs
//! it (`synchronous=FULL`): an order touches about seven pages (the table's and each index's), and 32
//! orders one after the other write and sync them 32 times. Here the writes that arrive while a commit
//! is under way wait in a queue, and one task runs all of them in the next transaction: the pages they
//! share are written once and synced once. On MySQL and PostgreSQL four such tasks run side by side,
//! each on its own connection: a batch costs its statements and one `COMMIT AND CHAIN` (see
//! [`Session`]), instead of a commit per write. What a paid order writes on its way goes through here: the order, its callbacks,
//! its top-up's claim, carrier-call records and outcome, and the buyer's notification.
//!
//! The rules, checked by the model in [`crate::fulfilment::model`] (`group_commit`):
//! - A write is answered only after the commit that holds it returned: an answer is never ahead of
//!   the disk.
//! - If one write's statement fails, or the commit does, the transaction is rolled back (nothing of
//!   any of its writes is kept) and each write runs again on its own, as it would without this
//!   module, and is answered with what that run gives. Nothing is kept twice: the batch left nothing.
//!   A conflict (a deadlock's victim on MySQL, where it rolls back the whole transaction) is such a
//!   failure: the write runs again alone. Alone, a write the database chose as a deadlock's victim
//!   is run again, up to [`CONFLICT_TRIES`] runs: it kept nothing (see [`Work`]).
//! - A write runs to its end once queued, whether or not its caller still waits (a caller that hung
//!   up after a payment was queued must not lose it).
//!
//! A write is a [`Work`]: statements on the connection it is given, no other connection (the pool
//! has one on SQLite, and the batch holds it), and no waiting on anything but the database.

use futures::future::BoxFuture;
use futures::FutureExt;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseExecutor, DatabaseTransaction, DbBackend, DbErr, TransactionTrait,
};
use tokio::sync::{mpsc, oneshot};

/// At most this many writes share a commit: a bound on the transaction, and on how long the first of
/// them waits for the last.
pub const MAX_BATCH: usize = 64;

/// Writers on MySQL and PostgreSQL, each with its batch's transaction on its own connection.
const SERVER_WRITERS: usize = 4;

/// How often a write runs alone while the database keeps choosing it as a deadlock's victim (three
/// replicas claiming the same orders in batches meet such cycles on PostgreSQL).
pub const CONFLICT_TRIES: usize = 3;

/// Writes waiting for the writer; a caller past this waits to queue.
const QUEUE: usize = 1024;

/// One write: statements on `db`. `Err` is a statement the database refused (the batch is then rolled
/// back and the write run again alone); what the write decides itself goes in its `Output`. A write
/// carries on after a refused statement only where SQLite undoes that statement alone and keeps the
/// transaction (a constraint failure: `place_order` drawing another order number); a write of several
/// statements that must hold together opens its own transaction, a savepoint inside the batch. Alone, a
/// write is one statement or its own transaction, so a conflict leaves nothing of it and it is run again.
pub trait Work: Send + Sync + 'static {
    type Output: Send + 'static;
    fn run<'c>(&'c self, db: &'c DatabaseExecutor<'c>) -> BoxFuture<'c, Result<Self::Output, DbErr>>;
}

/// A write given as a function of the connection, for a statement that needs no type of its own. It
/// may run twice (in a batch that is then rolled back, and alone), so each run owns what it needs.
pub struct Statements<F>(pub F);

impl<F, T> Work for Statements<F>
where
    F: for<'c> Fn(&'c DatabaseExecutor<'c>) -> BoxFuture<'c, Result<T, DbErr>> + Send + Sync + 'static,
    T: Send + 'static,
{
    type Output = T;

    fn run<'c>(&'c self, db: &'c DatabaseExecutor<'c>) -> BoxFuture<'c, Result<T, DbErr>> {
        (self.0)(db)
    }
}

/// Where writes go: the writers' queue.
#[derive(Clone)]
pub struct GroupCommit {
    queue: mpsc::Sender<Box<dyn Queued>>,
}

impl GroupCommit {
    /// Starts the writers: one on SQLite, [`SERVER_WRITERS`] elsewhere (they end when the last handle
    /// is dropped).
    pub fn new(db: DatabaseConnection) -> Self {
        let writers = if db.get_database_backend() == DbBackend::Sqlite { 1 } else { SERVER_WRITERS };
        let (queue, waiting) = mpsc::channel(QUEUE);
        let waiting = std::sync::Arc::new(tokio::sync::Mutex::new(waiting));
        for _ in 0..writers {
            tokio::spawn(write(db.clone(), waiting.clone()));
        }
        GroupCommit { queue }
    }

    /// Runs `statements` as a write ([`Statements`]): `Err` is what the database refused when they
    /// ran alone.
    pub async fn write<F, T>(&self, statements: F) -> Result<T, DbErr>
    where
        F: for<'c> Fn(&'c DatabaseExecutor<'c>) -> BoxFuture<'c, Result<T, DbErr>> + Send + Sync + 'static,
        T: Send + 'static,
    {
        self.run(Statements(statements)).await
    }

    /// Runs `work` and answers once what it wrote is committed.
    pub async fn run<W: Work>(&self, work: W) -> Result<W::Output, DbErr> {
        let (answer, answered) = oneshot::channel();
        let queued = Box::new(Pending { work, result: None, kept: false, answer });
        if self.queue.send(queued).await.is_err() {
            return Err(DbErr::Custom("the writer has stopped".into()));
        }
        answered.await.unwrap_or_else(|_| Err(DbErr::Custom("the writer stopped before committing".into())))
    }
}

#[cfg(test)]
impl GroupCommit {
    /// How many writes wait for the writer.
    pub(crate) fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }
}

/// Requests that several tasks take in batches: each takes what waits, up to [`MAX_BATCH`], and
/// answers all of it together. For a statement that carries many rows (`orders::OrderIntake` on MySQL
/// and PostgreSQL). A batch runs to its end whether or not its callers still wait; a batch that
/// panics answers none of them (each caller sees an error), and its task goes on.
pub struct Batched<Q, A> {
    queue: mpsc::Sender<(Q, oneshot::Sender<A>)>,
}

impl<Q, A> Clone for Batched<Q, A> {
    fn clone(&self) -> Self {
        Batched { queue: self.queue.clone() }
    }
}

impl<Q: Send + 'static, A: Send + 'static> Batched<Q, A> {
    /// Starts `workers` tasks that run `run` on each batch: one answer per request, in their order.
    pub fn start<F>(workers: usize, run: F) -> Self
    where
        F: Fn(Vec<Q>) -> BoxFuture<'static, Vec<A>> + Send + Sync + 'static,
    {
        let (queue, waiting) = mpsc::channel::<(Q, oneshot::Sender<A>)>(QUEUE);
        let waiting = std::sync::Arc::new(tokio::sync::Mutex::new(waiting));
        let run = std::sync::Arc::new(run);
        for _ in 0..workers {
            let (waiting, run) = (waiting.clone(), run.clone());
            tokio::spawn(async move {
                let mut batch = Vec::with_capacity(MAX_BATCH);
                // One task at a time waits for the queue; the others run their batches meanwhile.
                while waiting.lock().await.recv_many(&mut batch, MAX_BATCH).await > 0 {
                    metrics::histogram!("group_commit_batch_size").record(batch.len() as f64);
                    let (requests, answers): (Vec<Q>, Vec<oneshot::Sender<A>>) = batch.drain(..).unzip();
                    match std::panic::AssertUnwindSafe(run(requests)).catch_unwind().await {
                        Ok(results) => {
                            for (answer, result) in answers.into_iter().zip(results) {
                                let _ = answer.send(result);
                            }
                        }
                        Err(panic) => {
                            let detail = crate::telemetry::panic_message(panic.as_ref());
                            tracing::error!(requests = answers.len(), panic = detail, "a batch panicked");
                            metrics::counter!("task_panics_total", "task" => "batch").increment(1);
                        }
                    }
                }
            });
        }
        Batched { queue }
    }

    /// The answer to `request`, `None` if its batch panicked or the tasks have stopped.
    pub async fn submit(&self, request: Q) -> Option<A> {
        let (answer, answered) = oneshot::channel();
        self.queue.send((request, answer)).await.ok()?;
        answered.await.ok()
    }
}

/// A queued write, its result kept until it is answered.
trait Queued: Send {
    /// Runs the write on `db`; whether every statement was taken. `kept`: `db` commits each statement
    /// (the result is final), rather than a shared transaction whose commit is still to come.
    fn run<'c>(&'c mut self, db: &'c DatabaseExecutor<'c>, kept: bool) -> BoxFuture<'c, bool>;
    /// The last run ended in a conflict (a deadlock's victim, a serialization failure).
    fn conflicted(&self) -> bool;
    /// The shared transaction committed: the result is final.
    fn keep(&mut self);
    /// Forgets a result that was not committed.
    fn forget(&mut self);
    /// Sends the result.
    fn answer(self: Box<Self>);
}

struct Pending<W: Work> {
    work: W,
    result: Option<Result<W::Output, DbErr>>,
    kept: bool,
    answer: oneshot::Sender<Result<W::Output, DbErr>>,
}

impl<W: Work> Queued for Pending<W> {
    fn run<'c>(&'c mut self, db: &'c DatabaseExecutor<'c>, kept: bool) -> BoxFuture<'c, bool> {
        Box::pin(async move {
            self.result = None;
            let result = self.work.run(db).await;
            let taken = result.is_ok();
            self.result = Some(result);
            self.kept = kept;
            taken
        })
    }

    fn conflicted(&self) -> bool {
        matches!(&self.result, Some(Err(error)) if crate::services::is_conflict(error))
    }

    fn keep(&mut self) {
        self.kept = true;
    }

    fn forget(&mut self) {
        if !self.kept {
            self.result = None;
        }
    }

    fn answer(self: Box<Self>) {
        let result = self.result.unwrap_or_else(|| Err(DbErr::Custom("the write was not committed".into())));
        // A caller that hung up no longer wants the answer; what it wrote is kept all the same.
        let _ = self.answer.send(result);
    }
}

/// The writer: takes what is queued, up to [`MAX_BATCH`], and commits it together.
/// A write that panics fails the answers of its batch's writes not yet committed, not the writer.
async fn write(db: DatabaseConnection, waiting: std::sync::Arc<tokio::sync::Mutex<mpsc::Receiver<Box<dyn Queued>>>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut session = Session::new(&db);
    loop {
        let taken = async { waiting.lock().await.recv_many(&mut batch, MAX_BATCH).await };
        let taken = if session.is_held() {
            match tokio::time::timeout(SESSION_IDLE, taken).await {
                Ok(taken) => taken,
                Err(_) => {
                    session.end().await;
                    continue;
                }
            }
        } else {
            taken.await
        };
        if taken == 0 {
            break;
        }
        metrics::histogram!("group_commit_batch_size").record(batch.len() as f64);
        let committed =
            std::panic::AssertUnwindSafe(commit_together(&db, &mut session, &mut batch)).catch_unwind().await;
        if let Err(panic) = committed {
            let detail = crate::telemetry::panic_message(panic.as_ref());
            tracing::error!(
                writes = batch.len(),
                panic = detail,
                "a write panicked; what its batch had not committed is answered as failed"
            );
            metrics::counter!("task_panics_total", "task" => "group commit").increment(1);
            for queued in &mut batch {
                queued.forget();
            }
            // The batch's transaction went with the panicking write; a session still held (the panic
            // came from a write run alone) is handed back too, so the next batch starts on a new one.
            session.drop_held();
        }
        for queued in batch.drain(..) {
            queued.answer();
        }
    }
    session.end().await;
}

/// How long a writer keeps its [`Session`]'s connection without a batch before it hands it back.
const SESSION_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// A writer's connection on MySQL and PostgreSQL, kept between batches while writes keep coming: a
/// transaction that stays open, each batch ended by `COMMIT AND CHAIN` (or `ROLLBACK AND CHAIN`), which
/// ends it and opens the next in the same round trip. Taking a connection from the pool for each batch
/// cost a `BEGIN` and, as the pool took it back, a ping: two round trips a batch. A session that fails
/// is dropped (its connection goes back through the pool, which closes it if it is broken), and the
/// next batch opens another. After [`SESSION_IDLE`] without writes the connection goes back to the
/// pool, so an idle instance holds none. SQLite has none: its pool's one connection is shared with
/// the reads.
struct Session {
    /// Batches end with `COMMIT AND CHAIN` and the transaction is held (else `COMMIT`, handed back).
    chains: bool,
    held: Option<DatabaseTransaction>,
}

impl Session {
    fn new(db: &DatabaseConnection) -> Self {
        Session { chains: keeps_sessions(db), held: None }
    }

    fn is_held(&self) -> bool {
        self.held.is_some()
    }

    /// The open transaction: the held one, else a new one (held afterwards only where sessions are
    /// kept).
    async fn open(&mut self, db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
        match self.held.take() {
            Some(txn) => Ok(txn),
            None => db.begin().await,
        }
    }

    /// Commits `txn`: ended and kept open for the next batch, or committed and handed back.
    async fn commit(&mut self, txn: DatabaseTransaction) -> Result<(), DbErr> {
        if !self.chains {
            return txn.commit().await;
        }
        txn.execute_unprepared("COMMIT AND CHAIN").await?;
        self.held = Some(txn);
        Ok(())
    }

    /// Rolls `txn` back; a session whose rollback failed is dropped.
    async fn roll_back(&mut self, txn: DatabaseTransaction) {
        if !self.chains {
            // A failed rollback leaves the transaction to be rolled back when the connection is next used.
            let _ = txn.rollback().await;
            return;
        }
        if txn.execute_unprepared("ROLLBACK AND CHAIN").await.is_ok() {
            self.held = Some(txn);
        }
    }

    /// Forgets the held transaction without a statement (the pool rolls it back as it takes it back).
    fn drop_held(&mut self) {
        self.held = None;
    }

    /// Hands the connection back to the pool; its transaction holds nothing.
    async fn end(&mut self) {
        if let Some(txn) = self.held.take() {
            let _ = txn.commit().await;
        }
    }
}

/// Whether the writers keep [`Session`]s on `db`: on MySQL and PostgreSQL when the pool has at least
/// [`SESSION_POOL`] connections, so that the writers holding theirs leave as many to the reads, the
/// writes run alone and everything else (with fewer, a writer could hold the connection that its own
/// write run alone waits for).
fn keeps_sessions(db: &DatabaseConnection) -> bool {
    #[allow(unreachable_patterns)]
    let pool_size = match &db.inner {
        #[cfg(feature = "mysql")]
        sea_orm::DatabaseConnectionType::SqlxMySqlPoolConnection(_) => {
            db.get_mysql_connection_pool().options().get_max_connections()
        }
        #[cfg(feature = "postgres")]
        sea_orm::DatabaseConnectionType::SqlxPostgresPoolConnection(_) => {
            db.get_postgres_connection_pool().options().get_max_connections()
        }
        _ => 0,
    };
    pool_size >= SESSION_POOL
}

/// The smallest pool on which writers keep sessions: as many connections again as there are writers.
const SESSION_POOL: u32 = 2 * SERVER_WRITERS as u32;

/// Runs the batch in one transaction; if any of it fails, rolls it back and runs each write alone.
/// A batch of one runs alone at once (the same statements as without a writer), unless the writer
/// holds a session: its open transaction then costs the write only the `COMMIT AND CHAIN`, where
/// alone it would cost a connection from the pool, and the ping as the pool takes it back.
async fn commit_together(db: &DatabaseConnection, session: &mut Session, batch: &mut [Box<dyn Queued>]) {
    if (batch.len() > 1 || session.is_held()) && together(db, session, batch).await.is_ok() {
        return;
    }
    let alone = DatabaseExecutor::Connection(db);
    for queued in batch.iter_mut() {
        for _ in 0..CONFLICT_TRIES {
            if queued.run(&alone, true).await || !queued.conflicted() {
                break;
            }
        }
    }
}

/// The batch in one transaction, committed only if every write's statements were taken.
async fn together(db: &DatabaseConnection, session: &mut Session, batch: &mut [Box<dyn Queued>]) -> Result<(), DbErr> {
    let txn = session.open(db).await?;
    let mut taken = true;
    {
        let shared = DatabaseExecutor::Transaction(&txn);
        for queued in batch.iter_mut() {
            if !queued.run(&shared, false).await {
                taken = false;
                break;
            }
        }
    }
    if !taken {
        tracing::debug!(writes = batch.len(), "a write in the batch failed: each runs alone");
        session.roll_back(txn).await;
        return Err(DbErr::Custom("a write in the batch failed".into()));
    }
    session.commit(txn).await.inspect_err(|error| {
        tracing::warn!(writes = batch.len(), %error, "a group commit failed: each write runs alone");
    })?;
    for queued in batch.iter_mut() {
        queued.keep();
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use sea_orm::ConnectionTrait;

    /// A write that the database refuses: a product without its required columns.
    pub(crate) struct Refused;

    impl Work for Refused {
        type Output = ();
        fn run<'c>(&'c self, db: &'c DatabaseExecutor<'c>) -> BoxFuture<'c, Result<(), DbErr>> {
            Box::pin(async move {
                db.execute_unprepared("INSERT INTO products (name) VALUES ('refused')").await?;
                Ok(())
            })
        }
    }

    /// A write that holds the writer until it is opened, so that what is queued meanwhile is one batch;
    /// `entered` is told when it starts holding.
    #[derive(Clone, Default)]
    pub(crate) struct Gate {
        pub entered: std::sync::Arc<tokio::sync::Notify>,
        pub open: std::sync::Arc<tokio::sync::Notify>,
    }

    impl Work for Gate {
        type Output = ();
        fn run<'c>(&'c self, _: &'c DatabaseExecutor<'c>) -> BoxFuture<'c, Result<(), DbErr>> {
            Box::pin(async move {
                self.entered.notify_one();
                self.open.notified().await;
                Ok(())
            })
        }
    }

    /// Holds the writer while `queue` runs until `writes` more writes wait, then runs `last` after
    /// them in the same batch: the answers of `queue` and of `last`.
    pub(crate) async fn one_batch<Q: std::future::Future, L: Work>(
        writes: &GroupCommit,
        queue: Q,
        count: usize,
        last: L,
    ) -> (Q::Output, Result<L::Output, DbErr>) {
        let gate = Gate::default();
        let held = writes.run(gate.clone());
        let last = async {
            while writes.queued() < count {
                tokio::task::yield_now().await;
            }
            let answered = writes.run(last);
            futures::pin_mut!(answered);
            assert!(futures::poll!(&mut answered).is_pending());
            gate.open.notify_one();
            answered.await
        };
        let (held, queued, last) = futures::join!(held, queue, last);
        held.unwrap();
        (queued, last)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::Refused;
    use super::*;
    use crate::domain::PhoneNumber;
    use crate::entities::{order, product};
    use crate::services::orders::PlaceOrder;
    use crate::services::ServiceError;
    use migration::{Migrator, MigratorTrait};
    use sea_orm::{ConnectionTrait, EntityTrait, PaginatorTrait, Statement};

    async fn sqlite_file(dir: &tempfile::TempDir) -> DatabaseConnection {
        let file = dir.path().join("writes.db");
        let db = crate::app::connect(&format!("sqlite://{}?mode=rwc", file.display())).await.unwrap();
        Migrator::up(&db, None).await.unwrap();
        db
    }

    fn placing(buyer: usize) -> PlaceOrder {
        PlaceOrder {
            openid: format!("oBuyer{buyer}"),
            product_id: 1,
            phone: PhoneNumber::parse("+8613800000000").unwrap(),
        }
    }

    /// The frames written to the WAL since its last reset; then resets it.
    async fn wal_frames(db: &DatabaseConnection) -> i64 {
        let checkpoint = |mode| async move {
            let sql = format!("PRAGMA wal_checkpoint({mode})");
            let row = db.query_one_raw(Statement::from_string(DbBackend::Sqlite, sql)).await.unwrap().unwrap();
            row.try_get_by_index::<i64>(1).unwrap()
        };
        let frames = checkpoint("PASSIVE").await;
        checkpoint("TRUNCATE").await;
        frames
    }

    async fn orders(db: &DatabaseConnection) -> u64 {
        order::Entity::find().count(db).await.unwrap()
    }

    struct Panics;

    impl Work for Panics {
        type Output = ();
        fn run<'c>(&'c self, _: &'c DatabaseExecutor<'c>) -> BoxFuture<'c, Result<(), DbErr>> {
            Box::pin(async move { panic!("a bug in a write") })
        }
    }

    #[tokio::test]
    async fn concurrent_orders_share_a_commit_and_write_their_pages_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = sqlite_file(&dir).await;
        let writes = GroupCommit::new(db.clone());
        wal_frames(&db).await;
        for buyer in 0..16 {
            writes.run(placing(buyer)).await.unwrap().unwrap();
        }
        let one_by_one = wal_frames(&db).await;

        let placed = futures::future::join_all((0..16).map(|buyer| writes.run(placing(buyer)))).await;
        let together = wal_frames(&db).await;

        let numbers: std::collections::HashSet<_> =
            placed.into_iter().map(|p| p.unwrap().unwrap().order_number).collect();
        assert_eq!(numbers.len(), 16, "each write has its own order");
        assert_eq!(orders(&db).await, 32);
        eprintln!("WAL frames: {together} together, {one_by_one} one by one");
        assert!(together * 4 < one_by_one, "16 orders together wrote {together} WAL frames, one by one {one_by_one}");
    }

    #[tokio::test]
    async fn a_refused_write_is_answered_alone_and_the_rest_is_kept_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = sqlite_file(&dir).await;
        let writes = GroupCommit::new(db.clone());
        let products = product::Entity::find().count(&db).await.unwrap();

        let (first, second, refused) =
            futures::join!(writes.run(placing(1)), writes.run(placing(2)), writes.run(Refused));

        assert!(first.unwrap().is_ok() && second.unwrap().is_ok());
        assert!(refused.is_err(), "the refused write is answered with its error");
        assert_eq!(orders(&db).await, 2, "the two orders ran in the batch, were rolled back, and ran again alone");
        assert_eq!(product::Entity::find().count(&db).await.unwrap(), products);
    }

    #[tokio::test]
    async fn a_write_that_panics_fails_its_batch_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let db = sqlite_file(&dir).await;
        let writes = GroupCommit::new(db.clone());

        let (placed, panicked) = futures::join!(writes.run(placing(1)), writes.run(Panics));

        assert!(placed.is_err() && panicked.is_err(), "nothing of the batch is committed, and both say so");
        assert_eq!(orders(&db).await, 0);
        writes.run(placing(2)).await.unwrap().unwrap();
        assert_eq!(orders(&db).await, 1);
    }

    #[tokio::test]
    async fn a_write_is_committed_when_its_caller_hung_up() {
        let dir = tempfile::tempdir().unwrap();
        let db = sqlite_file(&dir).await;
        let writes = GroupCommit::new(db.clone());

        let mut hung_up = Box::pin(writes.run(placing(1)));
        assert!(futures::poll!(&mut hung_up).is_pending(), "queued, waiting for its commit");
        drop(hung_up);
        writes.run(placing(2)).await.unwrap().unwrap();

        assert_eq!(orders(&db).await, 2);
    }

    #[tokio::test]
    async fn a_product_that_is_not_on_sale_is_an_answer_not_a_failed_batch() {
        let dir = tempfile::tempdir().unwrap();
        let db = sqlite_file(&dir).await;
        let writes = GroupCommit::new(db.clone());
        let missing = PlaceOrder { product_id: 999_999, ..placing(2) };

        let (placed, not_found) = futures::join!(writes.run(placing(1)), writes.run(missing));

        assert!(placed.unwrap().is_ok());
        assert!(matches!(not_found, Ok(Err(ServiceError::ProductNotFound))));
        assert_eq!(orders(&db).await, 1);
    }

    /// The database's answer to a deadlock's victim (PostgreSQL's `40P01`).
    #[derive(Debug)]
    struct Deadlock;

    impl std::fmt::Display for Deadlock {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("deadlock detected")
        }
    }

    impl std::error::Error for Deadlock {}

    impl sea_orm::sqlx::error::DatabaseError for Deadlock {
        fn message(&self) -> &str {
            "deadlock detected"
        }
        fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
            Some("40P01".into())
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sea_orm::sqlx::error::ErrorKind {
            sea_orm::sqlx::error::ErrorKind::Other
        }
    }

    /// A write the database picks as a deadlock's victim its first `losses` runs, counting its runs.
    struct Victim {
        losses: usize,
        runs: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Work for Victim {
        type Output = ();
        fn run<'c>(&'c self, _: &'c DatabaseExecutor<'c>) -> BoxFuture<'c, Result<(), DbErr>> {
            Box::pin(async move {
                let run = self.runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if run < self.losses {
                    let error = sea_orm::sqlx::Error::Database(Box::new(Deadlock));
                    return Err(DbErr::Exec(sea_orm::RuntimeErr::SqlxError(std::sync::Arc::new(error))));
                }
                Ok(())
            })
        }
    }

    /// Alone, a deadlock's victim is run again (it kept nothing), up to `CONFLICT_TRIES` runs; any
    /// other failure is answered at once.
    #[tokio::test]
    async fn a_deadlocks_victim_is_run_again_alone() {
        let dir = tempfile::tempdir().unwrap();
        let writes = GroupCommit::new(sqlite_file(&dir).await);
        let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count =
            |runs: &std::sync::Arc<std::sync::atomic::AtomicUsize>| runs.swap(0, std::sync::atomic::Ordering::SeqCst);

        writes.run(Victim { losses: 2, runs: runs.clone() }).await.unwrap();
        assert_eq!(count(&runs), 3, "two losses, then taken");

        let lost = writes.run(Victim { losses: usize::MAX, runs: runs.clone() }).await;
        assert!(lost.is_err_and(|e| crate::services::is_conflict(&e)));
        assert_eq!(count(&runs), CONFLICT_TRIES);

        assert!(writes.run(Refused).await.is_err());
    }

    /// The status of an order, read in the batch it runs in.
    struct StatusOf(String);

    impl Work for StatusOf {
        type Output = Option<crate::domain::OrderStatus>;
        fn run<'c>(&'c self, db: &'c DatabaseExecutor<'c>) -> BoxFuture<'c, Result<Self::Output, DbErr>> {
            Box::pin(async move {
                let order = crate::services::orders::find_by_number(db, &self.0).await?;
                Ok(order.map(|o| o.status))
            })
        }
    }

    /// A top-up's writes (its claim, the carrier call's record, its outcome) go through the writer, so
    /// they share commits with the callbacks and orders written meanwhile: with the writer held, the
    /// attempt waits with its claim queued, and the claim then runs in the batch it waited for.
    #[tokio::test]
    async fn a_top_ups_writes_share_the_writers_commits() {
        use crate::domain::OrderStatus;
        let dir = tempfile::tempdir().unwrap();
        let db = sqlite_file(&dir).await;
        let writes = GroupCommit::new(db.clone());
        // Any ending but 00 to 03 is delivered at once by the sandbox carrier.
        let delivered = PlaceOrder { phone: PhoneNumber::parse("+8613800000012").unwrap(), ..placing(1) };
        let number = writes.run(delivered).await.unwrap().unwrap().order_number;
        crate::services::testing::mark_paid(&db, &number).await;
        let fulfiller = crate::services::testing::sandbox_fulfiller(&db, &writes);

        // The writer is held; the attempt reads the order and queues its claim behind it.
        let gate = super::testing::Gate::default();
        let held = tokio::spawn({
            let (writes, gate) = (writes.clone(), gate.clone());
            async move { writes.run(gate).await }
        });
        gate.entered.notified().await;
        let attempt = tokio::spawn({
            let (fulfiller, number) = (fulfiller.clone(), number.clone());
            async move { fulfiller.fulfil_order(&number).await }
        });
        let claim_queued = async {
            while writes.queued() < 1 {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), claim_queued)
            .await
            .expect("the attempt's claim never waited for the writer");
        let stored = crate::services::orders::find_by_number(&db, &number).await.unwrap().unwrap();
        assert_eq!(stored.status, OrderStatus::Paid, "the claim is not written before the writer takes it");
        let probe = tokio::spawn({
            let (writes, number) = (writes.clone(), number.clone());
            async move { writes.run(StatusOf(number)).await }
        });
        while writes.queued() < 2 {
            tokio::task::yield_now().await;
        }
        gate.open.notify_one();
        held.await.unwrap().unwrap();
        let (outcome, status_in_batch) = (attempt.await.unwrap(), probe.await.unwrap());

        assert_eq!(outcome.unwrap(), crate::fulfilment::FulfilOutcome::Delivered);
        assert_eq!(status_in_batch.unwrap(), Some(OrderStatus::Recharging), "the claim ran first in the batch");
        let stored = crate::services::orders::find_by_number(&db, &number).await.unwrap().unwrap();
        assert_eq!(stored.status, OrderStatus::Success);
    }
}
