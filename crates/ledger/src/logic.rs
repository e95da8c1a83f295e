//! The ledger's rules, written once against [`Tx`] and run by every backend. Each `pub(crate) fn`
//! named after a [`Store`](crate::Store) method is that method's body inside one transaction the
//! backend opened; the backend commits when it returns `Ok`.
//!
//! Concurrency: on PostgreSQL several servers run these functions at once under READ COMMITTED.
//! Every operation on a user's money first locks that user's meter row (`lock_meter`), so the
//! operations of one user run one at a time and each sees the previous one's committed rows; shared
//! account rows (`bank_clearing`, `postage_sold`) are locked, in id order, by `transfer`, and the
//! audit chain's head by [`Tx::lock_audit_chain`]. Under SQLite's `BEGIN IMMEDIATE` all of this
//! holds trivially (one writer). Every update is also conditional on the value read, so a missed
//! lock shows up as an `Invariant` error and a rollback, never as a lost update.
//! Amounts are integer mills; all arithmetic is done in Rust with checked operations and the
//! absolute results are written back.

pub(crate) mod payments;

use serde::Serialize;
use serde::de::DeserializeOwned;
use stampline_money::Amount;

use crate::chain;
use crate::sql::{Param, Tx};
use crate::{
    ACCOUNT_BANK_CLEARING, ACCOUNT_POSTAGE_SOLD, BalanceView, FundInput, FundOutcome, IssueInput,
    IssueOutcome, ItemStatus, ItemSummary, LedgerError, MAX_AUDIT_FIELD_LEN, MAX_HISTORY_LIMIT,
    MAX_ITEM_BYTES, MAX_KIND_LEN, MAX_REGISTER_MILLS, MAX_REQUEST_ID_LEN, MAX_SERIAL_LEN,
    MAX_TEXT_LEN, MAX_VOID_BATCH, MAX_WRAPPED_KEY_LEN, MeterSealer, MeterState, NewUser,
    PieceState, ReprintLimits, ReprintOutcome, RequestKey, Role, SignedItem, StatusOutcome, UserId,
    UserRecord, customer_account, reserved_account,
};

use Param::{Blob, Int, OptInt, OptText, Text};

/// The actor of entries the ledger writes on its own (expiry voids).
const ACTOR_SYSTEM: &str = "system";

/// What every operation may need besides the transaction: the register sealer, when the store
/// has one.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub(crate) sealer: Option<&'a dyn MeterSealer>,
}

// ---- Store operations ----

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
        append_audit_entry(
            tx,
            now_ms,
            &user_actor(id),
            "login_failed",
            &detail.to_string(),
        )?;
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
    append_audit_entry(
        tx,
        now_ms,
        &user_actor(id),
        "login_failed",
        &detail.to_string(),
    )?;
    Ok(locked_until_ms)
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

pub(crate) fn find_request(
    tx: &mut dyn Tx,
    user_id: UserId,
    request_id: &str,
) -> Result<Option<([u8; 32], String, String)>, LedgerError> {
    let row = tx.row(
        "SELECT fingerprint, op, outcome_json FROM requests
         WHERE user_id = ?1 AND request_id = ?2",
        &[Int(user_id), Text(request_id)],
    )?;
    row.map(|r| {
        Ok((
            hash32(&r.blob(0)?, "request fingerprint")?,
            r.text(1)?,
            r.text(2)?,
        ))
    })
    .transpose()
}

pub(crate) fn fund(
    tx: &mut dyn Tx,
    ctx: Ctx<'_>,
    key: &RequestKey,
    input: &FundInput,
    now_ms: i64,
) -> Result<FundOutcome, LedgerError> {
    let user_id = key.user_id;
    let meter = lock_meter(tx, ctx, user_id)?;
    if let Some(json) = find_outcome(tx, key, OP_FUND)? {
        return replay(&json);
    }
    let amount = positive_mills(input.amount)?;
    check_text("payment_id", input.payment_id, 1, MAX_TEXT_LEN)?;
    if !matches!(input.method, "card" | "eft") {
        return Err(LedgerError::InvalidInput(
            "payment method must be card or eft".into(),
        ));
    }
    if let Some(token) = input.token {
        check_text("token", token, 1, MAX_TEXT_LEN)?;
    }
    if let Some(last4) = input.last4
        && (last4.len() != 4 || !last4.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(LedgerError::InvalidInput(
            "last4 must be four digits".into(),
        ));
    }
    let known = tx.row(
        "SELECT payment_id FROM payments WHERE payment_id = ?1",
        &[Text(input.payment_id)],
    )?;
    if known.is_some() {
        return Err(LedgerError::DuplicatePayment);
    }
    // A closing account's balance is being paid out as it stands: nothing more comes in.
    if payments::closed_at(tx, user_id)?.is_some() {
        return Err(LedgerError::AccountClosed);
    }
    let new_meter = Meter {
        descending_mills: register_add(meter.descending_mills, amount)?,
        ..meter.clone()
    };
    tx.exec(
        "INSERT INTO payments (payment_id, user_id, method, amount_mills, token, last4, at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        &[
            Text(input.payment_id),
            Int(user_id),
            Text(input.method),
            Int(amount),
            OptText(input.token),
            OptText(input.last4),
            Int(now_ms),
        ],
    )?;
    let transfer_id = transfer(
        tx,
        &Transfer {
            at_ms: now_ms,
            from: ACCOUNT_BANK_CLEARING,
            to: &customer_account(user_id),
            amount_mills: amount,
            kind: KIND_FUND,
            item_serial: None,
            payment_id: Some(input.payment_id),
        },
    )?;
    store_meter(tx, ctx, &meter, &new_meter)?;
    check_user_invariants(tx, ctx, user_id)?;
    let outcome = FundOutcome {
        payment_id: input.payment_id.to_owned(),
        amount_mills: to_u64(amount, "amount")?,
        balance_mills: to_u64(
            balance_of(tx, &customer_account(user_id))?,
            "customer balance",
        )?,
    };
    store_outcome(tx, key, OP_FUND, &outcome, now_ms)?;
    let detail = serde_json::json!({
        "payment_id": input.payment_id,
        "method": input.method,
        "amount_mills": amount,
        "transfer": transfer_id,
    });
    append_audit_entry(
        tx,
        now_ms,
        &user_actor(user_id),
        "fund",
        &detail.to_string(),
    )?;
    Ok(outcome)
}

