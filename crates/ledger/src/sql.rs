//! The seam between the ledger's logic ([`crate::logic`], [`crate::audit`]) and a database: one
//! open transaction that runs SQL with positional parameters (`?1`, `?2`, … — each backend
//! translates them) and returns rows of plain values. SQLite and PostgreSQL implement it, so the
//! money rules are written once.
//!
//! The SQL the logic sends is the common subset of both dialects (partial indexes,
//! `LIMIT`); where they differ the transaction says how ([`Tx::for_update`],
//! [`Tx::lock_audit_chain`]).

use crate::{ItemCheck, LedgerError};

/// A statement parameter.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Param<'a> {
    Int(i64),
    OptInt(Option<i64>),
    Text(&'a str),
    OptText(Option<&'a str>),
    Blob(&'a [u8]),
    OptBlob(Option<&'a [u8]>),
}

/// A value read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Value {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

/// One result row.
#[derive(Clone, Debug)]
pub(crate) struct Row(pub(crate) Vec<Value>);

impl Row {
    fn at(&self, i: usize) -> Result<&Value, LedgerError> {
        self.0
            .get(i)
            .ok_or_else(|| LedgerError::Corrupt(format!("result row has no column {i}")))
    }

    pub(crate) fn int(&self, i: usize) -> Result<i64, LedgerError> {
        match self.at(i)? {
            Value::Int(v) => Ok(*v),
            other => Err(wrong_type(i, "an integer", other)),
        }
    }

    pub(crate) fn opt_int(&self, i: usize) -> Result<Option<i64>, LedgerError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Int(v) => Ok(Some(*v)),
            other => Err(wrong_type(i, "an integer or NULL", other)),
        }
    }

    pub(crate) fn text(&self, i: usize) -> Result<String, LedgerError> {
        match self.at(i)? {
            Value::Text(v) => Ok(v.clone()),
            other => Err(wrong_type(i, "text", other)),
        }
    }

    pub(crate) fn opt_text(&self, i: usize) -> Result<Option<String>, LedgerError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Text(v) => Ok(Some(v.clone())),
            other => Err(wrong_type(i, "text or NULL", other)),
        }
    }

    pub(crate) fn blob(&self, i: usize) -> Result<Vec<u8>, LedgerError> {
        match self.at(i)? {
            Value::Blob(v) => Ok(v.clone()),
            other => Err(wrong_type(i, "bytes", other)),
        }
    }

    pub(crate) fn opt_blob(&self, i: usize) -> Result<Option<Vec<u8>>, LedgerError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Blob(v) => Ok(Some(v.clone())),
            other => Err(wrong_type(i, "bytes or NULL", other)),
        }
    }
}

fn wrong_type(i: usize, expected: &str, got: &Value) -> LedgerError {
    let got = match got {
        Value::Null => "NULL",
        Value::Int(_) => "an integer",
        Value::Text(_) => "text",
        Value::Blob(_) => "bytes",
    };
    LedgerError::Corrupt(format!("column {i} is {got}, expected {expected}"))
}

/// One open database transaction.
pub(crate) trait Tx {
    /// Runs a statement; returns the number of rows it changed.
    fn exec(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, LedgerError>;

    /// Runs a query; returns every row.
    fn rows(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, LedgerError>;

    /// Runs an `INSERT` of one row into a table whose key is an integer `id` and returns that
    /// id. (SQLite reads it back from the connection: its `RETURNING` builds a temporary table at
    /// every run; PostgreSQL appends `RETURNING id`.)
    fn insert_id(&mut self, sql: &str, params: &[Param<'_>]) -> Result<i64, LedgerError>;

    /// The first row of a query, if any.
    fn row(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Option<Row>, LedgerError> {
        Ok(self.rows(sql, params)?.into_iter().next())
    }

    /// The suffix that makes a `SELECT` lock the rows it reads until the transaction ends
    /// (`" FOR UPDATE"` on PostgreSQL in a write transaction; empty where the whole database is
    /// already locked for writing, as in SQLite's `BEGIN IMMEDIATE`, or in a read transaction).
    fn for_update(&self) -> &'static str;

    /// The audit chain this transaction appends to, locked against every other writer of that
    /// chain until the transaction ends. SQLite has one chain (0; its writers are serialised
    /// anyway); PostgreSQL one per connection, so that commits need not queue behind one head.
    fn lock_audit_chain(&mut self) -> Result<i64, LedgerError>;

    /// The head (sequence number, hash) this connection last appended to `chain` and committed;
    /// `None` when it has not appended yet.
    fn known_audit_head(&self, chain: i64) -> Option<AuditHead>;

    /// Records the head this transaction appended to `chain` (kept only if it commits).
    fn set_audit_head(&mut self, chain: i64, head: AuditHead);

    /// Whether [`Tx::known_audit_head`] of `chain` is the database's head now, without reading
    /// it: this transaction already read or appended it, and no one else can append to the chain
    /// before it ends (SQLite's writer, whose group transaction holds the database's one write
    /// lock, appends many operations' entries in one transaction).
    fn audit_head_is_current(&self, _chain: i64) -> bool {
        false
    }

    /// Makes the transaction's commit depend on `check` (a fresh item's signature check). By
    /// default it runs at once; SQLite's writer has it run on the caller's thread while it goes on
    /// with the group, and commits the group only if every check of it passed.
    fn defer_check(&mut self, check: ItemCheck) -> Result<(), LedgerError> {
        check().map_err(LedgerError::Signing)
    }
}

/// The newest entry of an audit chain: its sequence number and hash.
pub(crate) type AuditHead = (i64, [u8; 32]);

/// What a writer connection knows of the head of its audit chain.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct KnownHead {
    /// The head as of the connection's last commit, or as this transaction appended it.
    pub(crate) head: Option<AuditHead>,
    /// `head` was read back or appended in the open transaction (see
    /// [`Tx::audit_head_is_current`]).
    pub(crate) current: bool,
}

/// Rewrites `?N` placeholders as PostgreSQL's `$N`. The ledger's SQL has no `?` in literals.
pub(crate) fn dollar_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_dollar_numbers() {
        assert_eq!(
            dollar_placeholders("SELECT a FROM t WHERE b = ?1 AND c = ?12"),
            "SELECT a FROM t WHERE b = $1 AND c = $12"
        );
    }

    #[test]
    fn reading_a_column_of_the_wrong_type_is_corrupt_data() {
        let row = Row(vec![Value::Text("x".into()), Value::Null]);
        assert!(matches!(row.int(0), Err(LedgerError::Corrupt(_))));
        assert_eq!(row.opt_int(1).ok(), Some(None));
        assert!(matches!(row.int(7), Err(LedgerError::Corrupt(_))));
    }
}
