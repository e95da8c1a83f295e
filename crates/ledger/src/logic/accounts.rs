//! Users and logins: registration (the user, the two accounts and the meter at zero), the user
//! records login reads, and the failed logins per (user name, source) that back that source off
//! for a while (`login_throttles`; the `users.failed_logins` and `locked_until_ms` columns of
//! earlier versions are no longer read or written).

use super::Ctx;
use super::audit_log::{ACTOR_SYSTEM, append_audit_entry, user_actor};
use super::meter::{Meter, check_user_invariants, lock_meter, seal_of};
use super::values::check_text;
use crate::sql::{Param, Tx};
use crate::{
    LedgerError, LoginFailure, LoginThrottle, MAX_TEXT_LEN, MAX_WRAPPED_KEY_LEN, NewUser, Role,
    ThrottlePolicy, UserId, UserRecord, customer_account, reserved_account,
};

use Param::{Blob, Int, OptInt, OptText, Text};

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
    if let Some(device_id) = &u.device_id {
        refuse_taken_device(tx, device_id)?;
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
        value_outstanding_mills: 0,
        seal: None,
    };
    let seal = seal_of(ctx, &meter)?;
    tx.exec(
        "INSERT INTO meters (user_id, device_id, license_id, ascending_mills, descending_mills,
             piece, seal)
         VALUES (?1, ?2, ?3, 0, 0, 0, ?4)",
        &[
            Int(id),
            OptText(u.device_id.as_deref()),
            OptText(u.license_id.as_deref()),
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

fn refuse_taken_device(tx: &mut dyn Tx, device_id: &str) -> Result<(), LedgerError> {
    if tx
        .row(
            "SELECT user_id FROM meters WHERE device_id = ?1",
            &[Text(device_id)],
        )?
        .is_some()
    {
        return Err(LedgerError::Invariant(format!(
            "device id {device_id} is already assigned"
        )));
    }
    Ok(())
}

/// Set the licence and device of a meter that has none (the first funding); the same pair again
/// is answered again, another pair is refused. The meter is resealed with its device id.
pub(crate) fn license_meter(
    tx: &mut dyn Tx,
    ctx: Ctx<'_>,
    user_id: UserId,
    license_id: &str,
    device_id: &str,
    now_ms: i64,
) -> Result<(), LedgerError> {
    let meter = lock_meter(tx, ctx, user_id)?;
    match (&meter.license_id, &meter.device_id) {
        (Some(l), Some(d)) if l == license_id && d == device_id => return Ok(()),
        (None, None) => {}
        _ => {
            return Err(LedgerError::Invariant(format!(
                "the meter of user {user_id} is licensed already ({})",
                meter.label()
            )));
        }
    }
    refuse_taken_device(tx, device_id)?;
    let licensed = Meter {
        device_id: Some(device_id.to_owned()),
        license_id: Some(license_id.to_owned()),
        ..meter.clone()
    };
    let seal = seal_of(ctx, &licensed)?;
    let changed = tx.exec(
        "UPDATE meters SET device_id = ?1, license_id = ?2, seal = ?3
         WHERE user_id = ?4 AND device_id IS NULL",
        &[
            Text(device_id),
            Text(license_id),
            Param::OptBlob(seal.as_ref().map(|s| s.as_slice())),
            Int(user_id),
        ],
    )?;
    if changed != 1 {
        return Err(LedgerError::Invariant(format!(
            "meter of user {user_id} changed during the transaction"
        )));
    }
    let detail = serde_json::json!({ "device_id": device_id, "license_id": license_id });
    append_audit_entry(
        tx,
        now_ms,
        &user_actor(user_id),
        "licensed",
        &detail.to_string(),
    )?;
    check_user_invariants(tx, ctx, user_id)
}

/// Tables that hold a user's rows while the account was never funded (none of them money).
const UNFUNDED_ROWS: [&str; 2] = ["requests", "auto_refills"];

pub(crate) fn expire_unlicensed_users(
    tx: &mut dyn Tx,
    created_before_ms: i64,
    now_ms: i64,
) -> Result<Vec<String>, LedgerError> {
    let rows = tx.rows(
        "SELECT u.id, u.\"user\", u.created_at_ms FROM users u JOIN meters m ON m.user_id = u.id
         WHERE m.device_id IS NULL AND u.role = 'user' AND u.created_at_ms < ?1
           AND NOT EXISTS (SELECT 1 FROM payments p WHERE p.user_id = u.id)
           AND NOT EXISTS (SELECT 1 FROM items i WHERE i.user_id = u.id)
         ORDER BY u.id",
        &[Int(created_before_ms)],
    )?;
    let mut expired = Vec::with_capacity(rows.len());
    for r in rows {
        let (id, user, created_at_ms) = (r.int(0)?, r.text(1)?, r.int(2)?);
        for account in [customer_account(id), reserved_account(id)] {
            // Never funded: both accounts are at zero and no transfer names them.
            let deleted = tx.exec(
                "DELETE FROM accounts WHERE id = ?1 AND balance = 0
                   AND NOT EXISTS (SELECT 1 FROM transfers t
                                   WHERE t.from_account = ?1 OR t.to_account = ?1)",
                &[Text(&account)],
            )?;
            if deleted != 1 {
                return Err(LedgerError::Invariant(format!(
                    "unfunded user {id} has money in {account}"
                )));
            }
        }
        for table in UNFUNDED_ROWS {
            tx.exec(
                &format!("DELETE FROM {table} WHERE user_id = ?1"),
                &[Int(id)],
            )?;
        }
        // An unfunded user may have been named a redeemer (it issued nothing: no licence).
        tx.exec(
            "DELETE FROM redeemers WHERE issuer_id = ?1 OR redeemer_id = ?1",
            &[Int(id)],
        )?;
        tx.exec(
            "DELETE FROM meters WHERE user_id = ?1 AND device_id IS NULL AND ascending_mills = 0
               AND descending_mills = 0",
            &[Int(id)],
        )?;
        tx.exec("DELETE FROM users WHERE id = ?1", &[Int(id)])?;
        let detail = serde_json::json!({
            "user": id,
            "reason": "never funded",
            "registered_at_ms": created_at_ms,
        });
        append_audit_entry(tx, now_ms, ACTOR_SYSTEM, "expired", &detail.to_string())?;
        expired.push(user);
    }
    Ok(expired)
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
    match (&u.license_id, &u.device_id) {
        (Some(license_id), Some(device_id)) => {
            check_text("license_id", license_id, 1, MAX_TEXT_LEN)?;
            check_text("device_id", device_id, 1, MAX_TEXT_LEN)?;
        }
        (None, None) => {}
        _ => {
            return Err(LedgerError::InvalidInput(
                "a licence and a device id come together".into(),
            ));
        }
    }
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
                u.role, u.user_key, u.name, u.address, u.city, u.state, u.zip, u.locked_until_ms
         FROM users u JOIN meters m ON m.user_id = u.id WHERE {condition}{}",
        tx.for_update()
    );
    let Some(r) = tx.row(&sql, &[param])? else {
        return Ok(None);
    };
    let role = r.text(6)?;
    Ok(Some(UserRecord {
        id: r.int(0)?,
        user: r.text(1)?,
        password_hash: r.text(2)?,
        wrapped_link_key: r.blob(3)?,
        user_key: r.text(7)?,
        name: r.text(8)?,
        address: r.text(9)?,
        city: r.text(10)?,
        state: r.text(11)?,
        zip: r.text(12)?,
        device_id: r.opt_text(4)?,
        license_id: r.opt_text(5)?,
        role: Role::parse(&role)
            .ok_or_else(|| LedgerError::Corrupt(format!("unknown role {role:?}")))?,
        locked: r.opt_int(13)?.is_some(),
    }))
}