pub(crate) fn issue(
    tx: &mut dyn Tx,
    ctx: Ctx<'_>,
    key: &RequestKey,
    input: &IssueInput,
    sign: &mut dyn FnMut(&PieceState) -> Result<SignedItem, String>,
    now_ms: i64,
) -> Result<IssueOutcome, LedgerError> {
    let user_id = key.user_id;
    let (meter, balance) = lock_meter_with_balance(tx, ctx, user_id)?;
    if let Some(json) = find_outcome(tx, key, OP_ISSUE)? {
        return replay_issue(tx, user_id, &json);
    }
    let amount = positive_mills(input.amount)?;
    check_text("kind", input.kind, 1, MAX_KIND_LEN)?;
    if let Some(session) = &input.session {
        check_text("session", session, 1, MAX_TEXT_LEN)?;
    }
    payments::refuse_if_locked(tx, user_id)?;
    let customer = customer_account(user_id);
    if balance < amount {
        return Err(LedgerError::InsufficientFunds {
            balance_mills: to_u64(balance, "customer balance")?,
            needed_mills: to_u64(amount, "amount")?,
        });
    }
    let descending_mills = meter.descending_mills.checked_sub(amount).ok_or_else(|| {
        LedgerError::Invariant(format!(
            "descending register of user {user_id} is below the balance"
        ))
    })?;
    let new_meter = Meter {
        ascending_mills: register_add(meter.ascending_mills, amount)?,
        descending_mills,
        piece: meter.piece.checked_add(1).ok_or(LedgerError::Overflow)?,
        ..meter.clone()
    };
    // Everything that refuses an issue comes before its first write (the meter update below), so
    // that SQLite's writer needs no savepoint around it (`Undo::RefusesFirst`): signing too.
    let piece_state = PieceState {
        device_id: new_meter.device_id.clone(),
        piece: new_meter.piece,
        ascending_mills: to_u64(new_meter.ascending_mills, "ascending register")?,
        descending_mills: to_u64(new_meter.descending_mills, "descending register")?,
    };
    let mut signed = sign(&piece_state).map_err(LedgerError::Signing)?;
    if let Some(check) = signed.check.take() {
        tx.defer_check(check)?;
    }
    check_text("serial", &signed.serial, 1, MAX_SERIAL_LEN)
        .map_err(|e| LedgerError::Signing(format!("signer returned a bad serial: {e}")))?;
    if signed.bytes.is_empty() || signed.bytes.len() > MAX_ITEM_BYTES {
        return Err(LedgerError::Signing(format!(
            "signer returned {} item bytes",
            signed.bytes.len()
        )));
    }
    store_meter(tx, ctx, &meter, &new_meter)?;
    let inserted = tx.exec(
        "INSERT INTO items (serial, user_id, kind, amount_mills, piece, status, bytes,
             issued_at_ms, confirm_by_ms, settled_at_ms, session)
         VALUES (?1, ?2, ?3, ?4, ?5, 'issued', ?6, ?7, NULL, NULL, ?8)
         ON CONFLICT (serial) DO NOTHING",
        &[
            Text(&signed.serial),
            Int(user_id),
            Text(input.kind),
            Int(amount),
            Int(i64::from(new_meter.piece)),
            Blob(&signed.bytes),
            Int(now_ms),
            OptText(input.session.as_deref()),
        ],
    )?;
    if inserted != 1 {
        return Err(LedgerError::Invariant(format!(
            "serial {} was already issued",
            signed.serial
        )));
    }
    let moved = transfer_with_balances(
        tx,
        &Transfer {
            at_ms: now_ms,
            from: &customer,
            to: &reserved_account(user_id),
            amount_mills: amount,
            kind: KIND_RESERVE,
            item_serial: Some(&signed.serial),
            payment_id: None,
        },
    )?;
    user_invariants(user_id, &new_meter, moved.from_after, moved.to_after)?;
    let outcome = IssueOutcome {
        serial: signed.serial.clone(),
        item: signed.bytes,
        balance_mills: to_u64(moved.from_after, "customer balance")?,
        postage_mills: to_u64(amount, "amount")?,
        refill_due: payments::refill_due(tx, user_id, moved.from_after)?,
    };
    let transfer_id = moved.id;
    let stored = StoredIssue {
        serial: outcome.serial.clone(),
        item: None,
        balance_mills: outcome.balance_mills,
        postage_mills: outcome.postage_mills,
    };
    store_outcome(tx, key, OP_ISSUE, &stored, now_ms)?;
    /// The audit detail of an issue (fields in the order `json!` would sort them).
    #[derive(Serialize)]
    struct IssueDetail<'a> {
        amount_mills: i64,
        kind: &'a str,
        piece: u32,
        serial: &'a str,
        transfer: i64,
    }
    let detail = IssueDetail {
        amount_mills: amount,
        kind: input.kind,
        piece: new_meter.piece,
        serial: &signed.serial,
        transfer: transfer_id,
    };
    append_audit_entry(
        tx,
        now_ms,
        &user_actor(user_id),
        "issue",
        &detail_json(&detail)?,
    )?;
    Ok(outcome)
}

/// The inner result lets a late print confirmation commit the expiry void and still fail.
pub(crate) fn confirm(
    tx: &mut dyn Tx,
    ctx: Ctx<'_>,
    key: &RequestKey,
    serial: &str,
    printed: bool,
    now_ms: i64,
) -> Result<Result<StatusOutcome, LedgerError>, LedgerError> {
    let user_id = key.user_id;
    let (meter, customer) = lock_meter_with_balance(tx, ctx, user_id)?;
    if let Some(json) = find_outcome(tx, key, OP_CONFIRM)? {
        return Ok(replay(&json));
    }
    let item = load_item(tx, serial)?
        .filter(|item| item.user_id == user_id)
        .ok_or(LedgerError::UnknownItem)?;
    let status = match (item.status, printed) {
        (ItemStatus::Issued, true)
            if item
                .confirm_by_ms
                .is_some_and(|deadline| deadline <= now_ms) =>
        {
            void_item(tx, ctx, &item, now_ms, ACTOR_SYSTEM, "void_expired")?;
            check_user_invariants(tx, ctx, user_id)?;
            return Ok(Err(LedgerError::NotPending {
                status: ItemStatus::Voided,
            }));
        }
        (ItemStatus::Issued, true) => {
            // Posting moves reserved:U → postage_sold: the meter and the spendable balance stay
            // as locked above, so the invariants are checked here without reading them again.
            let reserved = post_item(tx, &item, now_ms)?;
            user_invariants(user_id, &meter, customer, reserved)?;
            let outcome = StatusOutcome {
                serial: item.serial.clone(),
                status: ItemStatus::Printed,
                balance_mills: to_u64(customer, "customer balance")?,
            };
            store_outcome(tx, key, OP_CONFIRM, &outcome, now_ms)?;
            return Ok(Ok(outcome));
        }
        (ItemStatus::Issued, false) => {
            void_item(tx, ctx, &item, now_ms, &user_actor(user_id), "void")?;
            ItemStatus::Voided
        }
        (ItemStatus::Printed, true) | (ItemStatus::Voided, false) => item.status,
        (status, _) => return Err(LedgerError::NotPending { status }),
    };
    check_user_invariants(tx, ctx, user_id)?;
    let outcome = StatusOutcome {
        serial: item.serial.clone(),
        status,
        balance_mills: to_u64(
            balance_of(tx, &customer_account(user_id))?,
            "customer balance",
        )?,
    };
    store_outcome(tx, key, OP_CONFIRM, &outcome, now_ms)?;
    Ok(Ok(outcome))
}

