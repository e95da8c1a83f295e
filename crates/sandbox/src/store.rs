//! A small durable JSON state file: read at open, rewritten atomically (temp file, fsync, rename;
//! mode 0600) after every change.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug)]
pub(crate) struct JsonState<T> {
    path: Option<PathBuf>,
    state: Mutex<T>,
}

impl<T: Serialize + DeserializeOwned + Default> JsonState<T> {
    /// `None` keeps the state in memory only.
    pub(crate) fn open(path: Option<&Path>) -> std::io::Result<JsonState<T>> {
        let state = match path {
            Some(p) if p.exists() => serde_json::from_slice(&fs::read(p)?)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?,
            _ => T::default(),
        };
        Ok(JsonState {
            path: path.map(Path::to_path_buf),
            state: Mutex::new(state),
        })
    }

    /// Run `f` on the state; if it succeeds, persist the new state before returning.
    pub(crate) fn update<R, E: From<std::io::Error>>(
        &self,
        f: impl FnOnce(&mut T) -> Result<R, E>,
    ) -> Result<R, E> {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let result = f(&mut guard)?;
        if let Some(path) = &self.path {
            let bytes = serde_json::to_vec_pretty(&*guard)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            // Mode 0600: the state holds card tokens and account numbers' last digits.
            stampline_https::serve::write_file(path, &bytes, true)?;
        }
        Ok(result)
    }

    pub(crate) fn read<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        let guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&guard)
    }
}
