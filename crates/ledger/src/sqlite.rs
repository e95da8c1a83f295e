//! [`SqliteStore`]: the ledger in an embedded SQLite database (WAL, synchronous=FULL).
//!
//! One connection sits behind a mutex: the server calls the store from `spawn_blocking`, and
//! SQLite allows one writer at a time anyway. Writes run in `BEGIN IMMEDIATE` transactions shared
//! by the operations waiting at the time (group commit, see [`SqliteStore`]), so a second process
//! on the same file waits (up to [`BUSY_TIMEOUT_MS`]) instead of failing half-way.
//! Amounts are `INTEGER` mills and the rules live in [`crate::logic`], which writes absolute
//! results computed with checked arithmetic in Rust, because SQLite silently turns an overflowing
//! integer expression into a float.

mod schema;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::Connection;
use rusqlite::types::ValueRef;

use crate::logic::Ctx;
use crate::sql::{Param, Row, Tx, Value};
use crate::{LedgerError, MeterSealer};

pub use schema::SCHEMA_VERSION;

/// How long a transaction waits for another process's write lock before failing.
pub const BUSY_TIMEOUT_MS: u64 = 5_000;
/// Prepared statements each connection keeps (the ledger sends a few dozen distinct ones).
pub const STATEMENT_CACHE: usize = 64;

/// The ledger in one SQLite database file (or in memory, for tests).
///
/// **Group commit.** Operations that arrive while another one holds the connection join one
/// transaction: each runs inside its own savepoint (so a failed operation leaves no trace), and
/// the last operation of the group — the one that finds nobody else waiting, or the
/// [`MAX_GROUP_OPS`]th — commits for all of them with one WAL flush. Every caller returns only
/// after the commit that holds its operation has succeeded, so an acknowledged operation is
/// durable (`synchronous=FULL`); if that commit fails, every operation of the group fails.
/// A read that arrives while a group is open joins it, so it never shows an operation whose
/// commit might still fail.
#[derive(Debug)]
pub struct SqliteStore {
    inner: Mutex<Inner>,
    /// Signalled after each group's commit (or failure).
    committed: Condvar,
    /// Callers waiting for the connection: while there are any, an operation leaves the group's
    /// transaction open for them.
    queued: AtomicUsize,
    path: Option<PathBuf>,
    sealer: Option<Arc<dyn MeterSealer>>,
    /// Most operations per group (1 turns group commit off).
    max_group: usize,
}

/// The connection and the state of the group transaction open on it.
#[derive(Debug)]
struct Inner {
    conn: Connection,
    /// Whether a group transaction is open.
    open: bool,
    /// Operations in the open group.
    ops: usize,
    /// The number of the open (or last) group.
    group: u64,
    /// The highest group number that has finished (committed or failed).
    done: u64,
    /// Groups whose commit failed, with the reason (kept only until their callers have read it;
    /// bounded by the number of groups waited on at once).
    failed: Vec<(u64, String)>,
}

