//! The SQLite schema and its migrations. `schema_version` holds one row: the version the tables are
//! at. Opening a database runs every migration above that version, in one transaction.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::{ACCOUNT_BANK_CLEARING, ACCOUNT_POSTAGE_SOLD, LedgerError};

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = 10;

/// Migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: [&str; 10] = [V1, V2, V3, V4, V5, V6, V7, V8, V9, V10];

/// Version 1. Tables are STRICT so that a wrong type is an error, never a silent conversion.
/// Amounts are integer mills. The audit log refuses updates and deletes (a direct edit must drop
/// the triggers first, and the hash chain still shows it).
const V1: &str = "
CREATE TABLE users (
    id               INTEGER PRIMARY KEY,
    user             TEXT NOT NULL,
    user_key         TEXT NOT NULL UNIQUE,
    name             TEXT NOT NULL,
    address          TEXT NOT NULL,
    city             TEXT NOT NULL,
    state            TEXT NOT NULL,
    zip              TEXT NOT NULL,
    password_hash    TEXT NOT NULL,
    wrapped_link_key BLOB NOT NULL,
    role             TEXT NOT NULL CHECK (role IN ('user', 'admin')),
    failed_logins    INTEGER NOT NULL CHECK (failed_logins >= 0),
    locked_until_ms  INTEGER,
    created_at_ms    INTEGER NOT NULL
) STRICT;

CREATE TABLE accounts (
    id      TEXT PRIMARY KEY,
    balance INTEGER NOT NULL
) STRICT;

CREATE TABLE meters (
    user_id          INTEGER PRIMARY KEY REFERENCES users (id),
    device_id        TEXT NOT NULL UNIQUE,
    license_id       TEXT NOT NULL,
    ascending_mills  INTEGER NOT NULL CHECK (ascending_mills >= 0),
    descending_mills INTEGER NOT NULL CHECK (descending_mills >= 0),
    piece            INTEGER NOT NULL CHECK (piece >= 0),
    seal             BLOB
) STRICT;

CREATE TABLE payments (
    payment_id   TEXT PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users (id),
    method       TEXT NOT NULL CHECK (method IN ('card', 'eft')),
    amount_mills INTEGER NOT NULL CHECK (amount_mills > 0),
    token        TEXT,
    last4        TEXT,
    at_ms        INTEGER NOT NULL
) STRICT;

CREATE TABLE items (
    serial        TEXT PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users (id),
    kind          TEXT NOT NULL,
    amount_mills  INTEGER NOT NULL CHECK (amount_mills > 0),
    piece         INTEGER NOT NULL CHECK (piece > 0),
    status        TEXT NOT NULL
                  CHECK (status IN ('issued', 'printed', 'voided', 'refunded', 'redeemed')),
    bytes         BLOB NOT NULL,
    issued_at_ms  INTEGER NOT NULL,
    confirm_by_ms INTEGER,
    settled_at_ms INTEGER,
    session       TEXT,
    UNIQUE (user_id, piece)
) STRICT;

CREATE INDEX items_pending ON items (confirm_by_ms) WHERE status = 'issued';

CREATE TABLE transfers (
    id           INTEGER PRIMARY KEY,
    at_ms        INTEGER NOT NULL,
    from_account TEXT NOT NULL REFERENCES accounts (id),
    to_account   TEXT NOT NULL REFERENCES accounts (id),
    amount_mills INTEGER NOT NULL CHECK (amount_mills > 0),
    kind         TEXT NOT NULL CHECK (kind IN ('fund', 'reserve', 'post', 'void', 'refund')),
    item_serial  TEXT REFERENCES items (serial),
    payment_id   TEXT REFERENCES payments (payment_id),
    CHECK (from_account <> to_account)
) STRICT;

CREATE INDEX transfers_item ON transfers (item_serial) WHERE item_serial IS NOT NULL;

