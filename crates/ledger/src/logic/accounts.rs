//! Users and logins: registration (the user, the two accounts and the meter at zero), the user
//! records login reads, and the failed-login count that locks a user out for a while.

use super::Ctx;
use super::audit_log::{append_audit_entry, user_actor};
use super::meter::{Meter, check_user_invariants, seal_of};
use super::values::check_text;
use crate::sql::{Param, Tx};
use crate::{
    LedgerError, MAX_TEXT_LEN, MAX_WRAPPED_KEY_LEN, NewUser, Role, UserId, UserRecord,
    customer_account, reserved_account,
};

use Param::{Blob, Int, OptInt, Text};

pub(crate) fn create_user(
    tx: &mut dyn Tx,
    ctx: Ctx<'_>,
    u: &NewUser,
    now_ms: i64,
) -> Result<UserId, LedgerError> {
    let taken = tx.row(
        "SELECT id FROM users WHERE user_key = ?1",
        &[Text(&u.user_key)],
    )?;
    if taken.is_some() {
        return Err(LedgerError::UserExists);
    }
    let device_taken = tx.row(
        "SELECT user_id FROM meters WHERE device_id = ?1",
        &[Text(&u.device_id)],
    )?;
    if device_taken.is_some() {
        return Err(LedgerError::Invariant(format!(
            "device id {} is already assigned",
            u.device_id
        )));
    }
    let id = tx.insert_id(
        "INSERT INTO users (\"user\", user_key, name, address, city, state, zip, password_hash,
                 wrapped_link_key, role, failed_logins, locked_until_ms, created_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 0, NULL, ?11)",
        &[
            Text(&u.user),
            Text(&u.user_key),
            Text(&u.name),
            Text(&u.address),
            Text(&u.city),
            Text(&u.state),
            Text(&u.zip),
            Text(&u.password_hash),
            Blob(&u.wrapped_link_key),
            Text(u.role.as_str()),
            Int(now_ms),
        ],
    )?;
    for account in [customer_account(id), reserved_account(id)] {
        tx.exec(
            "INSERT INTO accounts (id, balance) VALUES (?1, 0)",
            &[Text(&account)],
        )?;
    }
    let meter = Meter {
        user_id: id,
        device_id: u.device_id.clone(),
        license_id: u.license_id.clone(),
        ascending_mills: 0,
        descending_mills: 0,
        piece: 0,
        seal: None,
    };
    let seal = seal_of(ctx, &meter)?;
    tx.exec(
        "INSERT INTO meters (user_id, device_id, license_id, ascending_mills, descending_mills,
             piece, seal)
         VALUES (?1, ?2, ?3, 0, 0, 0, ?4)",
        &[
            Int(id),
            Text(&u.device_id),
            Text(&u.license_id),
            Param::OptBlob(seal.as_ref().map(|s| s.as_slice())),
        ],
    )?;
    let detail = serde_json::json!({
        "user": id,
        "device_id": u.device_id,
        "license_id": u.license_id,
        "role": u.role.as_str(),
    });
    append_audit_entry(tx, now_ms, &user_actor(id), "register", &detail.to_string())?;
    check_user_invariants(tx, ctx, id)?;
    Ok(id)
}

pub(crate) fn validate_new_user(u: &NewUser) -> Result<(), LedgerError> {
    check_text("user", &u.user, 1, MAX_TEXT_LEN)?;
    check_text("user_key", &u.user_key, 1, MAX_TEXT_LEN)?;
    for (what, value) in [
        ("name", &u.name),
        ("address", &u.address),
        ("city", &u.city),
        ("state", &u.state),
        ("zip", &u.zip),
    ] {
        check_text(what, value, 0, MAX_TEXT_LEN)?;
    }
    check_text("password_hash", &u.password_hash, 1, MAX_TEXT_LEN)?;
    check_text("license_id", &u.license_id, 1, MAX_TEXT_LEN)?;
    check_text("device_id", &u.device_id, 1, MAX_TEXT_LEN)?;
    if u.wrapped_link_key.len() > MAX_WRAPPED_KEY_LEN {
        return Err(LedgerError::InvalidInput(
            "wrapped link key too long".into(),
        ));
    }
    Ok(())
}

