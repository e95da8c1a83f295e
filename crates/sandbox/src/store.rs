//! A small durable JSON state: a snapshot file (`PATH`, the whole state as one JSON object) and a
//! journal next to it (`PATH.journal`, one JSON line per change, fsynced before the change is
//! answered). A change line holds what the change touched: the new value of each scalar field and,
//! for each [`Table`], only the rows it wrote; replaying merges them over the snapshot, row by row.
//! Opening replays the journal (a torn last line — a crash during the append — is dropped) and
//! compacts: the snapshot is rewritten (temp file, fsync, rename; mode 0600 like the journal) and
//! the journal emptied. The
//! journal is also compacted when it grows past [`COMPACT_FACTOR`] times the snapshot, so an
//! update costs one short append, not a rewrite of everything.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The journal is compacted into the snapshot when it is this many times the snapshot's size
/// (and at least [`MIN_COMPACT_BYTES`]).
pub(crate) const COMPACT_FACTOR: u64 = 4;
/// A journal smaller than this is never compacted while open.
pub(crate) const MIN_COMPACT_BYTES: u64 = 1 << 20;

/// Rows keyed by a string; the rows written since the last change line are remembered, so a
/// change line carries them and nothing else.
#[derive(Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Table<V> {
    rows: BTreeMap<String, V>,
    #[serde(skip)]
    touched: BTreeSet<String>,
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        Table {
            rows: BTreeMap::new(),
            touched: BTreeSet::new(),
        }
    }
}

impl<V> Table<V> {
    pub(crate) fn get(&self, key: &str) -> Option<&V> {
        self.rows.get(key)
    }

    pub(crate) fn contains_key(&self, key: &str) -> bool {
        self.rows.contains_key(key)
    }

    /// The row to change in place (it is written to the journal with the change).
    pub(crate) fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        let row = self.rows.get_mut(key)?;
        if !self.touched.contains(key) {
            self.touched.insert(key.to_owned());
        }
        Some(row)
    }

    pub(crate) fn insert(&mut self, key: String, row: V) {
        self.touched.insert(key.clone());
        self.rows.insert(key, row);
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.rows.values()
    }
}

/// What one update changed, as the journal line's JSON object.
#[derive(Default)]
pub(crate) struct Changes(Map<String, Value>);

impl Changes {
    /// A scalar field's value (small: written with every change).
    pub(crate) fn scalar(&mut self, field: &str, value: &impl Serialize) -> serde_json::Result<()> {
        self.0
            .insert(field.to_owned(), serde_json::to_value(value)?);
        Ok(())
    }

    /// The rows of `table` written since the last change line.
    pub(crate) fn table<V: Serialize>(
        &mut self,
        field: &str,
        table: &mut Table<V>,
    ) -> serde_json::Result<()> {
        if table.touched.is_empty() {
            return Ok(());
        }
        let mut rows = Map::new();
        for key in std::mem::take(&mut table.touched) {
            if let Some(row) = table.rows.get(&key) {
                rows.insert(key, serde_json::to_value(row)?);
            }
        }
        self.0.insert(field.to_owned(), Value::Object(rows));
        Ok(())
    }
}

/// A state kept by [`JsonState`]: it names its fields for the journal.
pub(crate) trait Journaled: Serialize + DeserializeOwned + Default {
    /// Every scalar field (with [`Changes::scalar`]) and every table (with [`Changes::table`]).
    fn changes(&mut self, out: &mut Changes) -> serde_json::Result<()>;
}

/// Merge one change line over the state: a table's rows replace rows of the same key, any other
/// field is replaced whole.
fn merge(state: &mut Map<String, Value>, change: Map<String, Value>) {
    for (field, value) in change {
        match (state.get_mut(&field), value) {
            (Some(Value::Object(rows)), Value::Object(new_rows)) => rows.extend(new_rows),
            (_, value) => {
                state.insert(field, value);
            }
        }
    }
}

fn invalid(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}

#[derive(Debug)]
struct Files {
    snapshot: PathBuf,
    journal: fs::File,
    journal_bytes: u64,
    snapshot_bytes: u64,
}

impl Files {
    /// Rewrite the snapshot from `state` (temp file, fsync, rename), then empty the journal. A
    /// crash between the two replays the journal over the new snapshot, which changes nothing:
    /// every line sets values, the last one wins.
    fn compact(&mut self, state: &impl Serialize) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(state).map_err(invalid)?;
        // Mode 0600: the state holds card tokens and account numbers' last digits.
        stampline_https::serve::write_file(&self.snapshot, &bytes, true)?;
        self.journal.set_len(0)?;
        self.journal.sync_all()?;
        self.journal_bytes = 0;
        self.snapshot_bytes = bytes.len() as u64;
        Ok(())
    }

    /// Append one change line, fsynced; a failed append is cut off again, so the journal holds
    /// whole lines only.
    fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        if let Err(e) = self
            .journal
            .write_all(line)
            .and_then(|()| self.journal.sync_data())
        {
            let _ = self.journal.set_len(self.journal_bytes);
            return Err(e);
        }
        self.journal_bytes += line.len() as u64;
        Ok(())
    }

    /// Whether the journal has grown enough to fold it into the snapshot.
    fn wants_compaction(&self) -> bool {
        self.journal_bytes >= MIN_COMPACT_BYTES
            && self.journal_bytes >= self.snapshot_bytes.saturating_mul(COMPACT_FACTOR)
    }
}

