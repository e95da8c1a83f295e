//! [`SqliteStore`]: the ledger in an embedded SQLite database (WAL, synchronous=FULL).
//!
//! Writes run on one writer thread that owns the write connection: callers hand it their
//! transaction and wait for its commit (group commit, see [`SqliteStore`]). Reads of a database
//! file run on the caller's thread in their own connection (WAL lets them read the last commit
//! while the writer works). SQLite allows one writer at a time anyway, and the writer's
//! `BEGIN IMMEDIATE` makes a second process on the same file wait (up to [`BUSY_TIMEOUT_MS`])
//! instead of failing half-way.
//! Amounts are `INTEGER` mills and the rules live in [`crate::logic`], which writes absolute
//! results computed with checked arithmetic in Rust, because SQLite silently turns an overflowing
//! integer expression into a float.

mod schema;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;
use rusqlite::types::ValueRef;

use crate::backend::{Answer, Undo};
use crate::logic::Ctx;
use crate::queued::{Caller, Outcome, Queued, Reply, ToCaller, writer_stopped};
use crate::sql::{AuditHead, KnownHead, Param, Row, Tx, Value};
use crate::{ItemCheck, LedgerError, MeterSealer};

pub use schema::SCHEMA_VERSION;

/// How long a transaction waits for another process's write lock before failing.
pub const BUSY_TIMEOUT_MS: u64 = 5_000;
/// Prepared statements each connection keeps (the ledger sends a few dozen distinct ones).
pub const STATEMENT_CACHE: usize = 64;
/// Page cache per connection, in KiB as SQLite's `cache_size` takes it (negative): the ledger's
/// hot index pages stay in memory.
pub const CACHE_KIB: i64 = -32 * 1024;
/// Most operations one group commit covers.
pub const MAX_GROUP_OPS: usize = 256;
/// How often the checkpointer copies the write-ahead log into the database file.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(50);
/// Most operations waiting for the writer (handed over, not yet begun). When this many wait, a
/// new operation is refused at once with [`LedgerError::Busy`] and nothing of it is done: the
/// queue never grows past it. The benchmark's 512 requests in flight stay far below it.
pub const MAX_QUEUED_OPS: usize = 4096;
/// WAL pages after which the writer checkpoints itself (the checkpointer normally keeps the log
/// far below this; SQLite's default is 1,000).
pub const WRITER_CHECKPOINT_PAGES: i64 = 16_384;

/// The ledger in one SQLite database file (or in memory, for tests).
///
/// **Group commit.** One writer thread owns the write connection and runs the operations handed
/// to it one after another, back to back: the operations waiting when it starts a transaction,
/// and those that arrive while it runs them, join one `BEGIN IMMEDIATE` transaction, each inside
/// its own savepoint (so a failed or panicking operation leaves no trace) — except issue and
/// confirm, which refuse before they write and need none (`Undo::RefusesFirst`: a fault after
/// their first write rolls the group back). When nobody is waiting any more, or after
/// [`MAX_GROUP_OPS`], the writer waits for the verdicts of the group's deferred checks (run by
/// the callers meanwhile, `Tx::defer_check`) and commits them all with one WAL flush. Every
/// caller is answered only after the commit that holds its operation has succeeded, so an
/// acknowledged operation is durable (`synchronous=FULL`); if that commit fails, or a check
/// failed, every operation of the group fails. A lone operation is committed at once: grouping
/// adds no wait. A checkpointer thread copies the WAL into the file meanwhile
/// ([`CHECKPOINT_EVERY`]). At most [`MAX_QUEUED_OPS`] operations wait for the writer: beyond,
/// an operation is refused at once with [`LedgerError::Busy`], and nothing of it is done.
///
/// **Reads** of a file run in a separate read connection and see only committed states; an
/// in-memory database has one connection, so its reads go to the writer like writes (and are
/// answered after their group's commit, so they never show an operation that might still fail).
#[derive(Debug)]
pub struct SqliteStore {
    /// Hands operations to the writer thread; `None` once the store is closing.
    jobs: Mutex<Option<Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// The checkpointer of a database file: dropping the sender stops it.
    checkpointer: Mutex<Option<(Sender<()>, JoinHandle<()>)>>,
    /// The read connection of a database file.
    reader: Option<Mutex<Connection>>,
    path: Option<PathBuf>,
    sealer: Option<Arc<dyn MeterSealer>>,
    /// Most operations per group (1 turns group commit off); read by the writer.
    max_group: Arc<AtomicUsize>,
    /// Operations handed to the writer that it has not begun; at most `queue_limit`.
    queued: Arc<AtomicUsize>,
    /// [`MAX_QUEUED_OPS`], or a smaller limit set for a test.
    queue_limit: usize,
}