pub(crate) fn refund(
    tx: &mut dyn Tx,
    ctx: Ctx<'_>,
    key: &RequestKey,
    serial: &str,
    refund_window_ms: i64,
    now_ms: i64,
) -> Result<StatusOutcome, LedgerError> {
    let user_id = key.user_id;
    let meter = lock_meter(tx, ctx, user_id)?;
    if let Some(json) = find_outcome(tx, key, OP_REFUND)? {
        return replay(&json);
    }
    // A closing or closed account is credited nothing more (its balance is being paid out).
    if payments::closed_at(tx, user_id)?.is_some() {
        return Err(LedgerError::AccountClosed);
    }
    let item = load_item(tx, serial)?
        .filter(|item| item.user_id == user_id)
        .ok_or(LedgerError::UnknownItem)?;
    match item.status {
        ItemStatus::Printed => {
            if now_ms.saturating_sub(item.issued_at_ms) > refund_window_ms {
                return Err(LedgerError::RefundWindowClosed);
            }
            let new_meter = Meter {
                descending_mills: register_add(meter.descending_mills, item.amount_mills)?,
                ..meter.clone()
            };
            let transfer_id = transfer(
                tx,
                &Transfer {
                    at_ms: now_ms,
                    from: ACCOUNT_POSTAGE_SOLD,
                    to: &customer_account(user_id),
                    amount_mills: item.amount_mills,
                    kind: KIND_REFUND,
                    item_serial: Some(&item.serial),
                    payment_id: None,
                },
            )?;
            store_meter(tx, ctx, &meter, &new_meter)?;
            set_status(tx, &item, ItemStatus::Refunded, now_ms)?;
            let detail = serde_json::json!({
                "serial": item.serial,
                "amount_mills": item.amount_mills,
                "transfer": transfer_id,
            });
            append_audit_entry(
                tx,
                now_ms,
                &user_actor(user_id),
                "refund",
                &detail.to_string(),
            )?;
        }
        ItemStatus::Refunded => {}
        status => return Err(LedgerError::NotPending { status }),
    }
    check_user_invariants(tx, ctx, user_id)?;
    let outcome = StatusOutcome {
        serial: item.serial.clone(),
        status: ItemStatus::Refunded,
        balance_mills: to_u64(
            balance_of(tx, &customer_account(user_id))?,
            "customer balance",
        )?,
    };
    store_outcome(tx, key, OP_REFUND, &outcome, now_ms)?;
    Ok(outcome)
}

/// Hands an item's bytes out again to print (issue 6), counting and logging it. The inner result
/// lets an expired item's void commit and still fail, as in [`confirm`]. No money moves.
pub(crate) fn reprint(
    tx: &mut dyn Tx,
    ctx: Ctx<'_>,
    key: &RequestKey,
    serial: &str,
    limits: ReprintLimits,
    now_ms: i64,
) -> Result<Result<ReprintOutcome, LedgerError>, LedgerError> {
    let user_id = key.user_id;
    lock_meter(tx, ctx, user_id)?;
    if let Some(json) = find_outcome(tx, key, OP_REPRINT)? {
        return Ok(replay(&json));
    }
    let item = load_item_locked(tx, serial)?
        .filter(|item| item.user_id == user_id)
        .ok_or(LedgerError::UnknownItem)?;
    match item.status {
        ItemStatus::Issued
            if item
                .confirm_by_ms
                .is_some_and(|deadline| deadline <= now_ms) =>
        {
            void_item(tx, ctx, &item, now_ms, ACTOR_SYSTEM, "void_expired")?;
            check_user_invariants(tx, ctx, user_id)?;
            return Ok(Err(LedgerError::NotPending {
                status: ItemStatus::Voided,
            }));
        }
        ItemStatus::Issued | ItemStatus::Printed => {}
        status => return Ok(Err(LedgerError::NotPending { status })),
    }
    if now_ms.saturating_sub(item.issued_at_ms) > limits.window_ms {
        return Ok(Err(LedgerError::ReprintWindowClosed));
    }
    let r = tx
        .row(
            "SELECT reprints, bytes FROM items WHERE serial = ?1",
            &[Text(serial)],
        )?
        .ok_or(LedgerError::UnknownItem)?;
    let done = r.int(0)?;
    let bytes = r.blob(1)?;
    let done = u32::try_from(done)
        .map_err(|_| LedgerError::Corrupt(format!("reprints of {serial}: {done}")))?;
    if done >= limits.max_reprints {
        return Ok(Err(LedgerError::ReprintLimit { reprints: done }));
    }
    let reprints = done + 1;
    let changed = tx.exec(
        "UPDATE items SET reprints = ?1 WHERE serial = ?2 AND reprints = ?3",
        &[Int(i64::from(reprints)), Text(serial), Int(i64::from(done))],
    )?;
    if changed != 1 {
        return Err(LedgerError::Invariant(format!(
            "item {serial} reprinted during the transaction"
        )));
    }
    let detail = serde_json::json!({
        "serial": item.serial,
        "user": user_id,
        "status": item.status,
        "reprint": reprints,
    });
    append_audit_entry(
        tx,
        now_ms,
        &user_actor(user_id),
        "reprint",
        &detail.to_string(),
    )?;
    let outcome = ReprintOutcome {
        serial: item.serial.clone(),
        status: item.status,
        item: bytes,
        reprints,
        reprints_left: limits.max_reprints - reprints,
    };
    store_outcome(tx, key, OP_REPRINT, &outcome, now_ms)?;
    Ok(Ok(outcome))
}

pub(crate) fn redeem(
    tx: &mut dyn Tx,
    serial: &str,
    actor: &str,
    now_ms: i64,
) -> Result<ItemStatus, LedgerError> {
    let item = load_item_locked(tx, serial)?.ok_or(LedgerError::UnknownItem)?;
    if item.kind == KIND_POSTAGE {
        return Err(LedgerError::NotRedeemable);
    }
    if item.status != ItemStatus::Printed {
        return Err(LedgerError::NotPending {
            status: item.status,
        });
    }
    set_status(tx, &item, ItemStatus::Redeemed, now_ms)?;
    let detail = serde_json::json!({ "serial": item.serial, "user": item.user_id });
    append_audit_entry(tx, now_ms, actor, "redeem", &detail.to_string())?;
    Ok(ItemStatus::Redeemed)
}

