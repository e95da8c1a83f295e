//! Value items — tickets, checks, coupons and gift certificates — beside postage: issuing one
//! (its own sequence and registers per user and kind; the postage meter's registers never move),
//! posting or returning its funds, redeeming it once (a certificate in parts), and the users an
//! issuer allows to redeem.
//!
//! Money: a ticket, check or certificate reserves its face value like postage
//! (customer:U → reserved:U); printed, it is posted to the liability account `outstanding:KIND`;
//! voided or refunded, it goes back to customer:U. The meter's `value_outstanding_mills` follows
//! what these items hold of U's funds, so that descending = customer balance + outstanding holds
//! while the descending register itself stays put. A redemption pays outstanding:KIND →
//! customer:R (transfer `redeem`) and raises the redeemer's descending register, as a funding
//! does. Coupons carry no funds: no transfer ever names one; only their register counts them.
//!
//! Audit actions: the funds-carrying kinds log `issue`, `confirm`, `void`, `void_expired`,
//! `refund` and `redeem` with their transfer, as postage does; coupons log the same actions
//! prefixed `coupon_`, without one.

use serde::Serialize;
use stampline_money::Amount;

use super::Ctx;
use super::audit_log::{append_audit_entry, detail_json, user_actor};
use super::issuing::{self, Begun, sign_piece, store_issue_outcome};
use super::items::{Item, load_item_locked};
use super::meter::{Meter, lock_meter, store_meter, user_invariants};
use super::payments::refill_due;
use super::requests::{find_outcome, replay, store_outcome};
use super::standing::closed_at;
use super::transfers::{
    KIND_POST, KIND_REDEEM, KIND_REFUND, KIND_RESERVE, KIND_VOID, Transfer, balance_of, transfer,
    transfer_with_balances,
};
use super::values::{positive_mills, register_add, to_u64};
use crate::sql::{Param, Tx};
use crate::{
    IssueInput, IssueOutcome, ItemStatus, LedgerError, PieceState, RedeemOutcome, RequestKey,
    SignedItem, UserId, VALUE_KINDS, ValueRegister, carries_funds, customer_account,
    outstanding_account, reserved_account, value_item_number,
};

use Param::{Blob, Int, OptInt, OptText, Text};

const OP_REDEEM: &str = "redeem";

/// The audit action for `action` on an item of `kind`: coupons' actions name no transfer.
fn action_for(kind: &str, action: &str) -> String {
    if carries_funds(kind) {
        action.to_owned()
    } else {
        format!("coupon_{action}")
    }
}

/// One register row (zeros before the kind's first item).
#[derive(Clone, Copy, Debug, Default)]
struct Register {
    pieces: i64,
    issued: i64,
    stored: bool,
}

fn load_register(tx: &mut dyn Tx, user_id: UserId, kind: &str) -> Result<Register, LedgerError> {
    let row = tx.row(
        "SELECT pieces, issued_mills FROM value_registers WHERE user_id = ?1 AND kind = ?2",
        &[Int(user_id), Text(kind)],
    )?;
    Ok(match row {
        Some(r) => Register {
            pieces: r.int(0)?,
            issued: r.int(1)?,
            stored: true,
        },
        None => Register::default(),
    })
}

/// Adds to one of a register's money columns (`returned_mills` or `redeemed_mills`), relative to
/// the stored value (another user's redemption may add to the same row meanwhile), refusing to
/// pass what was issued.
fn register_credit(
    tx: &mut dyn Tx,
    user_id: UserId,
    kind: &str,
    column: &'static str,
    amount: i64,
) -> Result<(), LedgerError> {
    let changed = tx.exec(
        &format!(
            "UPDATE value_registers SET {column} = {column} + ?1
             WHERE user_id = ?2 AND kind = ?3 AND {column} + ?1 <= issued_mills"
        ),
        &[Int(amount), Int(user_id), Text(kind)],
    )?;
    if changed != 1 {
        return Err(LedgerError::Invariant(format!(
            "{kind} register of user {user_id}: {column} would pass what was issued"
        )));
    }
    Ok(())
}

