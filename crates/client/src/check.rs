//! Checking an item the server sent (or a verifier read) against the published signing keys.

use stampline_items::Item;

use crate::http::PublishedKey;

/// Find the item's key among the published ones and check the signature.
pub fn check_item(bytes: &[u8], keys: &[PublishedKey]) -> Result<Item, String> {
    let item = Item::parse(bytes).map_err(|e| format!("item does not parse: {e}"))?;
    let key_id = item.body.key_id().to_string();
    let key = keys
        .iter()
        .find(|k| k.key_id == key_id)
        .ok_or_else(|| format!("signing key {key_id} is not published"))?;
    item.verify(&key.spki_der)
        .map_err(|e| format!("signature: {e}"))?;
    key_in_force(key, time::OffsetDateTime::now_utc())?;
    Ok(item)
}

/// A signing key's items are accepted until it is revoked or its validity ends.
pub fn key_in_force(key: &PublishedKey, now: time::OffsetDateTime) -> Result<(), String> {
    use time::format_description::well_known::Rfc3339;
    let parse = |t: &str| {
        time::OffsetDateTime::parse(t, &Rfc3339)
            .map_err(|_| format!("signing key {} has a bad time {t:?}", key.key_id))
    };
    if let Some(at) = &key.revoked_at {
        return Err(format!(
            "signing key {} was revoked at {at}: {}",
            key.key_id,
            key.revocation_reason
                .as_deref()
                .unwrap_or("no reason given")
        ));
    }
    if let Some(until) = &key.valid_until
        && parse(until)? < now
    {
        return Err(format!("signing key {} expired at {until}", key.key_id));
    }
    Ok(())
}

/// Today's date (UTC) as `YYYY-MM-DD`: the mailing date when none is given.
pub fn today() -> String {
    time::OffsetDateTime::now_utc().date().to_string()
}
