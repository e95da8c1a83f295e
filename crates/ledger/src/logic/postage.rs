//! Postage and other items: issue (reserve the amount and sign the next piece), the print
//! confirmation (post the reservation, or void it and give the funds back), refund of a printed
//! item, reprint of an item's bytes, and redemption of a printed non-postage item.
//!
//! Issue and the print confirmation run in SQLite's group without a savepoint
//! (`Undo::RefusesFirst`): every refusal of theirs comes before their first write.

use serde::Serialize;

use super::Ctx;
use super::audit_log::{ACTOR_SYSTEM, append_audit_entry, detail_json, user_actor};
use super::issuing::{self, Begun, sign_piece, store_issue_outcome};
use super::items::{Item, load_item, load_item_locked, set_status};
use super::meter::{
    Meter, check_user_invariants, lock_meter, lock_meter_with_balance, require_meter, store_meter,
    user_invariants,
};
use super::payments::refill_due;
use super::requests::{find_outcome, replay, store_outcome};
use super::standing::closed_at;
use super::transfers::{
    KIND_POST, KIND_REFUND, KIND_RESERVE, KIND_VOID, Transfer, balance_of, transfer,
    transfer_with_balances,
};
use super::value_items;
use super::values::{register_add, to_u64};
use crate::sql::{Param, Tx};
use crate::{
    ACCOUNT_POSTAGE_SOLD, IssueInput, IssueOutcome, ItemStatus, LedgerError, PieceState,
    ReprintLimits, ReprintOutcome, RequestKey, SignedItem, StatusOutcome, customer_account,
    reserved_account,
};

use Param::{Blob, Int, OptText, Text};

const OP_CONFIRM: &str = "confirm";

const OP_REFUND: &str = "refund";

const OP_REPRINT: &str = "reprint";

const KIND_POSTAGE: &str = "postage";