pub(crate) fn start_confirm_window(
    tx: &mut dyn Tx,
    user_id: Option<UserId>,
    deadline_ms: i64,
) -> Result<u64, LedgerError> {
    match user_id {
        Some(user_id) => tx.exec(
            "UPDATE items SET confirm_by_ms = ?1
             WHERE status = 'issued' AND confirm_by_ms IS NULL AND user_id = ?2",
            &[Int(deadline_ms), Int(user_id)],
        ),
        None => tx.exec(
            "UPDATE items SET confirm_by_ms = ?1
             WHERE status = 'issued' AND confirm_by_ms IS NULL",
            &[Int(deadline_ms)],
        ),
    }
}

/// Voids expired items, locking the users' meters (in user order) before re-reading the items, so
/// that a confirm racing on another server either finishes first (the item is skipped) or waits.
pub(crate) fn void_expired(
    tx: &mut dyn Tx,
    ctx: Ctx<'_>,
    now_ms: i64,
) -> Result<Vec<String>, LedgerError> {
    let limit = i64::try_from(MAX_VOID_BATCH).map_err(|_| LedgerError::Overflow)?;
    let candidates = tx.rows(
        "SELECT serial, user_id FROM items
         WHERE status = 'issued' AND confirm_by_ms IS NOT NULL AND confirm_by_ms <= ?1
         ORDER BY user_id, serial LIMIT ?2",
        &[Int(now_ms), Int(limit)],
    )?;
    // Lock every meter first, in user order, before the first audit entry takes the chain's
    // lock: an issue holding one of these meters waits for that lock at its end, so taking a
    // meter after it would deadlock.
    // A frozen meter's items stay as they are (the audit reports the meter); the others go on.
    let mut locked_user = None;
    let mut frozen = std::collections::HashSet::new();
    for row in &candidates {
        let user_id = row.int(1)?;
        if locked_user != Some(user_id) {
            match lock_meter(tx, ctx, user_id) {
                Ok(_) => {}
                Err(LedgerError::MeterFrozen { .. }) => {
                    frozen.insert(user_id);
                }
                Err(e) => return Err(e),
            }
            locked_user = Some(user_id);
        }
    }
    let mut voided = Vec::with_capacity(candidates.len());
    for row in candidates {
        let serial = row.text(0)?;
        if frozen.contains(&row.int(1)?) {
            continue;
        }
        let Some(item) = load_item(tx, &serial)? else {
            continue;
        };
        let still_expired = item.status == ItemStatus::Issued
            && item
                .confirm_by_ms
                .is_some_and(|deadline| deadline <= now_ms);
        if !still_expired {
            continue;
        }
        void_item(tx, ctx, &item, now_ms, ACTOR_SYSTEM, "void_expired")?;
        check_user_invariants(tx, ctx, item.user_id)?;
        voided.push(serial);
    }
    Ok(voided)
}

pub(crate) fn balance(
    tx: &mut dyn Tx,
    ctx: Ctx<'_>,
    user_id: UserId,
) -> Result<BalanceView, LedgerError> {
    let meter = require_meter(tx, ctx, user_id)?;
    let pieces = tx
        .row(
            "SELECT COUNT(*) FROM items
             WHERE user_id = ?1 AND kind = 'postage' AND status IN ('issued', 'printed')",
            &[Int(user_id)],
        )?
        .map(|r| r.int(0))
        .transpose()?
        .unwrap_or(0);
    Ok(BalanceView {
        balance_mills: to_u64(
            balance_of(tx, &customer_account(user_id))?,
            "customer balance",
        )?,
        ascending_mills: to_u64(meter.ascending_mills, "ascending register")?,
        descending_mills: to_u64(meter.descending_mills, "descending register")?,
        pieces: to_u64(pieces, "piece count")?,
        reserved_mills: to_u64(
            balance_of(tx, &reserved_account(user_id))?,
            "reserved balance",
        )?,
    })
}

/// The meter as stored, without checking its seal (the caller may want to see a broken one).
pub(crate) fn meter(tx: &mut dyn Tx, user_id: UserId) -> Result<Option<MeterState>, LedgerError> {
    let Some(meter) = load_meter_raw(tx, user_id)? else {
        return Ok(None);
    };
    Ok(Some(MeterState {
        user_id,
        device_id: meter.device_id,
        license_id: meter.license_id,
        ascending_mills: to_u64(meter.ascending_mills, "ascending register")?,
        descending_mills: to_u64(meter.descending_mills, "descending register")?,
        piece: meter.piece,
        seal: meter.seal,
    }))
}

pub(crate) fn history(
    tx: &mut dyn Tx,
    user_id: UserId,
    limit: u32,
) -> Result<Vec<ItemSummary>, LedgerError> {
    load_meter_raw(tx, user_id)?.ok_or(LedgerError::UnknownUser)?;
    let limit = limit.min(MAX_HISTORY_LIMIT);
    let rows = tx.rows(
        "SELECT serial, kind, amount_mills, status, issued_at_ms FROM items
         WHERE user_id = ?1 ORDER BY piece DESC LIMIT ?2",
        &[Int(user_id), Int(i64::from(limit))],
    )?;
    rows.iter()
        .map(|r| {
            Ok(ItemSummary {
                serial: r.text(0)?,
                kind: r.text(1)?,
                amount_mills: to_u64(r.int(2)?, "item amount")?,
                status: parse_status(&r.text(3)?)?,
                issued_at_ms: r.int(4)?,
            })
        })
        .collect()
}

pub(crate) fn item_status(
    tx: &mut dyn Tx,
    serial: &str,
) -> Result<Option<ItemStatus>, LedgerError> {
    Ok(load_item(tx, serial)?.map(|item| item.status))
}

pub(crate) fn validate_audit_fields(
    actor: &str,
    action: &str,
    detail: &str,
) -> Result<(), LedgerError> {
    check_text("actor", actor, 1, MAX_AUDIT_FIELD_LEN)?;
    check_text("action", action, 1, MAX_AUDIT_FIELD_LEN)?;
    check_text("detail", detail, 0, MAX_AUDIT_FIELD_LEN)
}

// ---- Names stored in the database ----

const OP_FUND: &str = "fund";
const OP_ISSUE: &str = "issue";
const OP_CONFIRM: &str = "confirm";
const OP_REFUND: &str = "refund";
const OP_REPRINT: &str = "reprint";

const KIND_FUND: &str = "fund";
const KIND_RESERVE: &str = "reserve";
const KIND_POST: &str = "post";
const KIND_VOID: &str = "void";
const KIND_REFUND: &str = "refund";
const KIND_PAYOUT: &str = "payout";

const KIND_POSTAGE: &str = "postage";

/// Audit actions that log exactly one transfer, whose id is the detail's `"transfer"` field.
pub(crate) const TRANSFER_ACTIONS: [&str; 7] = [
    "fund",
    "issue",
    "confirm",
    "void",
    "void_expired",
    "refund",
    "payout",
];

