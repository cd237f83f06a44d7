//! The group commit on the test's database (SQLite, or the server in `TEST_DATABASE_URL`): writes queued
//! together share a transaction, and a refused one sends the others to run alone, each kept once.

use futures::future::BoxFuture;
use sea_orm::{ConnectionTrait, DatabaseExecutor, DbErr, Statement};
use wxtopup::group_commit::{GroupCommit, Work};

use crate::helpers::spawn_app;

/// One row in a table of the test's own.
struct Insert(i64);

impl Work for Insert {
    type Output = ();
    fn run<'c>(&'c self, db: &'c DatabaseExecutor<'c>) -> BoxFuture<'c, Result<(), DbErr>> {
        Box::pin(async move {
            let sql = format!("INSERT INTO gc_rows (n) VALUES ({})", self.0);
            db.execute_unprepared(&sql).await?;
            Ok(())
        })
    }
}

/// A statement every database refuses (the column does not exist).
struct Refused;

impl Work for Refused {
    type Output = ();
    fn run<'c>(&'c self, db: &'c DatabaseExecutor<'c>) -> BoxFuture<'c, Result<(), DbErr>> {
        Box::pin(async move {
            db.execute_unprepared("INSERT INTO gc_rows (missing) VALUES (1)").await?;
            Ok(())
        })
    }
}

async fn rows(db: &sea_orm::DatabaseConnection) -> Vec<i64> {
    let sql = Statement::from_string(db.get_database_backend(), "SELECT n FROM gc_rows ORDER BY n");
    db.query_all_raw(sql).await.unwrap().iter().map(|row| row.try_get_by_index::<i64>(0).unwrap()).collect()
}

/// The three writes are queued before any writer runs (the test's runtime has one thread), so the
/// first writer takes them as one batch: the two inserts run in its transaction before the refused
/// statement, are rolled back with it, and run again alone.
#[tokio::test]
async fn a_refused_write_sends_its_batch_to_run_alone_and_each_write_is_kept_once() {
    let app = spawn_app().await;
    app.db.execute_unprepared("CREATE TABLE gc_rows (n BIGINT NOT NULL)").await.unwrap();
    let writes = GroupCommit::new(app.db.clone());

    let (first, second, refused) = futures::join!(writes.run(Insert(1)), writes.run(Insert(2)), writes.run(Refused));

    assert!(first.is_ok() && second.is_ok(), "{first:?} {second:?}");
    assert!(refused.is_err());
    assert_eq!(rows(&app.db).await, [1, 2], "each insert kept once");

    let together = futures::future::join_all((3..13).map(|n| writes.run(Insert(n)))).await;
    assert!(together.iter().all(Result::is_ok));
    assert_eq!(rows(&app.db).await, (1..13).collect::<Vec<_>>());
}

/// One row, and the server's id of the connection it was written on with whether the row's
/// transaction was still open after it (a batch's) rather than committed with the statement (alone).
/// SQLite has neither: `(0, false)`.
struct Traced(i64);

impl Work for Traced {
    type Output = (i64, bool);
    fn run<'c>(&'c self, db: &'c DatabaseExecutor<'c>) -> BoxFuture<'c, Result<(i64, bool), DbErr>> {
        Box::pin(async move {
            db.execute_unprepared(&format!("INSERT INTO gc_rows (n) VALUES ({})", self.0)).await?;
            let (id, open) = match db.get_database_backend() {
                sea_orm::DbBackend::MySql => {
                    ("SELECT CAST(CONNECTION_ID() AS SIGNED)", "SELECT CAST(@@in_transaction AS SIGNED)")
                }
                // Alone, the INSERT committed and the read runs in a new transaction without an id.
                sea_orm::DbBackend::Postgres => (
                    "SELECT CAST(pg_backend_pid() AS BIGINT)",
                    "SELECT CAST(CAST(pg_current_xact_id_if_assigned() IS NOT NULL AS INT) AS BIGINT)",
                ),
                _ => ("SELECT 0", "SELECT 0"),
            };
            Ok((number(db, id).await?, number(db, open).await? == 1))
        })
    }
}

/// The number `sql` reads, on `db`.
async fn number(db: &DatabaseExecutor<'_>, sql: &str) -> Result<i64, DbErr> {
    let row = db.query_one_raw(Statement::from_string(db.get_database_backend(), sql)).await?;
    row.ok_or_else(|| DbErr::Custom(format!("no row from {sql}")))?.try_get_by_index::<i64>(0)
}

/// Two writes queued together (one batch): the connection each was written on, and whether both ran in
/// one open transaction (see [`Traced`]).
async fn pair(writes: &GroupCommit, first: i64) -> ([i64; 2], bool) {
    let (a, b) = futures::join!(writes.run(Traced(first)), writes.run(Traced(first + 1)));
    let ((a, a_open), (b, b_open)) = (a.unwrap(), b.unwrap());
    ([a, b], a == b && a_open && b_open)
}