#[derive(Debug)]
struct Inner<T> {
    state: T,
    files: Option<Files>,
    /// Set when a change could not be written and the state could not be read back from disk
    /// either: memory may hold what the disk does not, so every later change is refused.
    broken: Option<String>,
}

#[derive(Debug)]
pub(crate) struct JsonState<T> {
    inner: Mutex<Inner<T>>,
}

/// The journal's path next to the snapshot's.
pub(crate) fn journal_path(snapshot: &Path) -> PathBuf {
    let mut name = snapshot.as_os_str().to_owned();
    name.push(".journal");
    PathBuf::from(name)
}

/// Read the snapshot and replay the journal over it. A last line that does not parse (torn by a
/// crash during its append; it was never answered) is dropped; a bad line before it is an error.
fn load(snapshot: &Path, journal: &Path) -> std::io::Result<Map<String, Value>> {
    let mut state = if snapshot.exists() {
        match serde_json::from_slice(&fs::read(snapshot)?).map_err(invalid)? {
            Value::Object(map) => map,
            _ => return Err(invalid("the state file is not a JSON object")),
        }
    } else {
        Map::new()
    };
    if journal.exists() {
        let lines: Vec<Vec<u8>> = std::io::BufReader::new(fs::File::open(journal)?)
            .split(b'\n')
            .collect::<Result<_, _>>()?;
        let last = lines.len().saturating_sub(1);
        for (i, line) in lines.into_iter().enumerate() {
            match serde_json::from_slice::<Map<String, Value>>(&line) {
                Ok(change) => merge(&mut state, change),
                Err(_) if i == last => {
                    tracing::warn!(journal = %journal.display(), "dropped a torn last journal line");
                }
                Err(e) => {
                    return Err(invalid(format!(
                        "{} line {}: {e}",
                        journal.display(),
                        i + 1
                    )));
                }
            }
        }
    }
    Ok(state)
}

/// The state on disk: the snapshot with the journal replayed (an empty state when neither exists).
fn load_state<T: DeserializeOwned + Default>(snapshot: &Path) -> std::io::Result<T> {
    let map = load(snapshot, &journal_path(snapshot))?;
    if map.is_empty() {
        Ok(T::default())
    } else {
        serde_json::from_value(Value::Object(map)).map_err(invalid)
    }
}

/// A state file as JSON (the snapshot with its journal replayed), without opening it: for tests
/// and tools that look at a sandbox's state while a server keeps it.
pub fn state_json(path: &Path) -> std::io::Result<Value> {
    load(path, &journal_path(path)).map(Value::Object)
}

impl<T: Journaled> JsonState<T> {
    /// `None` keeps the state in memory only.
    pub(crate) fn open(path: Option<&Path>) -> std::io::Result<JsonState<T>> {
        let Some(snapshot) = path else {
            return Ok(JsonState {
                inner: Mutex::new(Inner {
                    state: T::default(),
                    files: None,
                    broken: None,
                }),
            });
        };
        let journal_path = journal_path(snapshot);
        let state: T = load_state(snapshot)?;
        let mut options = fs::OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let journal = options.open(&journal_path)?;
        let mut files = Files {
            snapshot: snapshot.to_path_buf(),
            journal,
            journal_bytes: 0,
            snapshot_bytes: 0,
        };
        files.compact(&state)?;
        Ok(JsonState {
            inner: Mutex::new(Inner {
                state,
                files: Some(files),
                broken: None,
            }),
        })
    }

    /// Run `f` on the state; if it succeeds, journal what it changed before returning. When the
    /// change cannot be written, the state is read back from disk (so memory never holds what was
    /// not made durable) and the error returned; a failed compaction only leaves the journal
    /// longer.
    pub(crate) fn update<R, E: From<std::io::Error>>(
        &self,
        f: impl FnOnce(&mut T) -> Result<R, E>,
    ) -> Result<R, E> {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *guard;
        if let Some(why) = &inner.broken {
            return Err(E::from(std::io::Error::other(format!(
                "the state store is broken ({why}); restart to read it from disk"
            ))));
        }
        let result = f(&mut inner.state)?;
        let mut changes = Changes::default();
        inner.state.changes(&mut changes).map_err(invalid)?;
        let Some(files) = &mut inner.files else {
            return Ok(result);
        };
        let mut line = serde_json::to_vec(&changes.0).map_err(invalid)?;
        line.push(b'\n');
        if let Err(e) = files.append(&line) {
            match load_state::<T>(&files.snapshot) {
                Ok(durable) => inner.state = durable,
                Err(reload) => inner.broken = Some(format!("{e}; reading it back: {reload}")),
            }
            return Err(E::from(e));
        }
        if files.wants_compaction()
            && let Err(e) = files.compact(&inner.state)
        {
            tracing::warn!(error = %e, "could not compact a sandbox journal; it stays longer");
        }
        Ok(result)
    }