fn user_actor(user_id: UserId) -> String {
    format!("user:{user_id}")
}

// ---- Checked conversions ----

fn to_u64(value: i64, what: &str) -> Result<u64, LedgerError> {
    u64::try_from(value).map_err(|_| LedgerError::Corrupt(format!("{what} is negative: {value}")))
}

/// The amount as stored (`INTEGER`), refusing zero: every transfer moves something.
fn positive_mills(amount: Amount) -> Result<i64, LedgerError> {
    if amount.is_zero() {
        return Err(LedgerError::InvalidInput("amount must be positive".into()));
    }
    i64::try_from(amount.mills()).map_err(|_| LedgerError::Overflow)
}

/// `register + amount`, refusing to pass [`MAX_REGISTER_MILLS`].
fn register_add(register_mills: i64, amount_mills: i64) -> Result<i64, LedgerError> {
    let sum = register_mills
        .checked_add(amount_mills)
        .ok_or(LedgerError::Overflow)?;
    if to_u64(sum, "register")? > MAX_REGISTER_MILLS {
        return Err(LedgerError::Overflow);
    }
    Ok(sum)
}

pub(crate) fn hash32(bytes: &[u8], what: &str) -> Result<[u8; 32], LedgerError> {
    <[u8; 32]>::try_from(bytes)
        .map_err(|_| LedgerError::Corrupt(format!("{what} is {} bytes, not 32", bytes.len())))
}

pub(crate) fn parse_status(s: &str) -> Result<ItemStatus, LedgerError> {
    ItemStatus::parse(s).ok_or_else(|| LedgerError::Corrupt(format!("unknown item status {s:?}")))
}

pub(crate) fn check_text(
    what: &str,
    value: &str,
    min_len: usize,
    max_len: usize,
) -> Result<(), LedgerError> {
    if value.len() < min_len {
        return Err(LedgerError::InvalidInput(format!("{what} is empty")));
    }
    if value.len() > max_len {
        return Err(LedgerError::InvalidInput(format!(
            "{what} is longer than {max_len} bytes"
        )));
    }
    if value.contains('\0') {
        return Err(LedgerError::InvalidInput(format!("{what} contains NUL")));
    }
    Ok(())
}

// ---- Users and meters ----

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

/// A meter row as stored (registers in `INTEGER` mills).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Meter {
    pub(crate) user_id: UserId,
    pub(crate) device_id: String,
    pub(crate) license_id: String,
    pub(crate) ascending_mills: i64,
    pub(crate) descending_mills: i64,
    pub(crate) piece: u32,
    pub(crate) seal: Option<Vec<u8>>,
}

/// The bytes a register seal covers: a domain label, the user, the device id (length-prefixed)
/// and the three registers, all big-endian.
pub fn meter_seal_message(
    user_id: UserId,
    device_id: &str,
    ascending_mills: i64,
    descending_mills: i64,
    piece: u32,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + device_id.len());
    out.extend_from_slice(b"stampline/v1/meter-seal");
    out.extend_from_slice(&user_id.to_be_bytes());
    // Device ids are limited to MAX_TEXT_LEN; saturating keeps the function total anyway.
    let len = u32::try_from(device_id.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(device_id.as_bytes());
    out.extend_from_slice(&ascending_mills.to_be_bytes());
    out.extend_from_slice(&descending_mills.to_be_bytes());
    out.extend_from_slice(&piece.to_be_bytes());
    out
}

/// The seal of a meter state, or `None` without a sealer.
fn seal_of(ctx: Ctx<'_>, m: &Meter) -> Result<Option<[u8; 32]>, LedgerError> {
    let Some(sealer) = ctx.sealer else {
        return Ok(None);
    };
    let msg = meter_seal_message(
        m.user_id,
        &m.device_id,
        m.ascending_mills,
        m.descending_mills,
        m.piece,
    );
    sealer.seal(&msg).map(Some).map_err(LedgerError::Sealing)
}