/// An operation for the writer: runs on the connection, with the audit head the writer knows
/// (`None`: the group could not begin, with the reason given to [`Deliver`]).
type Job = Box<dyn FnOnce(Option<(&Connection, &mut KnownHead)>) -> Ran + Send>;
type Deliver = Box<dyn FnOnce(Result<(), String>) + Send>;

/// What the writer keeps of an operation it ran until its group commits.
struct Ran {
    /// Answers the caller with the group's commit result.
    deliver: Deliver,
    /// The operation broke the group's transaction (its earlier operations are gone too).
    broke: bool,
    /// The verdict of the checks the operation deferred ([`Tx::defer_check`]), which its caller
    /// runs; the group commits only if every one passed.
    verdict: Option<Receiver<Result<(), String>>>,
}

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
    pub fn with_max_group(self, ops: usize) -> SqliteStore {
        self.max_group
            .store(ops.clamp(1, MAX_GROUP_OPS), Ordering::Relaxed);
        self
    }

    /// At most `ops` operations waiting for the writer (clamped to 1..=[`MAX_QUEUED_OPS`]);
    /// beyond, operations are refused with [`LedgerError::Busy`].
    pub fn with_queue_limit(mut self, ops: usize) -> SqliteStore {
        self.queue_limit = ops.clamp(1, MAX_QUEUED_OPS);
        self
    }

    /// The database file, or `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn init(mut conn: Connection, path: Option<PathBuf>) -> Result<SqliteStore, LedgerError> {
        configure(&conn)?;
        // journal_mode answers with the mode in force: "wal" for files, "memory" in memory.
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if path.is_some() && !mode.eq_ignore_ascii_case("wal") {
            return Err(LedgerError::Corrupt(format!(
                "cannot switch the database to WAL (journal mode is {mode})"
            )));
        }
        schema::migrate(&mut conn)?;
        let (reader, checkpointer) = match &path {
            Some(p) => {
                let r = Connection::open(p)?;
                configure(&r)?;
                conn.pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_PAGES)?;
                (Some(Mutex::new(r)), Some(start_checkpointer(p)?))
            }
            None => (None, None),
        };
        let max_group = Arc::new(AtomicUsize::new(MAX_GROUP_OPS));
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let limit = Arc::clone(&max_group);
        let writer = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || run_writer(conn, queue, limit))
            .map_err(|e| LedgerError::Invariant(format!("cannot start the ledger writer: {e}")))?;
        Ok(SqliteStore {
            jobs: Mutex::new(Some(jobs)),
            writer: Mutex::new(Some(writer)),
            checkpointer: Mutex::new(checkpointer),
            reader,
            path,
            sealer: None,
            max_group,
            queued: Arc::new(AtomicUsize::new(0)),
            queue_limit: MAX_QUEUED_OPS,
        })
    }

    /// Runs `f` as one operation of a group transaction on the writer thread (see
    /// [`SqliteStore`]): its changes are kept only if it returns `Ok`, and this returns only after
    /// they are committed. Runs the checks `f` deferred on this thread meanwhile.
    fn write_with<T: Send + 'static>(
        &self,
        undo: Undo,
        f: impl FnOnce(&mut dyn Tx, Ctx<'_>) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        // Room for both messages (checks, then the result): the writer never waits to send.
        let (answer, answered) = std::sync::mpsc::sync_channel(2);
        self.submit(
            undo,
            move |tx, ctx| f(tx, ctx).map(Ok),
            Reply::Thread(answer),
        )?;
        let mut caller = Caller::default();
        while let Ok(message) = answered.recv() {
            if let Some(result) = caller.take(message) {
                return result;
            }
        }
        Err(writer_stopped())
    }

    /// [`SqliteStore::write_with`] without a thread waiting: the writer answers the returned
    /// [`Queued`]. `f`'s inner result is the answer (see [`crate::backend::Answer`]).
    fn write_queued<T: Send + 'static>(
        &self,
        undo: Undo,
        f: impl FnOnce(&mut dyn Tx, Ctx<'_>) -> Result<Answer<T>, LedgerError> + Send + 'static,
    ) -> Queued<T> {
        let (answer, answered) = tokio::sync::mpsc::unbounded_channel();
        match self.submit(undo, f, Reply::Task(answer)) {
            Ok(()) => Queued::writer(answered),
            Err(e) => Queued::ready(Err(e)),
        }
    }

    /// Hands `f` to the writer, which sends `reply` the checks `f` deferred (if it succeeded)
    /// and, after the group's commit, its answer. Refuses it (`Busy`) when [`MAX_QUEUED_OPS`]
    /// (or the store's smaller limit) operations wait already.
    fn submit<T: Send + 'static>(
        &self,
        undo: Undo,
        f: impl FnOnce(&mut dyn Tx, Ctx<'_>) -> Result<Answer<T>, LedgerError> + Send + 'static,
        reply: Reply<T>,
    ) -> Result<(), LedgerError> {
        let limit = self.queue_limit;
        let taken = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            });
        if taken.is_err() {
            return Err(LedgerError::Busy);
        }
        let sealer = self.sealer.clone();
        let queued = Arc::clone(&self.queued);
        let job: Job = Box::new(move |conn| {
            // The writer has begun it: it no longer waits.
            queued.fetch_sub(1, Ordering::AcqRel);
            match conn {
                None => Ran {
                    deliver: deliver_failure(reply),
                    broke: false,
                    verdict: None,
                },
                Some((conn, head)) => {
                    let ctx = Ctx {
                        sealer: sealer.as_deref(),
                    };
                    let mut checks = Vec::new();
                    let (outcome, broke) = run_op(conn, head, &mut checks, undo, |tx| f(tx, ctx));
                    let verdict = (!checks.is_empty() && !broke && matches!(outcome, Ok(Ok(_))))
                        .then(|| {
                            let (tell, verdict) = std::sync::mpsc::sync_channel(1);
                            reply.send(ToCaller::Check(checks, tell));
                            verdict
                        });
                    Ran {
                        deliver: deliver(reply, outcome),
                        broke,
                        verdict,
                    }
                }
            }
        });
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|jobs| jobs.send(job).is_ok());
        if sent != Some(true) {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(LedgerError::GroupCommit(
                "the ledger writer has stopped".into(),
            ));
        }
        Ok(())
    }

    /// A read in its own deferred transaction on the read connection (one snapshot of the last
    /// commit; a long audit does not stall the writer); in memory, through the writer.
    fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Tx, Ctx<'_>) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        let Some(reader) = &self.reader else {
            return self.write_with(Undo::Savepoint, f);
        };
        let conn = reader.lock().unwrap_or_else(|p| p.into_inner());
        conn.execute_batch("BEGIN DEFERRED")?;
        let ctx = Ctx {
            sealer: self.sealer.as_deref(),
        };
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            f(
                &mut SqliteTx {
                    conn: &conn,
                    head: &mut KnownHead::default(),
                    checks: None,
                    wrote: false,
                },
                ctx,
            )
        }));
        // Nothing was written; ending the transaction only releases the snapshot.
        let ended = conn.execute_batch("ROLLBACK");
        drop(conn);
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

