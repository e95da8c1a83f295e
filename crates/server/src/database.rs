//! Which ledger a server keeps its money in, and the crypto device's register seals.
//!
//! `--database` is `sqlite` (the default: `DIR/ledger.sqlite`) or a `postgres://` URL, which
//! several servers may share. Either way the store seals every meter state with the crypto
//! device ([`PsdSealer`]), so the ledger never holds the key and a register edited behind the
//! server's back freezes that meter.

use std::path::Path;
use std::sync::Arc;

use stampline_ledger::{MeterSealer, PgStore, SqliteStore, Store};
use stampline_psd::Psd;

/// The ledger file in a data dir when the database is SQLite.
pub const SQLITE_FILE: &str = "ledger.sqlite";
/// Environment variable capping the operations per SQLite group commit (1 turns it off); for
/// benchmarks (docs/BENCHMARKS.md). Unset: `stampline_ledger::sqlite::MAX_GROUP_OPS`.
pub const GROUP_MAX_ENV: &str = "STAMPLINE_SQLITE_GROUP_MAX";

/// Where the ledger lives.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// `DIR/ledger.sqlite`.
    Sqlite,
    /// A PostgreSQL URL (it may hold a password, so `Debug` hides it).
    Postgres(String),
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite => f.write_str("Sqlite"),
            Database::Postgres(_) => f.write_str("Postgres(..)"),
        }
    }
}

impl Database {
    /// `None` or "sqlite" → SQLite; `postgres://…` or `postgresql://…` → PostgreSQL.
    pub fn parse(flag: Option<&str>) -> Result<Database, String> {
        match flag {
            None | Some("sqlite") => Ok(Database::Sqlite),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(Database::Postgres(url.to_owned()))
            }
            Some(_) => Err("expected sqlite or a postgres:// URL".into()),
        }
    }
}

/// Register seals by the crypto device: HMAC under its sealing key.
#[derive(Debug)]
pub struct PsdSealer(pub Arc<dyn Psd>);

impl MeterSealer for PsdSealer {
    fn seal(&self, message: &[u8]) -> Result<[u8; 32], String> {
        self.0.seal(message).map_err(|e| e.to_string())
    }
}

/// Opens (creating if needed) the ledger, sealing with `psd` when given.
pub fn open_store(
    database: &Database,
    data_dir: &Path,
    psd: Option<Arc<dyn Psd>>,
) -> anyhow::Result<Arc<dyn Store>> {
    let sealer = psd.map(|psd| Arc::new(PsdSealer(psd)) as Arc<dyn MeterSealer>);
    Ok(match database {
        Database::Sqlite => {
            let path = data_dir.join(SQLITE_FILE);
            // Made 0600 before SQLite opens it: SQLite gives its -wal and -shm files its mode.
            crate::data_dir::private_file(&path)?;
            let mut store = SqliteStore::open(&path)?;
            if let Some(max) = std::env::var(GROUP_MAX_ENV)
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
            {
                store = store.with_max_group(max);
            }
            match sealer {
                Some(s) => Arc::new(store.with_sealer(s)),
                None => Arc::new(store),
            }
        }
        Database::Postgres(url) => {
            let store = PgStore::connect(url)?;
            match sealer {
                Some(s) => Arc::new(store.with_sealer(s)),
                None => Arc::new(store),
            }
        }
    })
}