pub(crate) fn user_by_key(
    tx: &mut dyn Tx,
    user_key: &str,
) -> Result<Option<UserRecord>, LedgerError> {
    load_user(tx, "u.user_key = ?1", Text(user_key))
}

pub(crate) fn user_by_id(tx: &mut dyn Tx, id: UserId) -> Result<Option<UserRecord>, LedgerError> {
    load_user(tx, "u.id = ?1", Int(id))
}

fn load_user(
    tx: &mut dyn Tx,
    condition: &str,
    param: Param<'_>,
) -> Result<Option<UserRecord>, LedgerError> {
    let sql = format!(
        "SELECT u.id, u.\"user\", u.password_hash, u.wrapped_link_key, m.device_id, m.license_id,
                u.role, u.failed_logins, u.locked_until_ms
         FROM users u JOIN meters m ON m.user_id = u.id WHERE {condition}{}",
        tx.for_update()
    );
    let Some(r) = tx.row(&sql, &[param])? else {
        return Ok(None);
    };
    let role = r.text(6)?;
    let fails = r.int(7)?;
    Ok(Some(UserRecord {
        id: r.int(0)?,
        user: r.text(1)?,
        password_hash: r.text(2)?,
        wrapped_link_key: r.blob(3)?,
        device_id: r.text(4)?,
        license_id: r.text(5)?,
        role: Role::parse(&role)
            .ok_or_else(|| LedgerError::Corrupt(format!("unknown role {role:?}")))?,
        failed_logins: u32::try_from(fails)
            .map_err(|_| LedgerError::Corrupt(format!("failed_logins is {fails}")))?,
        locked_until_ms: r.opt_int(8)?,
    }))
}

pub(crate) fn record_login_failure(
    tx: &mut dyn Tx,
    id: UserId,
    now_ms: i64,
    max_failures: u32,
    lockout_ms: i64,
) -> Result<Option<i64>, LedgerError> {
    let user = load_user(tx, "u.id = ?1", Int(id))?.ok_or(LedgerError::UnknownUser)?;
    if let Some(until_ms) = user.locked_until_ms.filter(|&until| until > now_ms) {
        let detail = serde_json::json!({ "locked_until_ms": until_ms, "counted": false });
        log_login_failure(tx, id, now_ms, &detail)?;
        return Ok(Some(until_ms));
    }
    let failures = user.failed_logins.saturating_add(1);
    let (failures, locked_until_ms) = if failures >= max_failures {
        (0, Some(now_ms.saturating_add(lockout_ms)))
    } else {
        (failures, None)
    };
    tx.exec(
        "UPDATE users SET failed_logins = ?1, locked_until_ms = ?2 WHERE id = ?3",
        &[Int(i64::from(failures)), OptInt(locked_until_ms), Int(id)],
    )?;
    let detail = serde_json::json!({
        "failed_logins": failures,
        "locked_until_ms": locked_until_ms,
        "counted": true,
    });
    log_login_failure(tx, id, now_ms, &detail)?;
    Ok(locked_until_ms)
}

/// Audit "login_failed" by the user, with what the failure did to the count and lock.
fn log_login_failure(
    tx: &mut dyn Tx,
    id: UserId,
    now_ms: i64,
    detail: &serde_json::Value,
) -> Result<(), LedgerError> {
    append_audit_entry(
        tx,
        now_ms,
        &user_actor(id),
        "login_failed",
        &detail.to_string(),
    )
}

pub(crate) fn record_login_success(
    tx: &mut dyn Tx,
    id: UserId,
    now_ms: i64,
    detail: &str,
) -> Result<(), LedgerError> {
    let changed = tx.exec(
        "UPDATE users SET failed_logins = 0, locked_until_ms = NULL WHERE id = ?1",
        &[Int(id)],
    )?;
    if changed != 1 {
        return Err(LedgerError::UnknownUser);
    }
    append_audit_entry(tx, now_ms, &user_actor(id), "login", detail)
}