pub(crate) fn login_throttle(
    tx: &mut dyn Tx,
    user_key: &str,
    source: &str,
    now_ms: i64,
) -> Result<Option<i64>, LedgerError> {
    let row = tx.row(
        "SELECT until_ms FROM login_throttles
         WHERE user_key = ?1 AND source = ?2 AND until_ms > ?3",
        &[Text(user_key), Text(source), Int(now_ms)],
    )?;
    row.map(|r| r.int(0)).transpose()
}

/// Forgets the pairs whose time is up: no failure for `max_ms` after their back-off ended.
fn forget_expired_throttles(tx: &mut dyn Tx, now_ms: i64) -> Result<(), LedgerError> {
    tx.exec(
        "DELETE FROM login_throttles WHERE expires_at_ms <= ?1",
        &[Int(now_ms)],
    )?;
    Ok(())
}

pub(crate) fn record_login_failure(
    tx: &mut dyn Tx,
    f: &LoginFailure,
    policy: ThrottlePolicy,
    now_ms: i64,
) -> Result<Option<i64>, LedgerError> {
    forget_expired_throttles(tx, now_ms)?;
    // Insert-then-lock, so that servers sharing a database count every failure once.
    tx.exec(
        "INSERT INTO login_throttles (user_key, source, failures, until_ms, expires_at_ms)
         VALUES (?1, ?2, 0, NULL, ?3) ON CONFLICT (user_key, source) DO NOTHING",
        &[Text(&f.user_key), Text(&f.source), Int(now_ms)],
    )?;
    let sql = format!(
        "SELECT failures, until_ms FROM login_throttles WHERE user_key = ?1 AND source = ?2{}",
        tx.for_update()
    );
    let r = tx
        .row(&sql, &[Text(&f.user_key), Text(&f.source)])?
        .ok_or_else(|| LedgerError::Invariant("login throttle row vanished".into()))?;
    let done = r.int(0)?;
    let done = u32::try_from(done)
        .map_err(|_| LedgerError::Corrupt(format!("login throttle failures: {done}")))?;
    let refusing = r.opt_int(1)?.filter(|&until| until > now_ms);
    let (failures, until_ms, counted) = match refusing {
        Some(until) => (done, Some(until), false),
        None => {
            let failures = done.saturating_add(1);
            let back_off = policy.back_off_ms(failures);
            let until = (back_off > 0).then(|| now_ms.saturating_add(back_off));
            (failures, until, true)
        }
    };
    if counted {
        let expires = until_ms.unwrap_or(now_ms).saturating_add(policy.max_ms);
        tx.exec(
            "UPDATE login_throttles SET failures = ?1, until_ms = ?2, expires_at_ms = ?3
             WHERE user_key = ?4 AND source = ?5",
            &[
                Int(i64::from(failures)),
                OptInt(until_ms),
                Int(expires),
                Text(&f.user_key),
                Text(&f.source),
            ],
        )?;
    }
    let detail = serde_json::json!({
        "user": f.user_key,
        "source": f.source,
        "failures": failures,
        "refused_until_ms": until_ms,
        "counted": counted,
        "detail": f.detail,
    });
    let actor = f.user.map_or_else(|| "login".to_owned(), user_actor);
    append_audit_entry(tx, now_ms, &actor, "login_failed", &detail.to_string())?;
    Ok(until_ms)
}