impl Drop for SqliteStore {
    /// Stops the writer after the operations already handed to it, and closes its connection
    /// before the store is gone (so the file can be reopened at once).
    fn drop(&mut self) {
        drop(self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(writer) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = writer.join();
        }
        let checkpointer = self
            .checkpointer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some((stop, thread)) = checkpointer {
            drop(stop);
            let _ = thread.join();
        }
    }
}

fn configure(conn: &Connection) -> Result<(), LedgerError> {
    conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Savepoints copy the pages they change into a statement journal; in memory rather than in a
    // temporary file (measured: the file's writes and reads were a fifth of the writer's time).
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "cache_size", CACHE_KIB)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

/// Starts the thread that copies committed pages from the write-ahead log into the database
/// file, on its own connection, every [`CHECKPOINT_EVERY`] (SQLite's passive checkpoint: it
/// never blocks the writer). Left to the writer, SQLite checkpoints inside the commit that
/// crosses 1,000 WAL pages — at full load every few groups, while every caller of the group waits
/// (measured: a third of the writer's system calls were the checkpoint's reads). The writer still
/// checkpoints itself past [`WRITER_CHECKPOINT_PAGES`], should this thread fall behind.
fn start_checkpointer(path: &Path) -> Result<(Sender<()>, JoinHandle<()>), LedgerError> {
    let conn = Connection::open(path)?;
    configure(&conn)?;
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("ledger-checkpoint".into())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(CHECKPOINT_EVERY)
            {
                // (busy, WAL frames, frames copied); a busy or failed checkpoint is simply
                // tried again next time — the WAL holds every commit meanwhile.
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "WAL checkpoint failed; will retry");
                }
            }
        })
        .map_err(|e| LedgerError::Invariant(format!("cannot start the checkpointer: {e}")))?;
    Ok((stop, thread))
}