/// On MySQL and PostgreSQL each writer keeps its connection between batches, in a transaction that
/// each batch ends with `COMMIT AND CHAIN`; a connection that dies under it costs the batch that finds
/// it dead nothing but running alone, and the next batch opens another session.
#[tokio::test]
async fn writers_keep_their_connections_between_batches_and_replace_one_that_died() {
    let app = spawn_app().await;
    app.db.execute_unprepared("CREATE TABLE gc_rows (n BIGINT NOT NULL)").await.unwrap();
    let writes = GroupCommit::new(app.db.clone());

    let mut sessions = std::collections::BTreeSet::new();
    for first in (0..16).step_by(2) {
        let ([a, b], _) = pair(&writes, first).await;
        assert_eq!(a, b, "one batch, one transaction");
        sessions.insert(a);
    }
    assert_eq!(rows(&app.db).await, (0..16).collect::<Vec<_>>(), "each batch committed");
    let backend = app.db.get_database_backend();
    if backend == sea_orm::DbBackend::Sqlite {
        return;
    }
    assert!(sessions.len() <= 4, "at most one connection per writer: {sessions:?}");
    // A write queued alone runs in a held session too, not on a connection of its own from the pool.
    let (alone, open) = writes.run(Traced(16)).await.unwrap();
    assert!(sessions.contains(&alone), "{alone} is not a writer's connection {sessions:?}");
    assert!(open, "in the session's transaction");
    let mut expected: Vec<i64> = (0..17).collect();
    if backend == sea_orm::DbBackend::MySql {
        // No `BEGIN` on a writer's connection after its first: each commit opened the next transaction.
        for n in 17..21 {
            let (begins, written) = futures::join!(writes.run(Begins), writes.run(Traced(n)));
            assert!(sessions.contains(&written.unwrap().0));
            assert_eq!(begins.unwrap(), 1, "one BEGIN on a writer's connection for all its batches");
            expected.push(n);
        }
    }

    for id in &sessions {
        let kill = match backend {
            sea_orm::DbBackend::MySql => format!("KILL {id}"),
            _ => format!("SELECT pg_terminate_backend({id})"),
        };
        app.db.execute_unprepared(&kill).await.unwrap();
    }
    // Each writer finds its session dead once (that batch runs alone), then opens a new one.
    let mut together = None;
    for first in (100..).step_by(2).take(sessions.len() + 1) {
        // Alone, the two may also land on one pool connection, one after the other: not a session.
        let ([a, b], in_one_transaction) = pair(&writes, first).await;
        assert!(!sessions.contains(&a) && !sessions.contains(&b), "{a} {b} on a killed connection {sessions:?}");
        expected.extend([first, first + 1]);
        if in_one_transaction {
            together = Some(a);
            break;
        }
    }
    let Some(session) = together else { panic!("no batch ran together again after the kill") };
    if backend == sea_orm::DbBackend::Postgres {
        // Held between batches, handed back to the pool after a second without writes.
        assert_eq!(backend_state(&app.db, session).await.as_deref(), Some("idle in transaction"));
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        assert_eq!(backend_state(&app.db, session).await.as_deref(), Some("idle"), "back in the pool");
    }
    assert_eq!(rows(&app.db).await, expected, "each write kept once");
}

/// `BEGIN`s on the connection, as MariaDB counts them.
struct Begins;

impl Work for Begins {
    type Output = i64;
    fn run<'c>(&'c self, db: &'c DatabaseExecutor<'c>) -> BoxFuture<'c, Result<i64, DbErr>> {
        Box::pin(async move {
            let sql = "SELECT CAST(VARIABLE_VALUE AS SIGNED) FROM information_schema.SESSION_STATUS \
                       WHERE VARIABLE_NAME = 'COM_BEGIN'";
            number(db, sql).await
        })
    }
}

/// On a pool too small to leave the writers' sessions as many connections again, the writers keep
/// none: each batch hands its connection back to the pool.
#[tokio::test]
async fn on_a_small_pool_writers_keep_no_session() {
    let app = spawn_app().await;
    app.db.execute_unprepared("CREATE TABLE gc_rows (n BIGINT NOT NULL)").await.unwrap();
    let small = wxtopup::app::connect_pool(&app.database_url, 4).await.unwrap();
    let writes = GroupCommit::new(small);

    let ([a, b], _) = pair(&writes, 1).await;
    assert_eq!(a, b, "one batch, one transaction");
    assert_eq!(rows(&app.db).await, [1, 2]);
    if app.db.get_database_backend() == sea_orm::DbBackend::Postgres {
        let state = backend_state(&app.db, a).await;
        assert!(state.is_some(), "the connection is open");
        assert_ne!(state.as_deref(), Some("idle in transaction"), "handed back, not held in a transaction");
    }
}

/// PostgreSQL's state of the connection served by process `pid` (`idle`, `idle in transaction`, …).
async fn backend_state(db: &sea_orm::DatabaseConnection, pid: i64) -> Option<String> {
    let sql = format!("SELECT state FROM pg_stat_activity WHERE pid = {pid}");
    let row = db.query_one_raw(Statement::from_string(sea_orm::DbBackend::Postgres, sql)).await.unwrap();
    row.map(|row| row.try_get_by_index::<String>(0).unwrap())
}
