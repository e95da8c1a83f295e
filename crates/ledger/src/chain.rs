//! The audit log's hash chain. Each entry's hash covers the previous entry's hash, its sequence
//! number, its time and its three text fields, so an edited, inserted or deleted entry breaks every
//! hash after it.

/// The `prev_hash` of the first entry.
pub const GENESIS_HASH: [u8; 32] = [0u8; 32];

/// SHA-256(prev_hash || seq (8 bytes BE) || at_ms (8 bytes BE) || actor || action || detail), where
/// each text field is prefixed by its length in bytes (4 bytes BE), so that moving bytes between
/// fields changes the hash.
pub fn entry_hash(
    prev_hash: &[u8; 32],
    seq: i64,
    at_ms: i64,
    actor: &str,
    action: &str,
    detail: &str,
) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(prev_hash);
    ctx.update(&seq.to_be_bytes());
    ctx.update(&at_ms.to_be_bytes());
    for field in [actor, action, detail] {
        // Fields are limited to MAX_AUDIT_FIELD_LEN (16 KiB) before they reach here; saturating
        // keeps the function total anyway.
        let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
        ctx.update(&len.to_be_bytes());
        ctx.update(field.as_bytes());
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_field_boundaries() {
        let a = entry_hash(&GENESIS_HASH, 1, 0, "ab", "c", "");
        let b = entry_hash(&GENESIS_HASH, 1, 0, "a", "bc", "");
        assert_ne!(a, b);
    }

    #[test]
    fn hash_depends_on_previous_hash_seq_and_time() {
        let base = entry_hash(&GENESIS_HASH, 1, 5, "x", "y", "z");
        assert_ne!(base, entry_hash(&[1u8; 32], 1, 5, "x", "y", "z"));
        assert_ne!(base, entry_hash(&GENESIS_HASH, 2, 5, "x", "y", "z"));
        assert_ne!(base, entry_hash(&GENESIS_HASH, 1, 6, "x", "y", "z"));
    }
}