/// Runs one operation of the group: in a savepoint that keeps its changes only if it returns
/// `Ok` ([`Undo::Savepoint`]), or without one ([`Undo::RefusesFirst`]: a failure after a write
/// breaks the group). Also says whether the group's transaction broke (a savepoint statement
/// failed, or an error made SQLite roll the whole transaction back): then the group's earlier
/// operations are gone too.
fn run_op<T>(
    conn: &Connection,
    head: &mut KnownHead,
    checks: &mut Vec<ItemCheck>,
    undo: Undo,
    f: impl FnOnce(&mut dyn Tx) -> Result<T, LedgerError>,
) -> (Outcome<T>, bool) {
    let head_before = *head;
    // Prepared once and cached: these run twice per operation.
    let run = |sql: &str| conn.prepare_cached(sql).and_then(|mut s| s.execute([]));
    let savepoint = undo == Undo::Savepoint;
    if savepoint && let Err(e) = run("SAVEPOINT op") {
        return (Ok(Err(e.into())), true);
    }
    let mut tx = SqliteTx {
        conn,
        head: &mut *head,
        checks: Some(&mut *checks),
        wrote: false,
    };
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut tx)));
    let wrote = tx.wrote;
    let ok = matches!(ran, Ok(Ok(_)));
    if !ok {
        *head = head_before;
    }
    let end = match (savepoint, ok) {
        (true, true) => run("RELEASE op").map(|_| ()),
        (true, false) => run("ROLLBACK TO op")
            .and_then(|_| run("RELEASE op"))
            .map(|_| ()),
        (false, _) => Ok(()),
    };
    // Without a savepoint, a failure after a write can only be undone with the whole group.
    let broke = end.is_err() || conn.is_autocommit() || (!savepoint && !ok && wrote);
    match end {
        Ok(()) => (ran, broke),
        Err(e) => (Ok(Err(e.into())), true),
    }
}

/// Answers the caller once the group has committed (or with the group's failure). The answer of
/// an operation whose writes committed is its inner result (a refusal that commits included).
fn deliver<T: Send + 'static>(reply: Reply<T>, outcome: Outcome<Answer<T>>) -> Deliver {
    Box::new(move |commit| {
        reply.send(ToCaller::Done(match commit {
            Ok(()) => outcome.map(|kept| kept.and_then(|answer| answer)),
            // The operation's own error says more than the group's, when it had one.
            Err(reason) => match outcome {
                Ok(Err(own)) => Ok(Err(own)),
                _ => Ok(Err(LedgerError::GroupCommit(reason))),
            },
        }));
    })
}

/// Answers a caller whose operation did not run because its group could not begin.
fn deliver_failure<T: Send + 'static>(reply: Reply<T>) -> Deliver {
    Box::new(move |commit| {
        let reason = commit
            .err()
            .unwrap_or_else(|| "the group did not begin".into());
        reply.send(ToCaller::Done(Ok(Err(LedgerError::GroupCommit(reason)))));
    })
}

/// Waits for the verdicts of the checks the group's callers are running (see [`Ran::verdict`]);
/// the first failure says why the group must not commit.
fn await_checks(ops: &mut [Ran]) -> Result<(), String> {
    for op in ops {
        match op.verdict.take().map(|verdict| verdict.recv()) {
            None | Some(Ok(Ok(()))) => {}
            Some(Ok(Err(reason))) => {
                return Err(format!(
                    "an item of the group failed its check ({reason}): the group was rolled back"
                ));
            }
            Some(Err(_)) => {
                return Err("the check of an item of the group did not finish: \
                            the group was rolled back"
                    .into());
            }
        }
    }
    Ok(())
}