pub(crate) fn issue(
    tx: &mut dyn Tx,
    ctx: Ctx<'_>,
    key: &RequestKey,
    input: &IssueInput,
    sign: &mut dyn FnMut(&PieceState) -> Result<SignedItem, String>,
    now_ms: i64,
) -> Result<IssueOutcome, LedgerError> {
    let user_id = key.user_id;
    if input.kind != KIND_POSTAGE {
        return Err(LedgerError::InvalidInput(format!(
            "unknown item kind {:?}",
            input.kind
        )));
    }
    let Begun {
        meter,
        device_id,
        balance,
        amount,
    } = match issuing::begin(tx, ctx, key, input)? {
        Ok(begun) => begun,
        Err(repeat) => return Ok(repeat),
    };
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
        device_id,
        piece: new_meter.piece,
        number: u64::from(new_meter.piece),
        ascending_mills: to_u64(new_meter.ascending_mills, "ascending register")?,
        descending_mills: to_u64(new_meter.descending_mills, "descending register")?,
    };
    let signed = sign_piece(tx, sign, &piece_state)?;
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
        refill_due: refill_due(tx, user_id, moved.from_after)?,
    };
    let transfer_id = moved.id;
    store_issue_outcome(tx, key, &outcome, now_ms)?;
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
        (ItemStatus::Issued, true) if is_expired(&item, now_ms) => {
            return refuse_late(tx, ctx, &item, now_ms);
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

/// Issued → printed: reserved:U → postage_sold. Returns the reserved balance after it.
fn post_item(tx: &mut dyn Tx, item: &Item, now_ms: i64) -> Result<i64, LedgerError> {
    if !item.is_postage() {
        return value_items::post(tx, item, now_ms);
    }
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

/// Whether an issued item's confirmation window has closed (it can no longer be printed).
pub(crate) fn is_expired(item: &Item, now_ms: i64) -> bool {
    item.status == ItemStatus::Issued
        && item
            .confirm_by_ms
            .is_some_and(|deadline| deadline <= now_ms)
}

/// Voids an expired item as the system (its funds go back to the user) and checks its user's
/// invariants.
pub(crate) fn void_expired_item(
    tx: &mut dyn Tx,
    ctx: Ctx<'_>,
    item: &Item,
    now_ms: i64,
) -> Result<(), LedgerError> {
    void_item(tx, ctx, item, now_ms, ACTOR_SYSTEM, "void_expired")?;
    check_user_invariants(tx, ctx, item.user_id)
}

/// A request that comes after an item's window closed: the item is voided as expired (that void
/// commits) and the request is refused (`NotPending { status: Voided }`).
fn refuse_late<T>(
    tx: &mut dyn Tx,
    ctx: Ctx<'_>,
    item: &Item,
    now_ms: i64,
) -> Result<Result<T, LedgerError>, LedgerError> {
    void_expired_item(tx, ctx, item, now_ms)?;
    Ok(Err(LedgerError::NotPending {
        status: ItemStatus::Voided,
    }))
}

/// Credits the user's spendable account (a void, a refund): the transfer `t` to customer:U, and
/// the descending register raised by the same amount. Returns the transfer id.
fn credit_customer(
    tx: &mut dyn Tx,
    ctx: Ctx<'_>,
    meter: &Meter,
    t: &Transfer<'_>,
) -> Result<i64, LedgerError> {
    let new_meter = Meter {
        descending_mills: register_add(meter.descending_mills, t.amount_mills)?,
        ..meter.clone()
    };
    let transfer_id = transfer(tx, t)?;
    store_meter(tx, ctx, meter, &new_meter)?;
    Ok(transfer_id)
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
    if !item.is_postage() {
        return value_items::give_back(tx, ctx, item, ItemStatus::Voided, now_ms, actor, action);
    }
    let meter = require_meter(tx, ctx, item.user_id)?;
    let transfer_id = credit_customer(
        tx,
        ctx,
        &meter,
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
    set_status(tx, item, ItemStatus::Voided, now_ms)?;
    let detail = serde_json::json!({
        "serial": item.serial,
        "user": item.user_id,
        "amount_mills": item.amount_mills,
        "transfer": transfer_id,
    });
    append_audit_entry(tx, now_ms, actor, action, &detail.to_string())
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
    if closed_at(tx, user_id)?.is_some() {
        return Err(LedgerError::AccountClosed);
    }
    // Locked: a redemption by another user (which holds its own meter, not this one) may change a
    // certificate's remainder while it stays `printed`; the remainder read here must be the one
    // the refund books.
    let item = load_item_locked(tx, serial)?
        .filter(|item| item.user_id == user_id)
        .ok_or(LedgerError::UnknownItem)?;
    match item.status {
        ItemStatus::Printed if !item.is_postage() => {
            if now_ms.saturating_sub(item.issued_at_ms) > refund_window_ms {
                return Err(LedgerError::RefundWindowClosed);
            }
            if item.remaining_mills != Some(item.amount_mills) {
                return Err(LedgerError::InvalidInput(format!(
                    "{} {} was redeemed in part; the rest cannot be refunded",
                    item.kind, item.serial
                )));
            }
            value_items::give_back(
                tx,
                ctx,
                &item,
                ItemStatus::Refunded,
                now_ms,
                &user_actor(user_id),
                "refund",
            )?;
        }
        ItemStatus::Printed => {
            if now_ms.saturating_sub(item.issued_at_ms) > refund_window_ms {
                return Err(LedgerError::RefundWindowClosed);
            }
            // As for a funding: the register keeps room for every reservation's void.
            register_add(
                register_add(meter.descending_mills, item.amount_mills)?,
                balance_of(tx, &reserved_account(user_id))?,
            )?;
            let transfer_id = credit_customer(
                tx,
                ctx,
                &meter,
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

/// Hands an item's bytes out again to print, counting and logging it. The inner result
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
        ItemStatus::Issued if is_expired(&item, now_ms) => {
            return refuse_late(tx, ctx, &item, now_ms);
        }
        ItemStatus::Issued => {}
        ItemStatus::Printed => return Ok(Err(LedgerError::AlreadyPrinted)),
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
