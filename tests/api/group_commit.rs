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