/// Whether the stored seal matches the registers (always true without a sealer). A missing seal
/// does not match: a database edit could otherwise clear it.
pub(crate) fn seal_holds(ctx: Ctx<'_>, m: &Meter) -> Result<bool, LedgerError> {
    let Some(expected) = seal_of(ctx, m)? else {
        return Ok(true);
    };
    Ok(m.seal
        .as_deref()
        .is_some_and(|stored| constant_time_eq(stored, &expected)))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn load_meter_raw(tx: &mut dyn Tx, user_id: UserId) -> Result<Option<Meter>, LedgerError> {
    let sql = format!(
        "SELECT device_id, license_id, ascending_mills, descending_mills, piece, seal
         FROM meters WHERE user_id = ?1{}",
        tx.for_update()
    );
    let Some(r) = tx.row(&sql, &[Int(user_id)])? else {
        return Ok(None);
    };
    let piece = r.int(4)?;
    Ok(Some(Meter {
        user_id,
        device_id: r.text(0)?,
        license_id: r.text(1)?,
        ascending_mills: r.int(2)?,
        descending_mills: r.int(3)?,
        piece: u32::try_from(piece)
            .map_err(|_| LedgerError::Corrupt(format!("piece number {piece} out of range")))?,
        seal: r.opt_blob(5)?,
    }))
}

/// The user's meter, refusing one whose seal does not hold (`MeterFrozen`).
fn require_meter(tx: &mut dyn Tx, ctx: Ctx<'_>, user_id: UserId) -> Result<Meter, LedgerError> {
    let meter = load_meter_raw(tx, user_id)?.ok_or(LedgerError::UnknownUser)?;
    if !seal_holds(ctx, &meter)? {
        return Err(LedgerError::MeterFrozen {
            device_id: meter.device_id,
            reason: "its register seal does not match the registers".into(),
        });
    }
    Ok(meter)
}

/// The first step of every operation on a user's money: locks the meter row (PostgreSQL) and
/// checks that it was not changed behind the ledger's back — the seal holds and the descending
/// register equals the spendable balance. Either break freezes the meter (`MeterFrozen`) until an
/// operator repairs it.
fn lock_meter(tx: &mut dyn Tx, ctx: Ctx<'_>, user_id: UserId) -> Result<Meter, LedgerError> {
    lock_meter_with_balance(tx, ctx, user_id).map(|(meter, _)| meter)
}

/// [`lock_meter`], also returning the spendable balance it checked the meter against.
fn lock_meter_with_balance(
    tx: &mut dyn Tx,
    ctx: Ctx<'_>,
    user_id: UserId,
) -> Result<(Meter, i64), LedgerError> {
    let meter = require_meter(tx, ctx, user_id)?;
    let customer = balance_of(tx, &customer_account(user_id))?;
    if customer != meter.descending_mills {
        return Err(LedgerError::MeterFrozen {
            device_id: meter.device_id,
            reason: format!(
                "its descending register ({}) differs from the balance ({customer})",
                meter.descending_mills
            ),
        });
    }
    Ok((meter, customer))
}

/// Writes `new` over `old`, asserting the register rules: ascending and the piece number never
/// decrease, both registers stay within `0..=MAX_REGISTER_MILLS`, and the row still holds `old`.
/// Seals the new state when the store has a sealer.
fn store_meter(tx: &mut dyn Tx, ctx: Ctx<'_>, old: &Meter, new: &Meter) -> Result<(), LedgerError> {
    let user_id = old.user_id;
    if new.user_id != user_id || new.device_id != old.device_id {
        return Err(LedgerError::Invariant("meter identity changed".into()));
    }
    if new.ascending_mills < old.ascending_mills || new.piece < old.piece {
        return Err(LedgerError::Invariant(format!(
            "meter of user {user_id} would run backwards"
        )));
    }
    for register in [new.ascending_mills, new.descending_mills] {
        if to_u64(register, "register")? > MAX_REGISTER_MILLS {
            return Err(LedgerError::Overflow);
        }
    }
    let seal = seal_of(ctx, new)?;
    let changed = tx.exec(
        "UPDATE meters SET ascending_mills = ?1, descending_mills = ?2, piece = ?3, seal = ?4
         WHERE user_id = ?5 AND ascending_mills = ?6 AND descending_mills = ?7 AND piece = ?8",
        &[
            Int(new.ascending_mills),
            Int(new.descending_mills),
            Int(i64::from(new.piece)),
            Param::OptBlob(seal.as_ref().map(|s| s.as_slice())),
            Int(user_id),
            Int(old.ascending_mills),
            Int(old.descending_mills),
            Int(i64::from(old.piece)),
        ],
    )?;
    if changed != 1 {
        return Err(LedgerError::Invariant(format!(
            "meter of user {user_id} changed during the transaction"
        )));
    }
    Ok(())
}

/// The per-user invariants every operation asserts before it commits: customer and reserved
/// balances are not negative, and the descending register equals the customer balance.
fn check_user_invariants(
    tx: &mut dyn Tx,
    ctx: Ctx<'_>,
    user_id: UserId,
) -> Result<(), LedgerError> {
    let meter = require_meter(tx, ctx, user_id)?;
    let customer = balance_of(tx, &customer_account(user_id))?;
    let reserved = balance_of(tx, &reserved_account(user_id))?;
    user_invariants(user_id, &meter, customer, reserved)
}

/// [`check_user_invariants`] over values the operation already holds: the meter state it wrote
/// (or locked) and the two balances its conditional updates set (or read).
fn user_invariants(
    user_id: UserId,
    meter: &Meter,
    customer: i64,
    reserved: i64,
) -> Result<(), LedgerError> {
    if customer < 0 || reserved < 0 {
        return Err(LedgerError::Invariant(format!(
            "user {user_id} would have a negative balance ({customer} spendable, {reserved} reserved)"
        )));
    }
    if meter.descending_mills != customer {
        return Err(LedgerError::Invariant(format!(
            "descending register of user {user_id} ({}) differs from the balance ({customer})",
            meter.descending_mills
        )));
    }
    if meter.ascending_mills < 0 {
        return Err(LedgerError::Invariant(format!(
            "ascending register of user {user_id} is negative"
        )));
    }
    Ok(())
}

// ---- Accounts and transfers ----

fn balance_of(tx: &mut dyn Tx, account: &str) -> Result<i64, LedgerError> {
    tx.row(
        "SELECT balance FROM accounts WHERE id = ?1",
        &[Text(account)],
    )?
    .map(|r| r.int(0))
    .transpose()?
    .ok_or_else(|| LedgerError::Invariant(format!("account {account} is missing")))
}

struct Transfer<'a> {
    at_ms: i64,
    from: &'a str,
    to: &'a str,
    amount_mills: i64,
    kind: &'static str,
    item_serial: Option<&'a str>,
    payment_id: Option<&'a str>,
}

/// Moves `amount_mills` from one account to another and records the transfer; asserts on both
/// sides that the two balances changed by exactly the amount and their sum did not change.
/// Locks both account rows first, in id order, so that concurrent transfers through a shared
/// account (`bank_clearing`, `postage_sold`) queue instead of deadlocking. Returns the transfer id.
fn transfer(tx: &mut dyn Tx, t: &Transfer<'_>) -> Result<i64, LedgerError> {
    transfer_with_balances(tx, t).map(|moved| moved.id)
}

/// A recorded transfer and the two balances after it.
struct Moved {
    id: i64,
    from_after: i64,
    to_after: i64,
}

/// [`transfer`], returning the balances it wrote. Each update is conditional on the balance read
/// under the lock, so a balance written is exactly the one returned (no read-back needed).
fn transfer_with_balances(tx: &mut dyn Tx, t: &Transfer<'_>) -> Result<Moved, LedgerError> {
    if t.amount_mills <= 0 || t.from == t.to {
        return Err(LedgerError::Invariant(format!(
            "malformed {} transfer of {} from {} to {}",
            t.kind, t.amount_mills, t.from, t.to
        )));
    }
    // Two point reads in id order (the lock order on PostgreSQL). Not one `id IN (…) ORDER BY
    // id`: SQLite builds a temporary b-tree for that at every run (measured: the most expensive
    // statement of a purchase).
    let sql = format!(
        "SELECT balance FROM accounts WHERE id = ?1{}",
        tx.for_update()
    );
    let mut read = |account: &str| -> Result<i64, LedgerError> {
        tx.row(&sql, &[Text(account)])?
            .map(|r| r.int(0))
            .transpose()?
            .ok_or_else(|| LedgerError::Invariant(format!("account {account} is missing")))
    };
    let (from_before, to_before) = if t.from < t.to {
        let from = read(t.from)?;
        (from, read(t.to)?)
    } else {
        let to = read(t.to)?;
        (read(t.from)?, to)
    };
    let from_after = from_before
        .checked_sub(t.amount_mills)
        .ok_or(LedgerError::Overflow)?;
    let to_after = to_before
        .checked_add(t.amount_mills)
        .ok_or(LedgerError::Overflow)?;
    for (account, before, after) in [
        (t.from, from_before, from_after),
        (t.to, to_before, to_after),
    ] {
        let changed = tx.exec(
            "UPDATE accounts SET balance = ?1 WHERE id = ?2 AND balance = ?3",
            &[Int(after), Text(account), Int(before)],
        )?;
        if changed != 1 {
            return Err(LedgerError::Invariant(format!(
                "account {account} changed during the transaction"
            )));
        }
    }
    let id = tx.insert_id(
        "INSERT INTO transfers (at_ms, from_account, to_account, amount_mills, kind,
                 item_serial, payment_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        &[
            Int(t.at_ms),
            Text(t.from),
            Text(t.to),
            Int(t.amount_mills),
            Text(t.kind),
            OptText(t.item_serial),
            OptText(t.payment_id),
        ],
    )?;
    Ok(Moved {
        id,
        from_after,
        to_after,
    })
}