/// Issues a value item: the next number of the user's sequence of its kind, signed inside the
/// transaction; its face value reserved from the user's funds unless it is a coupon. As for
/// postage, every refusal comes before the first write (`Undo::RefusesFirst`).
pub(crate) fn issue(
    tx: &mut dyn Tx,
    ctx: Ctx<'_>,
    key: &RequestKey,
    input: &IssueInput,
    sign: &mut dyn FnMut(&PieceState) -> Result<SignedItem, String>,
    now_ms: i64,
) -> Result<IssueOutcome, LedgerError> {
    let user_id = key.user_id;
    let kind = input.kind;
    if !VALUE_KINDS.contains(&kind) {
        return Err(LedgerError::InvalidInput(format!(
            "unknown item kind {kind:?}"
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
    let funded = carries_funds(kind);
    if funded && balance < amount {
        return Err(LedgerError::InsufficientFunds {
            balance_mills: to_u64(balance, "customer balance")?,
            needed_mills: to_u64(amount, "amount")?,
        });
    }
    let register = load_register(tx, user_id, kind)?;
    let sequence = register
        .pieces
        .checked_add(1)
        .ok_or(LedgerError::Overflow)?;
    let piece = u32::try_from(sequence).map_err(|_| LedgerError::Overflow)?;
    let number = value_item_number(kind, u64::from(piece)).ok_or(LedgerError::Overflow)?;
    let issued = register_add(register.issued, amount)?;
    let new_meter = Meter {
        value_outstanding_mills: if funded {
            register_add(meter.value_outstanding_mills, amount)?
        } else {
            meter.value_outstanding_mills
        },
        ..meter.clone()
    };
    let state = PieceState {
        device_id,
        piece,
        number,
        ascending_mills: to_u64(meter.ascending_mills, "ascending register")?,
        descending_mills: to_u64(meter.descending_mills, "descending register")?,
    };
    let signed = sign_piece(tx, sign, &state)?;
    let number = i64::try_from(number).map_err(|_| LedgerError::Overflow)?;

    // The writes.
    let changed = if register.stored {
        tx.exec(
            "UPDATE value_registers SET pieces = ?1, issued_mills = issued_mills + ?2
             WHERE user_id = ?3 AND kind = ?4 AND pieces = ?5",
            &[
                Int(sequence),
                Int(amount),
                Int(user_id),
                Text(kind),
                Int(register.pieces),
            ],
        )?
    } else {
        tx.exec(
            "INSERT INTO value_registers (user_id, kind, pieces, issued_mills, returned_mills,
                 redeemed_mills)
             VALUES (?1, ?2, 1, ?3, 0, 0)",
            &[Int(user_id), Text(kind), Int(issued)],
        )?
    };
    if changed != 1 {
        return Err(LedgerError::Invariant(format!(
            "{kind} register of user {user_id} changed during the transaction"
        )));
    }
    if funded {
        store_meter(tx, ctx, &meter, &new_meter)?;
    }
    let inserted = tx.exec(
        "INSERT INTO items (serial, user_id, kind, amount_mills, piece, status, bytes,
             issued_at_ms, confirm_by_ms, settled_at_ms, session, valid_until_ms, remaining_mills)
         VALUES (?1, ?2, ?3, ?4, ?5, 'issued', ?6, ?7, NULL, NULL, ?8, ?9, ?4)
         ON CONFLICT (serial) DO NOTHING",
        &[
            Text(&signed.serial),
            Int(user_id),
            Text(kind),
            Int(amount),
            Int(number),
            Blob(&signed.bytes),
            Int(now_ms),
            OptText(input.session.as_deref()),
            OptInt(input.valid_until_ms),
        ],
    )?;
    if inserted != 1 {
        return Err(LedgerError::Invariant(format!(
            "serial {} was already issued",
            signed.serial
        )));
    }
    let (balance_after, transfer_id) = if funded {
        let moved = transfer_with_balances(
            tx,
            &Transfer {
                at_ms: now_ms,
                from: &customer_account(user_id),
                to: &reserved_account(user_id),
                amount_mills: amount,
                kind: KIND_RESERVE,
                item_serial: Some(&signed.serial),
                payment_id: None,
            },
        )?;
        user_invariants(user_id, &new_meter, moved.from_after, moved.to_after)?;
        (moved.from_after, Some(moved.id))
    } else {
        (balance, None)
    };
    let outcome = IssueOutcome {
        serial: signed.serial.clone(),
        item: signed.bytes,
        balance_mills: to_u64(balance_after, "customer balance")?,
        postage_mills: to_u64(amount, "amount")?,
        refill_due: funded && refill_due(tx, user_id, balance_after)?,
    };
    store_issue_outcome(tx, key, &outcome, now_ms)?;
    #[derive(Serialize)]
    struct IssueDetail<'a> {
        amount_mills: i64,
        kind: &'a str,
        number: i64,
        serial: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        transfer: Option<i64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        valid_until_ms: Option<i64>,
    }
    let detail = IssueDetail {
        amount_mills: amount,
        kind,
        number,
        serial: &signed.serial,
        transfer: transfer_id,
        valid_until_ms: input.valid_until_ms,
    };
    append_audit_entry(
        tx,
        now_ms,
        &user_actor(user_id),
        &action_for(kind, "issue"),
        &detail_json(&detail)?,
    )?;
    Ok(outcome)
}

/// Issued → printed: reserved:U → outstanding:KIND (no transfer for a coupon). Returns the
/// reserved balance after it.
pub(crate) fn post(tx: &mut dyn Tx, item: &Item, now_ms: i64) -> Result<i64, LedgerError> {
    let reserved = reserved_account(item.user_id);
    let (reserved_after, transfer_id) = if carries_funds(&item.kind) {
        let moved = transfer_with_balances(
            tx,
            &Transfer {
                at_ms: now_ms,
                from: &reserved,
                to: &outstanding_account(&item.kind),
                amount_mills: item.amount_mills,
                kind: KIND_POST,
                item_serial: Some(&item.serial),
                payment_id: None,
            },
        )?;
        (moved.from_after, Some(moved.id))
    } else {
        (balance_of(tx, &reserved)?, None)
    };
    super::items::set_status(tx, item, ItemStatus::Printed, now_ms)?;
    let detail = serde_json::json!({
        "serial": item.serial,
        "amount_mills": item.amount_mills,
        "printed": true,
        "transfer": transfer_id,
    });
    append_audit_entry(
        tx,
        now_ms,
        &user_actor(item.user_id),
        &action_for(&item.kind, "confirm"),
        &detail.to_string(),
    )?;
    Ok(reserved_after)
}

/// Gives an item's face value back to its issuer: an issued item voided (reserved:U →
/// customer:U) or a printed one refunded (outstanding:KIND → customer:U); the register's
/// `returned` rises and the meter's outstanding falls, its descending register stays. `to`
/// is `Voided` or `Refunded`. Coupons only change status and register.
pub(crate) fn give_back(
    tx: &mut dyn Tx,
    ctx: Ctx<'_>,
    item: &Item,
    to: ItemStatus,
    now_ms: i64,
    actor: &str,
    action: &str,
) -> Result<(), LedgerError> {
    let (from, kind) = match to {
        ItemStatus::Voided => (reserved_account(item.user_id), KIND_VOID),
        ItemStatus::Refunded => (outstanding_account(&item.kind), KIND_REFUND),
        other => {
            return Err(LedgerError::Invariant(format!(
                "value item {} cannot be given back as {other}",
                item.serial
            )));
        }
    };
    let transfer_id = if carries_funds(&item.kind) {
        let meter = lock_meter(tx, ctx, item.user_id)?;
        let new_meter = Meter {
            value_outstanding_mills: meter
                .value_outstanding_mills
                .checked_sub(item.amount_mills)
                .ok_or(LedgerError::Overflow)?,
            ..meter.clone()
        };
        let id = transfer(
            tx,
            &Transfer {
                at_ms: now_ms,
                from: &from,
                to: &customer_account(item.user_id),
                amount_mills: item.amount_mills,
                kind,
                item_serial: Some(&item.serial),
                payment_id: None,
            },
        )?;
        store_meter(tx, ctx, &meter, &new_meter)?;
        Some(id)
    } else {
        None
    };
    register_credit(
        tx,
        item.user_id,
        &item.kind,
        "returned_mills",
        item.amount_mills,
    )?;
    super::items::set_status(tx, item, to, now_ms)?;
    let detail = serde_json::json!({
        "serial": item.serial,
        "user": item.user_id,
        "amount_mills": item.amount_mills,
        "transfer": transfer_id,
    });
    append_audit_entry(
        tx,
        now_ms,
        actor,
        &action_for(&item.kind, action),
        &detail.to_string(),
    )
}

/// Whether a value item is past its valid-until time.
pub(crate) fn is_past_validity(item: &Item, now_ms: i64) -> bool {
    item.valid_until_ms.is_some_and(|until| now_ms > until)
}

/// Whether `redeemer` may redeem `issuer`'s items.
fn may_redeem(tx: &mut dyn Tx, issuer: UserId, redeemer: UserId) -> Result<bool, LedgerError> {
    if issuer == redeemer {
        return Ok(true);
    }
    Ok(tx
        .row(
            "SELECT 1 FROM redeemers WHERE issuer_id = ?1 AND redeemer_id = ?2",
            &[Int(issuer), Int(redeemer)],
        )?
        .is_some())
}

pub(crate) fn redeem(
    tx: &mut dyn Tx,
    ctx: Ctx<'_>,
    key: &RequestKey,
    serial: &str,
    amount: Option<Amount>,
    now_ms: i64,
) -> Result<RedeemOutcome, LedgerError> {
    let redeemer = key.user_id;
    let meter = lock_meter(tx, ctx, redeemer)?;
    if let Some(json) = find_outcome(tx, key, OP_REDEEM)? {
        return replay(&json);
    }
    let item = load_item_locked(tx, serial)?.ok_or(LedgerError::UnknownItem)?;
    if item.is_postage() {
        return Err(LedgerError::NotRedeemable);
    }
    if !may_redeem(tx, item.user_id, redeemer)? {
        return Err(LedgerError::NotAllowed);
    }
    let funded = carries_funds(&item.kind);
    // A closing or closed account is credited nothing more (its balance is being paid out).
    if funded && closed_at(tx, redeemer)?.is_some() {
        return Err(LedgerError::AccountClosed);
    }
    match item.status {
        ItemStatus::Printed => {}
        ItemStatus::Redeemed => return Err(LedgerError::AlreadyRedeemed),
        status => return Err(LedgerError::NotPending { status }),
    }
    if is_past_validity(&item, now_ms) {
        return Err(LedgerError::Expired);
    }
    let remaining = item
        .remaining_mills
        .ok_or_else(|| LedgerError::Corrupt(format!("value item {serial} has no remainder")))?;
    if remaining <= 0 {
        return Err(LedgerError::AlreadyRedeemed);
    }
    let take = match amount {
        None => remaining,
        Some(part) => {
            let part = positive_mills(part)?;
            if item.kind != "certificate" && part != item.amount_mills {
                return Err(LedgerError::InvalidInput(format!(
                    "only gift certificates redeem in part; a {} redeems whole",
                    item.kind
                )));
            }
            if part > remaining {
                return Err(LedgerError::InvalidInput(format!(
                    "{part} mills asked, {remaining} mills left on the item"
                )));
            }
            part
        }
    };
    let left = remaining - take;
    let status = if left == 0 {
        ItemStatus::Redeemed
    } else {
        ItemStatus::Printed
    };
    // The redemption itself: one conditional update of the item, which only the first of any
    // number of concurrent redemptions can make.
    let changed = tx.exec(
        "UPDATE items SET remaining_mills = ?1, status = ?2, settled_at_ms = ?3
         WHERE serial = ?4 AND status = 'printed' AND remaining_mills = ?5",
        &[
            Int(left),
            Text(status.as_str()),
            Int(now_ms),
            Text(serial),
            Int(remaining),
        ],
    )?;
    if changed != 1 {
        return Err(LedgerError::AlreadyRedeemed);
    }
    register_credit(tx, item.user_id, &item.kind, "redeemed_mills", take)?;
    let customer = customer_account(redeemer);
    let (balance_after, transfer_id) = if funded {
        // As for a funding: the register keeps room for every reservation's void.
        let descending = register_add(meter.descending_mills, take)?;
        register_add(descending, balance_of(tx, &reserved_account(redeemer))?)?;
        let new_meter = Meter {
            descending_mills: descending,
            ..meter.clone()
        };
        let moved = transfer_with_balances(
            tx,
            &Transfer {
                at_ms: now_ms,
                from: &outstanding_account(&item.kind),
                to: &customer,
                amount_mills: take,
                kind: KIND_REDEEM,
                item_serial: Some(serial),
                payment_id: None,
            },
        )?;
        store_meter(tx, ctx, &meter, &new_meter)?;
        let reserved = balance_of(tx, &reserved_account(redeemer))?;
        user_invariants(redeemer, &new_meter, moved.to_after, reserved)?;
        (moved.to_after, Some(moved.id))
    } else {
        (balance_of(tx, &customer)?, None)
    };
    let outcome = RedeemOutcome {
        serial: serial.to_owned(),
        kind: item.kind.clone(),
        status,
        redeemed_mills: to_u64(take, "redeemed")?,
        remaining_mills: to_u64(left, "remaining")?,
        balance_mills: to_u64(balance_after, "customer balance")?,
    };
    store_outcome(tx, key, OP_REDEEM, &outcome, now_ms)?;
    let detail = serde_json::json!({
        "serial": serial,
        "kind": item.kind,
        "issuer": item.user_id,
        "amount_mills": take,
        "remaining_mills": left,
        "transfer": transfer_id,
    });
    append_audit_entry(
        tx,
        now_ms,
        &user_actor(redeemer),
        &action_for(&item.kind, "redeem"),
        &detail.to_string(),
    )?;
    Ok(outcome)
}

pub(crate) fn add_redeemer(
    tx: &mut dyn Tx,
    issuer: UserId,
    redeemer: UserId,
    now_ms: i64,
) -> Result<(), LedgerError> {
    if issuer == redeemer {
        return Err(LedgerError::InvalidInput(
            "an issuer always redeems its own items".into(),
        ));
    }
    for id in [issuer, redeemer] {
        if tx
            .row("SELECT 1 FROM users WHERE id = ?1", &[Int(id)])?
            .is_none()
        {
            return Err(LedgerError::UnknownUser);
        }
    }
    let added = tx.exec(
        "INSERT INTO redeemers (issuer_id, redeemer_id, added_at_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (issuer_id, redeemer_id) DO NOTHING",
        &[Int(issuer), Int(redeemer), Int(now_ms)],
    )?;
    if added == 1 {
        let detail = serde_json::json!({ "issuer": issuer, "redeemer": redeemer });
        append_audit_entry(
            tx,
            now_ms,
            &user_actor(issuer),
            "redeemer_added",
            &detail.to_string(),
        )?;
    }
    Ok(())
}

pub(crate) fn remove_redeemer(
    tx: &mut dyn Tx,
    issuer: UserId,
    redeemer: UserId,
    now_ms: i64,
) -> Result<bool, LedgerError> {
    let removed = tx.exec(
        "DELETE FROM redeemers WHERE issuer_id = ?1 AND redeemer_id = ?2",
        &[Int(issuer), Int(redeemer)],
    )?;
    if removed == 1 {
        let detail = serde_json::json!({ "issuer": issuer, "redeemer": redeemer });
        append_audit_entry(
            tx,
            now_ms,
            &user_actor(issuer),
            "redeemer_removed",
            &detail.to_string(),
        )?;
    }
    Ok(removed == 1)
}

pub(crate) fn redeemers(
    tx: &mut dyn Tx,
    issuer: UserId,
) -> Result<Vec<(UserId, String)>, LedgerError> {
    tx.rows(
        "SELECT u.id, u.\"user\" FROM redeemers r JOIN users u ON u.id = r.redeemer_id
         WHERE r.issuer_id = ?1 ORDER BY u.user_key",
        &[Int(issuer)],
    )?
    .into_iter()
    .map(|r| Ok((r.int(0)?, r.text(1)?)))
    .collect()
}

pub(crate) fn value_registers(
    tx: &mut dyn Tx,
    user_id: UserId,
) -> Result<Vec<ValueRegister>, LedgerError> {
    tx.rows(
        "SELECT kind, pieces, issued_mills, returned_mills, redeemed_mills FROM value_registers
         WHERE user_id = ?1 ORDER BY kind",
        &[Int(user_id)],
    )?
    .into_iter()
    .map(|r| {
        Ok(ValueRegister {
            kind: r.text(0)?,
            pieces: to_u64(r.int(1)?, "pieces")?,
            issued_mills: to_u64(r.int(2)?, "issued")?,
            returned_mills: to_u64(r.int(3)?, "returned")?,
            redeemed_mills: to_u64(r.int(4)?, "redeemed")?,
        })
    })
    .collect()
}