    pub(crate) fn read<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&guard.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Serialize, Deserialize)]
    struct Counter {
        next: u32,
        rows: Table<String>,
    }

    impl Journaled for Counter {
        fn changes(&mut self, out: &mut Changes) -> serde_json::Result<()> {
            out.scalar("next", &self.next)?;
            out.table("rows", &mut self.rows)
        }
    }

    fn add(state: &JsonState<Counter>, text: &str) {
        state
            .update(|c| {
                c.next += 1;
                c.rows.insert(format!("r{}", c.next), text.to_owned());
                Ok::<_, std::io::Error>(())
            })
            .unwrap();
    }

    fn journal_bytes(state: &JsonState<Counter>) -> u64 {
        state
            .inner
            .lock()
            .unwrap()
            .files
            .as_ref()
            .unwrap()
            .journal_bytes
    }

    #[test]
    fn a_change_that_cannot_be_written_is_not_kept_in_memory_either() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let state = JsonState::<Counter>::open(Some(&path)).unwrap();
        add(&state, "one");
        // The journal can no longer be written (a read-only handle in place of it).
        {
            let mut inner = state.inner.lock().unwrap();
            let files = inner.files.as_mut().unwrap();
            files.journal = fs::File::open(journal_path(&path)).unwrap();
        }
        let failed = state.update(|c| {
            c.next += 1;
            c.rows.insert("r2".into(), "two".into());
            Ok::<_, std::io::Error>(())
        });
        assert!(failed.is_err());
        // Memory holds what the disk holds: the first change, not the second.
        assert_eq!(
            state.read(|c| (c.next, c.rows.contains_key("r2"))),
            (1, false)
        );
        drop(state);
        let reopened = JsonState::<Counter>::open(Some(&path)).unwrap();
        assert_eq!(
            reopened.read(|c| (c.next, c.rows.contains_key("r2"))),
            (1, false)
        );
    }

    #[test]
    fn changes_are_appended_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let state = JsonState::<Counter>::open(Some(&path)).unwrap();
        add(&state, "one");
        let after_one = journal_bytes(&state);
        add(&state, "two");
        let after_two = journal_bytes(&state);
        // The second line carries the second row only: about as long as the first.
        assert!(after_two < after_one * 3, "{after_one} then {after_two}");
        state
            .update(|c| {
                *c.rows.get_mut("r1").unwrap() = "uno".into();
                Ok::<_, std::io::Error>(())
            })
            .unwrap();
        drop(state);
        let back = JsonState::<Counter>::open(Some(&path)).unwrap();
        back.read(|c| {
            assert_eq!(c.next, 2);
            assert_eq!(c.rows.get("r1").map(String::as_str), Some("uno"));
            assert_eq!(c.rows.get("r2").map(String::as_str), Some("two"));
        });
        // Opening compacted: the snapshot holds everything, the journal is empty.
        assert_eq!(fs::metadata(journal_path(&path)).unwrap().len(), 0);
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_a_torn_middle_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let state = JsonState::<Counter>::open(Some(&path)).unwrap();
        add(&state, "kept");
        drop(state);
        let journal = journal_path(&path);
        let good = r#"{"next":2,"rows":{"r2":"also kept"}}"#;
        // A good line, then one torn by a crash during its append.
        fs::OpenOptions::new()
            .append(true)
            .open(&journal)
            .unwrap()
            .write_all(format!("{good}\n{{\"next\":3,\"rows\":{{\"r3\":\"to").as_bytes())
            .unwrap();
        let back = JsonState::<Counter>::open(Some(&path)).unwrap();
        back.read(|c| {
            assert_eq!(c.next, 2);
            assert_eq!(c.rows.get("r1").map(String::as_str), Some("kept"));
            assert_eq!(c.rows.get("r2").map(String::as_str), Some("also kept"));
            assert!(!c.rows.contains_key("r3"));
        });
        add(&back, "after");
        drop(back);
        let back = JsonState::<Counter>::open(Some(&path)).unwrap();
        back.read(|c| assert_eq!(c.rows.get("r3").map(String::as_str), Some("after")));
        drop(back);
        fs::write(&journal, format!("{{\"next\":9,\"ro\n{good}\n")).unwrap();
        assert!(JsonState::<Counter>::open(Some(&path)).is_err());
    }

    #[test]
    fn a_long_journal_is_compacted_into_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let state = JsonState::<Counter>::open(Some(&path)).unwrap();
        let row = "x".repeat(4096);
        for _ in 0..300 {
            add(&state, &row);
        }
        let journal = state
            .inner
            .lock()
            .unwrap()
            .files
            .as_ref()
            .unwrap()
            .journal_bytes;
        assert!(journal < MIN_COMPACT_BYTES, "journal is {journal} bytes");
        drop(state);
        let back = JsonState::<Counter>::open(Some(&path)).unwrap();
        back.read(|c| assert_eq!(c.next, 300));
    }
}
