//! What the label crate's test files share: reproducible bytes, a gray PNG encoder, the
//! independent tools (found on PATH, or skipped; with `STAMPLINE_REQUIRE_ALL=1` a missing tool
//! fails the test instead) and scratch directories for their files.

// Each test file uses part of this module.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
};

/// Deterministic pseudo-random bytes (SplitMix64), so failures are reproducible.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) as u8
        })
        .collect()
}

/// An 8-bit grayscale PNG of `luma` (row by row).
pub fn png_of_luma(width: u32, height: u32, luma: &[u8]) -> Vec<u8> {
    use image::ImageEncoder;
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(luma, width, height, image::ExtendedColorType::L8)
        .unwrap();
    png
}

/// A test finds `what` missing (`why`: what to install): it fails with
/// `STAMPLINE_REQUIRE_ALL=1`, otherwise it says it is skipped.
pub fn skip_or_fail(what: &str, why: &str) {
    if std::env::var("STAMPLINE_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("{what} not available ({why}) and STAMPLINE_REQUIRE_ALL=1");
    }
    println!("skipped: {what} not available ({why})");
}

/// The tool `name` on PATH, or `None` after skipping (see [`skip_or_fail`]); `package` is the
/// Debian package that has it.
pub fn find_tool(name: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        skip_or_fail(name, &format!("Debian package {package}"));
    }
    found
}

/// A scratch directory unique to this process and call, removed on drop.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "stampline-label-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Write `bytes` to the file `name` in the directory; its path.
    pub fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