CREATE TABLE requests (
    user_id      INTEGER NOT NULL REFERENCES users (id),
    request_id   TEXT NOT NULL,
    fingerprint  BLOB NOT NULL CHECK (length(fingerprint) = 32),
    op           TEXT NOT NULL,
    outcome_json TEXT NOT NULL,
    at_ms        INTEGER NOT NULL,
    PRIMARY KEY (user_id, request_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY,
    at_ms     INTEGER NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    detail    TEXT NOT NULL,
    prev_hash BLOB NOT NULL,
    hash      BLOB NOT NULL
) STRICT;

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
";

/// Version 2 (reprints): how many times each item's bytes were fetched again to print
/// (`reprint`); every reprint is also in the audit log.
const V2: &str = "
ALTER TABLE items ADD COLUMN reprints INTEGER NOT NULL DEFAULT 0 CHECK (reprints >= 0);
";

/// Version 3 (payments as the bank sees them): standing authorisations for auto-refill (the processor's token and the
/// last four digits, a threshold, an amount per refill and a cap on their total; `refills` numbers
/// them, so one need is charged once); ACH debits the bank returned; and account closure: the
/// `payout` transfer kind (customer:U → bank_clearing, naming the payment refunded), the bank
/// refunds it paid (`payouts`) and the closed accounts. An open row (`paid_by` NULL) locks the user
/// until the debt is paid; `paid_by` is the bank payment that paid it (no ledger transfer: the
/// value credited by the returned debit stays, now backed by that payment).
const V3: &str = "
CREATE TABLE payment_returns (
    payment_id     TEXT PRIMARY KEY REFERENCES payments (payment_id),
    user_id        INTEGER NOT NULL REFERENCES users (id),
    amount_mills   INTEGER NOT NULL CHECK (amount_mills > 0),
    returned_at_ms INTEGER NOT NULL,
    paid_by        TEXT UNIQUE,
    paid_at_ms     INTEGER
) STRICT;

CREATE TABLE auto_refills (
    user_id         INTEGER PRIMARY KEY REFERENCES users (id),
    token           TEXT NOT NULL,
    last4           TEXT NOT NULL,
    threshold_mills INTEGER NOT NULL CHECK (threshold_mills >= 0),
    amount_mills    INTEGER NOT NULL CHECK (amount_mills > 0),
    cap_mills       INTEGER NOT NULL CHECK (cap_mills > 0),
    used_mills      INTEGER NOT NULL CHECK (used_mills >= 0 AND used_mills <= cap_mills),
    refills         INTEGER NOT NULL CHECK (refills >= 0),
    set_at_ms       INTEGER NOT NULL
) STRICT;

CREATE TABLE transfers_v2 (
    id           INTEGER PRIMARY KEY,
    at_ms        INTEGER NOT NULL,
    from_account TEXT NOT NULL REFERENCES accounts (id),
    to_account   TEXT NOT NULL REFERENCES accounts (id),
    amount_mills INTEGER NOT NULL CHECK (amount_mills > 0),
    kind         TEXT NOT NULL
                 CHECK (kind IN ('fund', 'reserve', 'post', 'void', 'refund', 'payout')),
    item_serial  TEXT REFERENCES items (serial),
    payment_id   TEXT REFERENCES payments (payment_id),
    CHECK (from_account <> to_account)
) STRICT;
INSERT INTO transfers_v2 SELECT id, at_ms, from_account, to_account, amount_mills, kind,
    item_serial, payment_id FROM transfers;
DROP TABLE transfers;
ALTER TABLE transfers_v2 RENAME TO transfers;
CREATE INDEX transfers_item ON transfers (item_serial) WHERE item_serial IS NOT NULL;

CREATE TABLE payouts (
    refund_id    TEXT PRIMARY KEY,
    payment_id   TEXT NOT NULL REFERENCES payments (payment_id),
    user_id      INTEGER NOT NULL REFERENCES users (id),
    amount_mills INTEGER NOT NULL CHECK (amount_mills > 0),
    transfer_id  INTEGER NOT NULL UNIQUE REFERENCES transfers (id),
    at_ms        INTEGER NOT NULL
) STRICT;

CREATE TABLE closures (
    user_id        INTEGER PRIMARY KEY REFERENCES users (id),
    closed_at_ms   INTEGER NOT NULL,
    refunded_mills INTEGER NOT NULL CHECK (refunded_mills >= 0)
) STRICT;
";

/// Version 4 (for speed): the same `items` and `transfers`, with their status and kind
/// checks written as `=` comparisons joined by `OR`. SQLite evaluates a `CHECK (x IN (…))` of more
/// than two constants by building a temporary b-tree at every insert or update (measured: a
/// tenth of a purchase's instructions). Tables are rebuilt the documented way (new table, copy,
/// drop, rename) with foreign keys off for the migration and checked before it commits.
const V4: &str = "
CREATE TABLE items_v4 (
    serial        TEXT PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users (id),
    kind          TEXT NOT NULL,
    amount_mills  INTEGER NOT NULL CHECK (amount_mills > 0),
    piece         INTEGER NOT NULL CHECK (piece > 0),
    status        TEXT NOT NULL
                  CHECK (status = 'issued' OR status = 'printed' OR status = 'voided'
                         OR status = 'refunded' OR status = 'redeemed'),
    bytes         BLOB NOT NULL,
    issued_at_ms  INTEGER NOT NULL,
    confirm_by_ms INTEGER,
    settled_at_ms INTEGER,
    session       TEXT,
    reprints      INTEGER NOT NULL DEFAULT 0 CHECK (reprints >= 0),
    UNIQUE (user_id, piece)
) STRICT;
INSERT INTO items_v4 (serial, user_id, kind, amount_mills, piece, status, bytes, issued_at_ms,
        confirm_by_ms, settled_at_ms, session, reprints)
    SELECT serial, user_id, kind, amount_mills, piece, status, bytes, issued_at_ms,
        confirm_by_ms, settled_at_ms, session, reprints FROM items;
DROP TABLE items;
ALTER TABLE items_v4 RENAME TO items;
CREATE INDEX items_pending ON items (confirm_by_ms) WHERE status = 'issued';

CREATE TABLE transfers_v4 (
    id           INTEGER PRIMARY KEY,
    at_ms        INTEGER NOT NULL,
    from_account TEXT NOT NULL REFERENCES accounts (id),
    to_account   TEXT NOT NULL REFERENCES accounts (id),
    amount_mills INTEGER NOT NULL CHECK (amount_mills > 0),
    kind         TEXT NOT NULL
                 CHECK (kind = 'fund' OR kind = 'reserve' OR kind = 'post' OR kind = 'void'
                        OR kind = 'refund' OR kind = 'payout'),
    item_serial  TEXT REFERENCES items (serial),
    payment_id   TEXT REFERENCES payments (payment_id),
    CHECK (from_account <> to_account)
) STRICT;
INSERT INTO transfers_v4 SELECT id, at_ms, from_account, to_account, amount_mills, kind,
    item_serial, payment_id FROM transfers;
DROP TABLE transfers;
ALTER TABLE transfers_v4 RENAME TO transfers;
CREATE INDEX transfers_item ON transfers (item_serial) WHERE item_serial IS NOT NULL;
";

/// Version 5 (one hash chain per appending connection): the audit log names the hash chain of each entry, as PostgreSQL's does
/// (where every connection appends to its own). SQLite's writers are serialised, so all its
/// entries stay on chain 0 and `seq` (the row id) stays unique; the newest entry of chain 0 is the
/// last row, so no index on the chain is needed (one would cost a b-tree insert per entry).
const V5: &str = "
ALTER TABLE audit_log ADD COLUMN chain INTEGER NOT NULL DEFAULT 0 CHECK (chain = 0);
";

/// Version 6: a closure is begun before the bank refunds anything (`finished = 0`, naming the
/// closing request), which stops every spending operation on the account, and finished when the
/// payouts are booked. Earlier rows were finished in one step.
const V6: &str = "
ALTER TABLE closures ADD COLUMN request_id TEXT;
ALTER TABLE closures ADD COLUMN finished INTEGER NOT NULL DEFAULT 1 CHECK (finished = 0 OR finished = 1);
";

/// Version 7: a closure keeps the payout plan it fixed (JSON `[[payment_id, mills], …]`), so that
/// a resumed closure refunds exactly what the first attempt planned.
const V7: &str = "
ALTER TABLE closures ADD COLUMN plan TEXT;
";

/// Version 8: failed logins are counted per (user name, source) — whether or not the name is a
/// user's — instead of per user (`users.failed_logins` and `locked_until_ms` stay, unused), and
/// a pair is deleted once `expires_at_ms` has passed. Existing locks are not carried over.
const V8: &str = "
CREATE TABLE login_throttles (
    user_key      TEXT NOT NULL,
    source        TEXT NOT NULL,
    failures      INTEGER NOT NULL CHECK (failures >= 0),
    until_ms      INTEGER,
    expires_at_ms INTEGER NOT NULL,
    PRIMARY KEY (user_key, source)
) STRICT, WITHOUT ROWID;
CREATE INDEX login_throttles_expiry ON login_throttles (expires_at_ms);
";

/// Version 9 (licensing at the first funding): a meter's device id and licence are unknown until
/// CMLS licenses the customer, which the first funding does; both are set together, once.
const V9: &str = "
CREATE TABLE meters_v9 (
    user_id          INTEGER PRIMARY KEY REFERENCES users (id),
    device_id        TEXT UNIQUE,
    license_id       TEXT,
    ascending_mills  INTEGER NOT NULL CHECK (ascending_mills >= 0),
    descending_mills INTEGER NOT NULL CHECK (descending_mills >= 0),
    piece            INTEGER NOT NULL CHECK (piece >= 0),
    seal             BLOB,
    CHECK ((device_id IS NULL) = (license_id IS NULL))
) STRICT;
INSERT INTO meters_v9 SELECT user_id, device_id, license_id, ascending_mills, descending_mills,
    piece, seal FROM meters;
DROP TABLE meters;
ALTER TABLE meters_v9 RENAME TO meters;
";

/// Version 10 (value items: tickets, checks, coupons, certificates): per (user, kind) registers
/// and sequence; the meter's `value_outstanding_mills` (what the user's funds-carrying value items
/// hold, issued − returned, so that descending = balance + outstanding); an item's valid-until
/// time and what is left to redeem; the users an issuer allows to redeem; the `redeem` transfer;
/// the liability accounts `outstanding:KIND`. And `users.locked_until_ms` comes back into use as an
/// administrator's lock (`admin lock`): whatever the old per-user lockout left there is cleared.
const V10: &str = "
ALTER TABLE meters ADD COLUMN value_outstanding_mills INTEGER NOT NULL DEFAULT 0
    CHECK (value_outstanding_mills >= 0);
ALTER TABLE items ADD COLUMN valid_until_ms INTEGER;
ALTER TABLE items ADD COLUMN remaining_mills INTEGER CHECK (remaining_mills >= 0);
CREATE TABLE value_registers (
    user_id        INTEGER NOT NULL REFERENCES users (id),
    kind           TEXT NOT NULL,
    pieces         INTEGER NOT NULL CHECK (pieces >= 0),
    issued_mills   INTEGER NOT NULL CHECK (issued_mills >= 0),
    returned_mills INTEGER NOT NULL CHECK (returned_mills >= 0),
    redeemed_mills INTEGER NOT NULL CHECK (redeemed_mills >= 0),
    PRIMARY KEY (user_id, kind)
) STRICT, WITHOUT ROWID;
CREATE TABLE redeemers (
    issuer_id   INTEGER NOT NULL REFERENCES users (id),
    redeemer_id INTEGER NOT NULL REFERENCES users (id),
    added_at_ms INTEGER NOT NULL,
    PRIMARY KEY (issuer_id, redeemer_id)
) STRICT, WITHOUT ROWID;
CREATE TABLE transfers_v10 (
    id           INTEGER PRIMARY KEY,
    at_ms        INTEGER NOT NULL,
    from_account TEXT NOT NULL REFERENCES accounts (id),
    to_account   TEXT NOT NULL REFERENCES accounts (id),
    amount_mills INTEGER NOT NULL CHECK (amount_mills > 0),
    kind         TEXT NOT NULL
                 CHECK (kind = 'fund' OR kind = 'reserve' OR kind = 'post' OR kind = 'void'
                        OR kind = 'refund' OR kind = 'payout' OR kind = 'redeem'),
    item_serial  TEXT REFERENCES items (serial),
    payment_id   TEXT REFERENCES payments (payment_id),
    CHECK (from_account <> to_account)
) STRICT;
INSERT INTO transfers_v10 SELECT id, at_ms, from_account, to_account, amount_mills, kind,
    item_serial, payment_id FROM transfers;
DROP TABLE transfers;
ALTER TABLE transfers_v10 RENAME TO transfers;
CREATE INDEX items_history ON items (user_id, issued_at_ms, piece);
CREATE INDEX transfers_item ON transfers (item_serial) WHERE item_serial IS NOT NULL;
INSERT INTO accounts (id, balance) VALUES ('outstanding:ticket', 0), ('outstanding:check', 0),
    ('outstanding:certificate', 0);
UPDATE users SET locked_until_ms = NULL;
";

/// Brings the schema to [`SCHEMA_VERSION`]; refuses a database written by a newer build.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), LedgerError> {
    // Rebuilding a table drops the old one, which other tables' foreign keys name: keys are off
    // while migrating (the pragma is a no-op inside a transaction) and checked before commit.
    let keys_on: i64 = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    let migrated = migrate_in_transaction(conn);
    conn.pragma_update(
        None,
        "foreign_keys",
        if keys_on == 1 { "ON" } else { "OFF" },
    )?;
    migrated
}