/// The writer thread: one group transaction at a time, as described at [`SqliteStore`].
fn run_writer(conn: Connection, queue: Receiver<Job>, max_group: Arc<AtomicUsize>) {
    // The head of the audit chain as of this writer's last commit (see `append_audit_entry`).
    let mut head = KnownHead::default();
    while let Ok(first) = queue.recv() {
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            (first(None).deliver)(Err(format!("cannot begin a transaction: {e}")));
            continue;
        }
        // Another connection (an admin command) may have appended since the last commit.
        head.current = false;
        let head_at_start = head;
        let max = max_group.load(Ordering::Relaxed).max(1);
        let mut ops = Vec::with_capacity(max.min(64));
        let ran = first(Some((&conn, &mut head)));
        let mut broke = ran.broke;
        ops.push(ran);
        while !broke && ops.len() < max {
            let Ok(job) = queue.try_recv() else { break };
            let ran = job(Some((&conn, &mut head)));
            broke = ran.broke;
            ops.push(ran);
        }
        let commit = if broke {
            Err("the group transaction was rolled back by an error".to_owned())
        } else {
            await_checks(&mut ops)
                .and_then(|()| conn.execute_batch("COMMIT").map_err(|e| e.to_string()))
        };
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        if commit.is_err() {
            head = head_at_start;
        }
        tracing::debug!(ops = ops.len(), ok = commit.is_ok(), "group committed");
        for op in ops {
            (op.deliver)(commit.clone());
        }
    }
}

/// [`Tx`] over the connection's open transaction, with cached prepared statements.
struct SqliteTx<'a> {
    conn: &'a Connection,
    /// The head of chain 0 as the writer knows it (nothing on the read connection).
    head: &'a mut KnownHead,
    /// Where the writer collects an operation's deferred checks (`None`: run them at once).
    checks: Option<&'a mut Vec<ItemCheck>>,
    /// A statement that may have changed the database ran.
    wrote: bool,
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
        self.wrote |= !stmt.readonly();
        let changed = stmt.execute(rusqlite::params_from_iter(params))?;
        u64::try_from(changed).map_err(|_| LedgerError::Overflow)
    }

    fn rows(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, LedgerError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        self.wrote |= !stmt.readonly();
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

    fn insert_id(&mut self, sql: &str, params: &[Param<'_>]) -> Result<i64, LedgerError> {
        if self.exec(sql, params)? != 1 {
            return Err(LedgerError::Invariant("an insert added no row".into()));
        }
        Ok(self.conn.last_insert_rowid())
    }

    fn for_update(&self) -> &'static str {
        // BEGIN IMMEDIATE already holds the database's one write lock.
        ""
    }

    fn lock_audit_chain(&mut self) -> Result<i64, LedgerError> {
        Ok(0)
    }

    fn known_audit_head(&self, chain: i64) -> Option<AuditHead> {
        if chain == 0 { self.head.head } else { None }
    }

    fn set_audit_head(&mut self, chain: i64, head: AuditHead) {
        if chain == 0 {
            *self.head = KnownHead {
                head: Some(head),
                current: true,
            };
        }
    }

    fn audit_head_is_current(&self, chain: i64) -> bool {
        chain == 0 && self.head.current
    }

    fn defer_check(&mut self, check: ItemCheck) -> Result<(), LedgerError> {
        match &mut self.checks {
            Some(checks) => {
                checks.push(check);
                Ok(())
            }
            None => check().map_err(LedgerError::Signing),
        }
    }
}

impl crate::backend::Backend for SqliteStore {
    fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Tx, Ctx<'_>) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        SqliteStore::read(self, f)
    }

    fn write_with<T: Send + 'static>(
        &self,
        undo: Undo,
        f: impl FnOnce(&mut dyn Tx, Ctx<'_>) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        SqliteStore::write_with(self, undo, f)
    }

    fn write_queued<T: Send + 'static>(
        &self,
        undo: Undo,
        f: impl FnOnce(&mut dyn Tx, Ctx<'_>) -> Result<Answer<T>, LedgerError> + Send + 'static,
    ) -> Queued<T> {
        SqliteStore::write_queued(self, undo, f)
    }
}