/// Most operations one group commit covers; the operation that reaches it commits.
pub const MAX_GROUP_OPS: usize = 256;

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, sets WAL, synchronous=FULL, foreign keys
    /// and the busy timeout, and creates or migrates the schema.
    pub fn open(path: &Path) -> Result<SqliteStore, LedgerError> {
        let conn = Connection::open(path)?;
        SqliteStore::init(conn, Some(path.to_path_buf()))
    }

    /// A private in-memory database (WAL does not apply to it).
    pub fn open_in_memory() -> Result<SqliteStore, LedgerError> {
        let conn = Connection::open_in_memory()?;
        SqliteStore::init(conn, None)
    }

    /// Seals every meter state this store writes with `sealer`, and refuses (freezes) meters whose
    /// stored seal does not match.
    pub fn with_sealer(mut self, sealer: Arc<dyn MeterSealer>) -> SqliteStore {
        self.sealer = Some(sealer);
        self
    }

    /// At most `ops` operations per group commit (clamped to 1..=[`MAX_GROUP_OPS`]); 1 commits
    /// every operation on its own (for measuring what group commit buys).
    pub fn with_max_group(mut self, ops: usize) -> SqliteStore {
        self.max_group = ops.clamp(1, MAX_GROUP_OPS);
        self
    }

    /// The database file, or `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn init(mut conn: Connection, path: Option<PathBuf>) -> Result<SqliteStore, LedgerError> {
        conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))?;
        // journal_mode answers with the mode in force: "wal" for files, "memory" in memory.
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if path.is_some() && !mode.eq_ignore_ascii_case("wal") {
            return Err(LedgerError::Corrupt(format!(
                "cannot switch the database to WAL (journal mode is {mode})"
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        schema::migrate(&mut conn)?;
        Ok(SqliteStore {
            inner: Mutex::new(Inner {
                conn,
                open: false,
                ops: 0,
                group: 0,
                done: 0,
                failed: Vec::new(),
            }),
            committed: Condvar::new(),
            queued: AtomicUsize::new(0),
            path,
            sealer: None,
            max_group: MAX_GROUP_OPS,
        })
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            sealer: self.sealer.as_deref(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Operations run inside savepoints and panics are caught and rolled back below, so a
        // poisoned lock never guards a half-applied operation.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` as one operation of a group transaction (see [`SqliteStore`]): its changes are
    /// kept only if it returns `Ok`, and this returns only after they are committed.
    fn write<T>(
        &self,
        f: impl FnOnce(&mut dyn Tx, Ctx<'_>) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        self.queued.fetch_add(1, Ordering::SeqCst);
        let mut inner = self.lock();
        self.queued.fetch_sub(1, Ordering::SeqCst);
        if !inner.open {
            inner.conn.execute_batch("BEGIN IMMEDIATE")?;
            inner.open = true;
            inner.ops = 0;
            inner.group += 1;
        }
        let group = inner.group;
        let outcome = match inner.conn.execute_batch("SAVEPOINT op") {
            Ok(()) => {
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    f(&mut SqliteTx { conn: &inner.conn }, self.ctx())
                }));
                let keep = matches!(ran, Ok(Ok(_)));
                let end = if keep {
                    inner.conn.execute_batch("RELEASE op")
                } else {
                    inner.conn.execute_batch("ROLLBACK TO op; RELEASE op")
                };
                end.map(|()| ran).map_err(LedgerError::from)
            }
            Err(e) => Err(e.into()),
        };
        inner.ops += 1;
        // A statement error may have ended the whole transaction (SQLite rolls back on some I/O
        // errors): then the group's earlier operations are gone too.
        let group_lost = inner.conn.is_autocommit() || outcome.is_err();
        let finish =
            group_lost || self.queued.load(Ordering::SeqCst) == 0 || inner.ops >= self.max_group;
        if finish {
            let commit = if group_lost {
                let _ = inner.conn.execute_batch("ROLLBACK");
                Err("the group transaction was rolled back by an error".to_owned())
            } else {
                inner
                    .conn
                    .execute_batch("COMMIT")
                    .map_err(|e| e.to_string())
            };
            if commit.is_err() && !inner.conn.is_autocommit() {
                let _ = inner.conn.execute_batch("ROLLBACK");
            }
            inner.open = false;
            inner.done = group;
            if let Err(reason) = &commit {
                inner.failed.push((group, reason.clone()));
            }
            self.committed.notify_all();
            if let Err(reason) = commit {
                self.forget_failure(&mut inner, group);
                drop(inner);
                return Err(outcome
                    .err()
                    .unwrap_or_else(|| LedgerError::GroupCommit(reason)));
            }
        } else {
            while inner.done < group {
                inner = self
                    .committed
                    .wait(inner)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            if let Some((_, reason)) = inner.failed.iter().find(|(g, _)| *g == group) {
                let reason = reason.clone();
                self.forget_failure(&mut inner, group);
                return Err(LedgerError::GroupCommit(reason));
            }
        }
        drop(inner);
        match outcome? {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Drops failure records no caller can still be waiting for (groups more than a few behind).
    fn forget_failure(&self, inner: &mut Inner, group: u64) {
        let oldest = group.saturating_sub(1024);
        inner.failed.retain(|(g, _)| *g >= oldest);
    }

    /// A read in its own deferred transaction (one snapshot, no write lock, so a long audit does
    /// not stall another process's writes) when no group is open; otherwise it joins the group
    /// and returns after its commit, so that it never reports an operation that might still fail.
    fn read<T>(
        &self,
        f: impl FnOnce(&mut dyn Tx, Ctx<'_>) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        let inner = self.lock();
        if inner.open {
            drop(inner);
            return self.write(f);
        }
        inner.conn.execute_batch("BEGIN DEFERRED")?;
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            f(&mut SqliteTx { conn: &inner.conn }, self.ctx())
        }));
        // Nothing was written; ending the transaction only releases the snapshot.
        let ended = inner.conn.execute_batch("ROLLBACK");
        drop(inner);
        match ran {
            Ok(result) => {
                let out = result?;
                ended?;
                Ok(out)
            }
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

/// [`Tx`] over the connection's open transaction, with cached prepared statements.
struct SqliteTx<'a> {
    conn: &'a Connection,
}

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::ToSqlOutput::Borrowed;
        Ok(match *self {
            Param::Int(v) => Borrowed(ValueRef::Integer(v)),
            Param::OptInt(v) => Borrowed(v.map_or(ValueRef::Null, ValueRef::Integer)),
            Param::Text(v) => Borrowed(ValueRef::Text(v.as_bytes())),
            Param::OptText(v) => {
                Borrowed(v.map_or(ValueRef::Null, |t| ValueRef::Text(t.as_bytes())))
            }
            Param::Blob(v) => Borrowed(ValueRef::Blob(v)),
            Param::OptBlob(v) => Borrowed(v.map_or(ValueRef::Null, ValueRef::Blob)),
        })
    }
}

impl Tx for SqliteTx<'_> {
    fn exec(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, LedgerError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let changed = stmt.execute(rusqlite::params_from_iter(params))?;
        u64::try_from(changed).map_err(|_| LedgerError::Overflow)
    }

    fn rows(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, LedgerError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let columns = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let mut values = Vec::with_capacity(columns);
            for i in 0..columns {
                values.push(match row.get_ref(i)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(v) => Value::Int(v),
                    ValueRef::Text(t) => Value::Text(
                        String::from_utf8(t.to_vec())
                            .map_err(|_| LedgerError::Corrupt("text is not UTF-8".into()))?,
                    ),
                    ValueRef::Blob(b) => Value::Blob(b.to_vec()),
                    ValueRef::Real(_) => {
                        return Err(LedgerError::Corrupt(
                            "a floating-point value in the ledger".into(),
                        ));
                    }
                });
            }
            out.push(Row(values));
        }
        Ok(out)
    }

    fn for_update(&self) -> &'static str {
        // BEGIN IMMEDIATE already holds the database's one write lock.
        ""
    }

    fn lock_audit_chain(&mut self) -> Result<(), LedgerError> {
        Ok(())
    }
}

impl crate::backend::Backend for SqliteStore {
    fn read<T>(
        &self,
        f: impl FnOnce(&mut dyn Tx, Ctx<'_>) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        SqliteStore::read(self, f)
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&mut dyn Tx, Ctx<'_>) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        SqliteStore::write(self, f)
    }
}