fn migrate_in_transaction(conn: &mut Connection) -> Result<(), LedgerError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL) STRICT",
    )?;
    let stored: Option<i64> = tx
        .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .optional()?;
    let version = stored.unwrap_or(0);
    if version > SCHEMA_VERSION {
        return Err(LedgerError::Corrupt(format!(
            "database schema version {version} is newer than this build ({SCHEMA_VERSION})"
        )));
    }
    if version < 0 {
        return Err(LedgerError::Corrupt(format!(
            "database schema version {version} is negative"
        )));
    }
    // `version` is within 0..=SCHEMA_VERSION here: skip the migrations already applied.
    let start = usize::try_from(version).map_err(|_| LedgerError::Overflow)?;
    for migration in MIGRATIONS.iter().skip(start) {
        tx.execute_batch(migration)?;
    }
    if version == 0 {
        for account in [ACCOUNT_BANK_CLEARING, ACCOUNT_POSTAGE_SOLD] {
            tx.execute(
                "INSERT INTO accounts (id, balance) VALUES (?1, 0)",
                [account],
            )?;
        }
    }
    if stored.is_none() {
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            [SCHEMA_VERSION],
        )?;
    } else {
        tx.execute("UPDATE schema_version SET version = ?1", [SCHEMA_VERSION])?;
    }
    let rows: i64 = tx.query_row("SELECT COUNT(*) FROM schema_version", [], |r| r.get(0))?;
    if rows != 1 {
        return Err(LedgerError::Corrupt(format!(
            "schema_version holds {rows} rows"
        )));
    }
    let broken: i64 = tx.query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| {
        r.get(0)
    })?;
    if broken != 0 {
        return Err(LedgerError::Corrupt(format!(
            "{broken} rows break a foreign key after migrating"
        )));
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Version 4 rebuilds `items` and `transfers`, which `transfers` and `payouts` name by
    /// foreign key: a version-3 ledger with money in it keeps every row and every link.
    #[test]
    fn a_version_3_ledger_with_items_payouts_and_a_closure_migrates_whole() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "foreign_keys", "ON").unwrap();
        for migration in &MIGRATIONS[..3] {
            conn.execute_batch(migration).unwrap();
        }
        conn.execute_batch(
            "CREATE TABLE schema_version (version INTEGER NOT NULL) STRICT;
             INSERT INTO schema_version VALUES (3);
             INSERT INTO users VALUES (1, 'ann', 'k1', 'Ann', '1 Main St', 'Boston', 'MA',
                 '02134', 'hash', x'00', 'user', 0, NULL, 1);
             INSERT INTO accounts VALUES ('bank_clearing', -9220), ('postage_sold', 780),
                 ('customer:1', 7660), ('reserved:1', 780);
             INSERT INTO meters VALUES (1, 'SL0100000001', 'LIC1', 1560, 7660, 2, NULL);
             INSERT INTO payments VALUES ('pay-1', 1, 'card', 10000, 'tok', '4242', 1);
             INSERT INTO items (serial, user_id, kind, amount_mills, piece, status, bytes,
                     issued_at_ms, confirm_by_ms, settled_at_ms, session, reprints)
                 VALUES ('SL0100000001-1', 1, 'postage', 780, 1, 'printed', x'0102', 2, NULL, 3,
                         NULL, 0),
                        ('SL0100000001-2', 1, 'postage', 780, 2, 'issued', x'0304', 4, 9, NULL,
                         NULL, 0);
             INSERT INTO transfers (id, at_ms, from_account, to_account, amount_mills, kind,
                     item_serial, payment_id)
                 VALUES (1, 1, 'bank_clearing', 'customer:1', 10000, 'fund', NULL, 'pay-1'),
                        (2, 2, 'customer:1', 'reserved:1', 780, 'reserve', 'SL0100000001-1', NULL),
                        (3, 3, 'reserved:1', 'postage_sold', 780, 'post', 'SL0100000001-1', NULL),
                        (4, 4, 'customer:1', 'reserved:1', 780, 'reserve', 'SL0100000001-2', NULL),
                        (5, 5, 'customer:1', 'bank_clearing', 780, 'payout', NULL, 'pay-1');
             INSERT INTO payouts VALUES ('ref-0', 'pay-1', 1, 780, 5, 5);
             INSERT INTO closures VALUES (1, 6, 0);",
        )
        .unwrap();
        let count = |conn: &Connection, table: &str| -> i64 {
            conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
                .unwrap()
        };
        let tables = [
            "users",
            "accounts",
            "meters",
            "payments",
            "items",
            "transfers",
            "payouts",
        ];
        let before: Vec<i64> = tables.iter().map(|t| count(&conn, t)).collect();
        migrate(&mut conn).unwrap();
        let after: Vec<i64> = tables.iter().map(|t| count(&conn, t)).collect();
        let mut expected = before.clone();
        // Version 10 adds the liability accounts of value items (outstanding:KIND).
        expected[1] += 3;
        assert_eq!(after, expected);
        let keys_on: i64 = conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(keys_on, 1, "foreign keys are on again");
        assert_eq!(count(&conn, "pragma_foreign_key_check"), 0);
        let pending: (String, Vec<u8>, Option<i64>) = conn
            .query_row(
                "SELECT status, bytes, confirm_by_ms FROM items WHERE serial = 'SL0100000001-2'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(pending, ("issued".to_owned(), vec![3, 4], Some(9)));
        let linked: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM payouts p JOIN transfers t ON t.id = p.transfer_id
                 WHERE t.kind = 'payout' AND t.payment_id = 'pay-1'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(linked, 1, "the payout still names its transfer");
        let closure: (i64, Option<String>, Option<String>) = conn
            .query_row(
                "SELECT finished, request_id, plan FROM closures WHERE user_id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(
            closure,
            (1, None, None),
            "an earlier closure was finished in one step"
        );
        assert!(
            conn.execute(
                "UPDATE items SET status = 'bogus' WHERE serial = 'SL0100000001-2'",
                []
            )
            .is_err(),
            "the rebuilt status check still holds"
        );
    }

    #[test]
    fn a_version_1_database_keeps_its_transfers_and_learns_payouts() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "foreign_keys", "ON").unwrap();
        conn.execute_batch(V1).unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_version (version INTEGER NOT NULL) STRICT;
             INSERT INTO schema_version VALUES (1);
             INSERT INTO accounts VALUES ('bank_clearing', -5), ('customer:1', 5);
             INSERT INTO transfers (at_ms, from_account, to_account, amount_mills, kind)
                 VALUES (1, 'bank_clearing', 'customer:1', 5, 'fund');",
        )
        .unwrap();
        let payout = "INSERT INTO transfers (at_ms, from_account, to_account, amount_mills, kind)
                      VALUES (2, 'customer:1', 'bank_clearing', 5, 'payout')";
        assert!(
            conn.execute(payout, []).is_err(),
            "version 1 refuses payouts"
        );
        migrate(&mut conn).unwrap();
        let version: i64 = conn
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let kept: (i64, String) = conn
            .query_row("SELECT amount_mills, kind FROM transfers", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(kept, (5, "fund".to_owned()));
        conn.execute(payout, []).unwrap();
        assert!(
            conn.execute(
                "INSERT INTO transfers (at_ms, from_account, to_account, amount_mills, kind)
                 VALUES (3, 'customer:1', 'bank_clearing', 5, 'gift')",
                []
            )
            .is_err()
        );
    }
}