// ---- Items ----

#[derive(Clone, Debug)]
struct Item {
    serial: String,
    user_id: UserId,
    kind: String,
    amount_mills: i64,
    status: ItemStatus,
    issued_at_ms: i64,
    confirm_by_ms: Option<i64>,
}

fn load_item(tx: &mut dyn Tx, serial: &str) -> Result<Option<Item>, LedgerError> {
    load_item_with(tx, serial, "")
}

fn load_item_locked(tx: &mut dyn Tx, serial: &str) -> Result<Option<Item>, LedgerError> {
    let lock = tx.for_update();
    load_item_with(tx, serial, lock)
}

fn load_item_with(
    tx: &mut dyn Tx,
    serial: &str,
    suffix: &str,
) -> Result<Option<Item>, LedgerError> {
    if serial.is_empty() || serial.len() > MAX_SERIAL_LEN {
        return Ok(None);
    }
    let sql = format!(
        "SELECT user_id, kind, amount_mills, status, issued_at_ms, confirm_by_ms
         FROM items WHERE serial = ?1{suffix}"
    );
    let Some(r) = tx.row(&sql, &[Text(serial)])? else {
        return Ok(None);
    };
    Ok(Some(Item {
        serial: serial.to_owned(),
        user_id: r.int(0)?,
        kind: r.text(1)?,
        amount_mills: r.int(2)?,
        status: parse_status(&r.text(3)?)?,
        issued_at_ms: r.int(4)?,
        confirm_by_ms: r.opt_int(5)?,
    }))
}

/// Moves an item from its current status to `to`, asserting nobody moved it meanwhile.
fn set_status(
    tx: &mut dyn Tx,
    item: &Item,
    to: ItemStatus,
    now_ms: i64,
) -> Result<(), LedgerError> {
    let changed = tx.exec(
        "UPDATE items SET status = ?1, settled_at_ms = ?2 WHERE serial = ?3 AND status = ?4",
        &[
            Text(to.as_str()),
            Int(now_ms),
            Text(&item.serial),
            Text(item.status.as_str()),
        ],
    )?;
    if changed != 1 {
        return Err(LedgerError::Invariant(format!(
            "item {} changed during the transaction",
            item.serial
        )));
    }
    Ok(())
}

/// Issued → printed: reserved:U → postage_sold. Returns the reserved balance after it.
fn post_item(tx: &mut dyn Tx, item: &Item, now_ms: i64) -> Result<i64, LedgerError> {
    let moved = transfer_with_balances(
        tx,
        &Transfer {
            at_ms: now_ms,
            from: &reserved_account(item.user_id),
            to: ACCOUNT_POSTAGE_SOLD,
            amount_mills: item.amount_mills,
            kind: KIND_POST,
            item_serial: Some(&item.serial),
            payment_id: None,
        },
    )?;
    set_status(tx, item, ItemStatus::Printed, now_ms)?;
    /// The audit detail of a printed confirmation (fields in the order `json!` would sort them).
    #[derive(Serialize)]
    struct PostDetail<'a> {
        amount_mills: i64,
        printed: bool,
        serial: &'a str,
        transfer: i64,
    }
    let detail = PostDetail {
        amount_mills: item.amount_mills,
        printed: true,
        serial: &item.serial,
        transfer: moved.id,
    };
    append_audit_entry(
        tx,
        now_ms,
        &user_actor(item.user_id),
        "confirm",
        &detail_json(&detail)?,
    )?;
    Ok(moved.from_after)
}

/// Issued → voided: reserved:U → customer:U and the descending register credited again.
fn void_item(
    tx: &mut dyn Tx,
    ctx: Ctx<'_>,
    item: &Item,
    now_ms: i64,
    actor: &str,
    action: &str,
) -> Result<(), LedgerError> {
    let meter = require_meter(tx, ctx, item.user_id)?;
    let new_meter = Meter {
        descending_mills: register_add(meter.descending_mills, item.amount_mills)?,
        ..meter.clone()
    };
    let transfer_id = transfer(
        tx,
        &Transfer {
            at_ms: now_ms,
            from: &reserved_account(item.user_id),
            to: &customer_account(item.user_id),
            amount_mills: item.amount_mills,
            kind: KIND_VOID,
            item_serial: Some(&item.serial),
            payment_id: None,
        },
    )?;
    store_meter(tx, ctx, &meter, &new_meter)?;
    set_status(tx, item, ItemStatus::Voided, now_ms)?;
    let detail = serde_json::json!({
        "serial": item.serial,
        "user": item.user_id,
        "amount_mills": item.amount_mills,
        "transfer": transfer_id,
    });
    append_audit_entry(tx, now_ms, actor, action, &detail.to_string())
}

// ---- Idempotency ----

/// The stored outcome of a repeat of this request, `None` for a new request id, `IdReused` when
/// the id was used for a different request (another fingerprint or another op).
fn find_outcome(
    tx: &mut dyn Tx,
    key: &RequestKey<'_>,
    op: &str,
) -> Result<Option<String>, LedgerError> {
    check_text("request id", key.request_id, 1, MAX_REQUEST_ID_LEN)?;
    let Some(r) = tx.row(
        "SELECT fingerprint, op, outcome_json FROM requests
         WHERE user_id = ?1 AND request_id = ?2",
        &[Int(key.user_id), Text(key.request_id)],
    )?
    else {
        return Ok(None);
    };
    let (fingerprint, stored_op) = (r.blob(0)?, r.text(1)?);
    if fingerprint.as_slice() == key.fingerprint.as_slice() && stored_op == op {
        Ok(Some(r.text(2)?))
    } else {
        Err(LedgerError::IdReused)
    }
}

/// An audit entry's detail as JSON. The hot paths (issue, print confirmation) serialise a struct
/// rather than build a `serde_json::Value` (its map and strings were ≈ 4 % of the writer).
fn detail_json<T: Serialize>(detail: &T) -> Result<String, LedgerError> {
    serde_json::to_string(detail)
        .map_err(|e| LedgerError::Invariant(format!("audit detail not serialisable: {e}")))
}

/// What the ledger keeps for a repeat of an issue: its outcome without the item's bytes, which
/// the item's row holds (they were two thirds of the request row: measured, docs/BENCHMARKS.md).
/// Outcomes stored before this hold the bytes (hex) and are answered as stored.
#[derive(serde::Deserialize, Serialize)]
struct StoredIssue {
    serial: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    item: Option<String>,
    balance_mills: u64,
    postage_mills: u64,
}