pub(crate) fn record_login_success(
    tx: &mut dyn Tx,
    id: UserId,
    source: &str,
    now_ms: i64,
    detail: &str,
) -> Result<(), LedgerError> {
    let user = tx
        .row("SELECT user_key FROM users WHERE id = ?1", &[Int(id)])?
        .ok_or(LedgerError::UnknownUser)?;
    let user_key = user.text(0)?;
    tx.exec(
        "DELETE FROM login_throttles WHERE user_key = ?1 AND source = ?2",
        &[Text(&user_key), Text(source)],
    )?;
    append_audit_entry(tx, now_ms, &user_actor(id), "login", detail)
}

pub(crate) fn login_throttles(
    tx: &mut dyn Tx,
    now_ms: i64,
) -> Result<Vec<LoginThrottle>, LedgerError> {
    let rows = tx.rows(
        "SELECT user_key, source, failures, until_ms FROM login_throttles
         WHERE expires_at_ms > ?1 ORDER BY user_key, source",
        &[Int(now_ms)],
    )?;
    rows.into_iter()
        .map(|r| {
            let failures = r.int(2)?;
            Ok(LoginThrottle {
                user_key: r.text(0)?,
                source: r.text(1)?,
                failures: u32::try_from(failures).map_err(|_| {
                    LedgerError::Corrupt(format!("login throttle failures: {failures}"))
                })?,
                until_ms: r.opt_int(3)?.filter(|&until| until > now_ms),
            })
        })
        .collect()
}

pub(crate) fn clear_login_throttles(
    tx: &mut dyn Tx,
    user_key: &str,
    actor: &str,
    now_ms: i64,
) -> Result<u64, LedgerError> {
    let cleared = tx.exec(
        "DELETE FROM login_throttles WHERE user_key = ?1",
        &[Text(user_key)],
    )?;
    let detail = serde_json::json!({ "user": user_key, "cleared": cleared });
    append_audit_entry(
        tx,
        now_ms,
        actor,
        "login_throttles_cleared",
        &detail.to_string(),
    )?;
    Ok(cleared)
}

/// Locks (an administrator's `admin lock`: `users.locked_until_ms` set, to the end of time) or
/// unlocks the user; returns whether that changed anything. Audit "user_locked" or
/// "user_unlocked" by `actor`.
pub(crate) fn set_user_locked(
    tx: &mut dyn Tx,
    user_key: &str,
    locked: bool,
    actor: &str,
    now_ms: i64,
) -> Result<bool, LedgerError> {
    let changed = if locked {
        tx.exec(
            "UPDATE users SET locked_until_ms = ?1 WHERE user_key = ?2 AND locked_until_ms IS NULL",
            &[Int(i64::MAX), Text(user_key)],
        )?
    } else {
        tx.exec(
            "UPDATE users SET locked_until_ms = NULL
             WHERE user_key = ?1 AND locked_until_ms IS NOT NULL",
            &[Text(user_key)],
        )?
    };
    if changed > 0 {
        let detail = serde_json::json!({ "user": user_key });
        let action = if locked {
            "user_locked"
        } else {
            "user_unlocked"
        };
        append_audit_entry(tx, now_ms, actor, action, &detail.to_string())?;
    }
    Ok(changed > 0)
}
