//! The data directory is the server's alone: mode 0700 for it and every directory of the server's
//! in it, 0600 for every file the server keeps (the ledger holds password hashes, addresses, card tokens and wrapped keys; the
//! device's key files, the TLS key, the sandboxes' state, the anchor). Files are created with
//! their mode (no umask change: it is process-wide); a data dir from an older version, made with
//! the umask's modes, is tightened when the server opens it, with a log line.

use std::fs;
use std::io;
use std::path::Path;

/// Mode of the data dir and every directory in it.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file in the data dir.
pub const FILE_MODE: u32 = 0o600;

/// What the server keeps in its data dir: these entries (and everything under the directories
/// among them) are tightened. Anything else an operator put there is left as it is (the dir's
/// own 0700 already keeps other users out): a data dir pointed at a directory that holds other
/// files must not have their modes, executable bits included, rewritten.
const OWN_ENTRIES: [&str; 7] = [
    "ledger.sqlite",
    "psd",
    "tls",
    "internal",
    "trust.pem",
    "audit-anchor.json",
    "sandbox-",
];

/// Whether `name` is one of the server's own entries (a prefix: `ledger.sqlite-wal`,
/// `sandbox-bank.json.journal`, a crash's `.tmp` file next to one).
fn is_own(name: &str) -> bool {
    OWN_ENTRIES.iter().any(|own| name.starts_with(own))
}

/// Create `dir` (and missing parents) with mode 0700, or tighten an existing one; then tighten
/// the server's own directories and files in it.
pub fn prepare(dir: &Path) -> io::Result<()> {
    private_dir(dir)?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_str().is_some_and(is_own) {
            tighten_entry(&entry)?;
        }
    }
    Ok(())
}

/// Create `dir` with mode 0700 if it is missing; an existing one is set to 0700.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)?;
        tighten(dir, DIR_MODE)
    }
    #[cfg(not(unix))]
    fs::create_dir_all(dir)
}

/// Create an empty `path` with mode 0600 if it is missing (for files another library creates,
/// such as SQLite's database, whose `-wal` and `-shm` files then get the same mode).
pub fn private_file(path: &Path) -> io::Result<()> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(FILE_MODE);
    }
    opts.open(path)?;
    #[cfg(unix)]
    tighten(path, FILE_MODE)?;
    Ok(())
}

/// Sets a directory (and every directory under it) to 0700 and every file to 0600 (symbolic
/// links are left alone, never followed).
fn tighten_entry(entry: &fs::DirEntry) -> io::Result<()> {
    let kind = entry.file_type()?;
    if kind.is_dir() {
        #[cfg(unix)]
        tighten(&entry.path(), DIR_MODE)?;
        for inner in fs::read_dir(entry.path())? {
            tighten_entry(&inner?)?;
        }
    } else if kind.is_file() {
        #[cfg(unix)]
        tighten(&entry.path(), FILE_MODE)?;
    }
    Ok(())
}

/// Sets `path` to `mode` when it has any other permission bits, with a log line.
#[cfg(unix)]
fn tighten(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let now = fs::symlink_metadata(path)?.permissions().mode() & 0o7777;
    if now != mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
        tracing::warn!(
            path = %path.display(),
            was = format!("{now:o}"),
            now = format!("{mode:o}"),
            "tightened the mode of a data dir entry (the data dir is the server's alone)"
        );
    }
    Ok(())
}

#[cfg(all(test, unix))]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_new_data_dir_is_0700_and_its_precreated_files_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/data");
        prepare(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let db = dir.join("ledger.sqlite");
        private_file(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
    }

    #[test]
    fn an_older_data_dir_is_tightened_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        fs::create_dir_all(dir.join("psd")).unwrap();
        fs::write(dir.join("ledger.sqlite"), b"x").unwrap();
        fs::write(dir.join("psd/keys.json"), b"x").unwrap();
        for (p, m) in [
            (dir.clone(), 0o755),
            (dir.join("psd"), 0o755),
            (dir.join("ledger.sqlite"), 0o644),
            (dir.join("psd/keys.json"), 0o664),
        ] {
            fs::set_permissions(&p, fs::Permissions::from_mode(m)).unwrap();
        }
        prepare(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("psd")), 0o700);
        assert_eq!(mode(&dir.join("ledger.sqlite")), 0o600);
        assert_eq!(mode(&dir.join("psd/keys.json")), 0o600);
    }

    #[test]
    fn what_the_operator_keeps_in_the_data_dir_is_left_as_it_is() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        fs::create_dir_all(dir.join("notes")).unwrap();
        fs::write(dir.join("backup.sh"), b"#!/bin/sh\n").unwrap();
        fs::write(dir.join("sandbox-bank.json.journal"), b"").unwrap();
        for (p, m) in [
            (dir.join("notes"), 0o755),
            (dir.join("backup.sh"), 0o755),
            (dir.join("sandbox-bank.json.journal"), 0o644),
        ] {
            fs::set_permissions(&p, fs::Permissions::from_mode(m)).unwrap();
        }
        prepare(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(
            mode(&dir.join("backup.sh")),
            0o755,
            "an executable lost its bits"
        );
        assert_eq!(mode(&dir.join("notes")), 0o755);
        assert_eq!(mode(&dir.join("sandbox-bank.json.journal")), 0o600);
    }
}