/// A repeated issue's first outcome (the item's bytes from its row).
fn replay_issue(tx: &mut dyn Tx, user_id: UserId, json: &str) -> Result<IssueOutcome, LedgerError> {
    let stored: StoredIssue = replay(json)?;
    let item = match stored.item {
        Some(hex) => hex::decode(hex)
            .map_err(|e| LedgerError::Corrupt(format!("stored outcome unreadable: {e}")))?,
        None => tx
            .row(
                "SELECT bytes FROM items WHERE serial = ?1 AND user_id = ?2",
                &[Text(&stored.serial), Int(user_id)],
            )?
            .ok_or_else(|| {
                LedgerError::Corrupt(format!(
                    "item {} of a stored outcome is missing",
                    stored.serial
                ))
            })?
            .blob(0)?,
    };
    Ok(IssueOutcome {
        serial: stored.serial,
        item,
        balance_mills: stored.balance_mills,
        postage_mills: stored.postage_mills,
        refill_due: false,
    })
}

fn replay<T: DeserializeOwned>(json: &str) -> Result<T, LedgerError> {
    serde_json::from_str(json)
        .map_err(|e| LedgerError::Corrupt(format!("stored outcome unreadable: {e}")))
}

fn store_outcome<T: Serialize>(
    tx: &mut dyn Tx,
    key: &RequestKey<'_>,
    op: &str,
    outcome: &T,
    now_ms: i64,
) -> Result<(), LedgerError> {
    let json = serde_json::to_string(outcome)
        .map_err(|e| LedgerError::Invariant(format!("outcome not serialisable: {e}")))?;
    tx.exec(
        "INSERT INTO requests (user_id, request_id, fingerprint, op, outcome_json, at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        &[
            Int(key.user_id),
            Text(key.request_id),
            Blob(key.fingerprint.as_slice()),
            Text(op),
            Text(&json),
            Int(now_ms),
        ],
    )?;
    Ok(())
}

// ---- Audit log ----

/// The newest entry of every audit chain: (chain, sequence number, hash).
pub(crate) fn audit_heads(tx: &mut dyn Tx) -> Result<Vec<(i64, i64, [u8; 32])>, LedgerError> {
    tx.rows(
        "SELECT a.chain, a.seq, a.hash FROM audit_log a
         WHERE a.seq = (SELECT MAX(b.seq) FROM audit_log b WHERE b.chain = a.chain)
         ORDER BY a.chain",
        &[],
    )?
    .iter()
    .map(|r| Ok((r.int(0)?, r.int(1)?, hash32(&r.blob(2)?, "audit hash")?)))
    .collect()
}

/// The hash of entry `seq` of `chain`, if it exists.
pub(crate) fn audit_entry_hash(
    tx: &mut dyn Tx,
    chain: i64,
    seq: i64,
) -> Result<Option<[u8; 32]>, LedgerError> {
    tx.row(
        "SELECT hash FROM audit_log WHERE chain = ?1 AND seq = ?2",
        &[Int(chain), Int(seq)],
    )?
    .map(|r| hash32(&r.blob(0)?, "audit hash"))
    .transpose()
}

/// Checks that entry `known` of `chain` is still in the log unchanged and that every entry after
/// it chains from it (`AuditLogBroken` otherwise).
fn check_appended_since(
    tx: &mut dyn Tx,
    chain: i64,
    known: crate::sql::AuditHead,
) -> Result<(), LedgerError> {
    let rows = tx.rows(
        &format!(
            "SELECT seq, at_ms, actor, action, detail, prev_hash, hash FROM audit_log
             WHERE chain = {chain} AND seq >= ?1 ORDER BY seq"
        ),
        &[Int(known.0)],
    )?;
    let broken = |what: String| Err(LedgerError::AuditLogBroken(what));
    let mut rows = rows.iter();
    match rows.next() {
        Some(r) if r.int(0)? == known.0 && hash32(&r.blob(6)?, "audit hash")? == known.1 => {}
        Some(_) => return broken(format!("entry {} was changed", known.0)),
        None => return broken(format!("entry {} and those after it are gone", known.0)),
    }
    let (mut seq, mut hash) = known;
    for r in rows {
        let next = r.int(0)?;
        let computed = chain::entry_hash(
            &hash,
            next,
            r.int(1)?,
            &r.text(2)?,
            &r.text(3)?,
            &r.text(4)?,
        );
        if Some(next) != seq.checked_add(1)
            || hash32(&r.blob(5)?, "audit hash")? != hash
            || hash32(&r.blob(6)?, "audit hash")? != computed
        {
            return broken(format!("entry {next} does not follow entry {seq}"));
        }
        (seq, hash) = (next, computed);
    }
    Ok(())
}

pub(crate) fn append_audit_entry(
    tx: &mut dyn Tx,
    at_ms: i64,
    actor: &str,
    action: &str,
    detail: &str,
) -> Result<(), LedgerError> {
    let chain = tx.lock_audit_chain()?;
    let head = if tx.audit_head_is_current(chain) {
        // Read and checked (below) earlier in this transaction, which no one else can append to.
        tx.known_audit_head(chain)
    } else {
        // The chain is a number of ours, written into the SQL: SQLite re-prepares this statement
        // at every run when the chain is a bound parameter (measured), and a backend has one chain
        // per connection, so each connection caches one statement.
        let last = tx.row(
            &format!(
                "SELECT seq, hash FROM audit_log WHERE chain = {chain} ORDER BY seq DESC LIMIT 1"
            ),
            &[],
        )?;
        let head = match last {
            None => None,
            Some(r) => Some((r.int(0)?, hash32(&r.blob(1)?, "audit hash")?)),
        };
        // The head this connection last wrote must still be there, and whatever another writer
        // (an admin command, another process) appended since must chain from it. Deleting the
        // newest entries behind the server's back leaves a chain that verifies on its own: this
        // is what finds it. Refuse to append (and so to move any money) until an operator has
        // looked.
        if let Some(known) = tx.known_audit_head(chain)
            && head != Some(known)
        {
            check_appended_since(tx, chain, known)?;
        }
        head
    };
    let (seq, prev_hash) = match head {
        None => (1, chain::GENESIS_HASH),
        Some((seq, hash)) => (seq.checked_add(1).ok_or(LedgerError::Overflow)?, hash),
    };
    let hash = chain::entry_hash(&prev_hash, seq, at_ms, actor, action, detail);
    tx.exec(
        "INSERT INTO audit_log (chain, seq, at_ms, actor, action, detail, prev_hash, hash)
         VALUES (?8, ?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        &[
            Int(seq),
            Int(at_ms),
            Text(actor),
            Text(action),
            Text(detail),
            Blob(prev_hash.as_slice()),
            Blob(hash.as_slice()),
            Int(chain),
        ],
    )?;
    tx.set_audit_head(chain, (seq, hash));
    Ok(())
}
