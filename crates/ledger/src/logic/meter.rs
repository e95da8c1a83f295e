//! The meter of a user: its registers (ascending, descending, piece number), their seal by the
//! crypto device, and the per-user invariants every operation asserts before it commits. Every
//! operation on a user's money starts with [`lock_meter`].

use super::Ctx;
use super::transfers::balance_of;
use super::values::to_u64;
use crate::sql::{Param, Tx};
use crate::{LedgerError, MAX_REGISTER_MILLS, UserId, customer_account, reserved_account};

use Param::Int;

/// A meter row as stored (registers in `INTEGER` mills).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Meter {
    pub(crate) user_id: UserId,
    /// `None` until the first funding licenses the customer.
    pub(crate) device_id: Option<String>,
    pub(crate) license_id: Option<String>,
    pub(crate) ascending_mills: i64,
    pub(crate) descending_mills: i64,
    pub(crate) piece: u32,
    /// What the user's funds-carrying value items hold of its funds (Σ issued − returned over
    /// tickets, checks and certificates): descending = customer balance + this.
    pub(crate) value_outstanding_mills: i64,
    pub(crate) seal: Option<Vec<u8>>,
}

impl Meter {
    /// The device id, or what names an unlicensed meter in messages.
    pub(crate) fn label(&self) -> String {
        self.device_id
            .clone()
            .unwrap_or_else(|| format!("(not licensed yet, user {})", self.user_id))
    }
}

/// The bytes a register seal covers: a domain label, the user, the device id (length-prefixed;
/// empty while the meter is not licensed) and the three registers, all big-endian; then, when
/// the user's value items hold any of its funds, that amount (8 bytes). A meter without value
/// items keeps the seal it had before value items existed.
pub fn meter_seal_message(
    user_id: UserId,
    device_id: &str,
    ascending_mills: i64,
    descending_mills: i64,
    piece: u32,
    value_outstanding_mills: i64,
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
    if value_outstanding_mills != 0 {
        out.extend_from_slice(&value_outstanding_mills.to_be_bytes());
    }
    out
}

/// The seal of a meter state, or `None` without a sealer.
pub(crate) fn seal_of(ctx: Ctx<'_>, m: &Meter) -> Result<Option<[u8; 32]>, LedgerError> {
    let Some(sealer) = ctx.sealer else {
        return Ok(None);
    };
    let msg = meter_seal_message(
        m.user_id,
        m.device_id.as_deref().unwrap_or(""),
        m.ascending_mills,
        m.descending_mills,
        m.piece,
        m.value_outstanding_mills,
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

pub(crate) fn load_meter_raw(
    tx: &mut dyn Tx,
    user_id: UserId,
) -> Result<Option<Meter>, LedgerError> {
    let sql = format!(
        "SELECT device_id, license_id, ascending_mills, descending_mills, piece, seal,
                value_outstanding_mills
         FROM meters WHERE user_id = ?1{}",
        tx.for_update()
    );
    let Some(r) = tx.row(&sql, &[Int(user_id)])? else {
        return Ok(None);
    };
    let piece = r.int(4)?;
    Ok(Some(Meter {
        user_id,
        device_id: r.opt_text(0)?,
        license_id: r.opt_text(1)?,
        ascending_mills: r.int(2)?,
        descending_mills: r.int(3)?,
        piece: u32::try_from(piece)
            .map_err(|_| LedgerError::Corrupt(format!("piece number {piece} out of range")))?,
        value_outstanding_mills: r.int(6)?,
        seal: r.opt_blob(5)?,
    }))
}

/// The user's meter, refusing one whose seal does not hold (`MeterFrozen`).
pub(crate) fn require_meter(
    tx: &mut dyn Tx,
    ctx: Ctx<'_>,
    user_id: UserId,
) -> Result<Meter, LedgerError> {
    let meter = load_meter_raw(tx, user_id)?.ok_or(LedgerError::UnknownUser)?;
    if !seal_holds(ctx, &meter)? {
        return Err(LedgerError::MeterFrozen {
            device_id: meter.label(),
            reason: "its register seal does not match the registers".into(),
        });
    }
    Ok(meter)
}

/// The first step of every operation on a user's money: locks the meter row (PostgreSQL) and
/// checks that it was not changed behind the ledger's back — the seal holds and the descending
/// register equals the spendable balance. Either break freezes the meter (`MeterFrozen`) until an
/// operator repairs it.
pub(crate) fn lock_meter(
    tx: &mut dyn Tx,
    ctx: Ctx<'_>,
    user_id: UserId,
) -> Result<Meter, LedgerError> {
    lock_meter_with_balance(tx, ctx, user_id).map(|(meter, _)| meter)
}

/// [`lock_meter`], also returning the spendable balance it checked the meter against.
pub(crate) fn lock_meter_with_balance(
    tx: &mut dyn Tx,
    ctx: Ctx<'_>,
    user_id: UserId,
) -> Result<(Meter, i64), LedgerError> {
    let meter = require_meter(tx, ctx, user_id)?;
    let customer = balance_of(tx, &customer_account(user_id))?;
    if Some(meter.descending_mills) != customer.checked_add(meter.value_outstanding_mills) {
        return Err(LedgerError::MeterFrozen {
            device_id: meter.label(),
            reason: format!(
                "its descending register ({}) differs from the balance ({customer}) and what its \
                 value items hold ({})",
                meter.descending_mills, meter.value_outstanding_mills
            ),
        });
    }
    Ok((meter, customer))
}

/// Writes `new` over `old`, asserting the register rules: ascending and the piece number never
/// decrease, both registers stay within `0..=MAX_REGISTER_MILLS`, and the row still holds `old`.
/// Seals the new state when the store has a sealer.
pub(crate) fn store_meter(
    tx: &mut dyn Tx,
    ctx: Ctx<'_>,
    old: &Meter,
    new: &Meter,
) -> Result<(), LedgerError> {
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
    if new.value_outstanding_mills < 0 {
        return Err(LedgerError::Invariant(format!(
            "value items of user {user_id} would hold a negative amount"
        )));
    }
    let seal = seal_of(ctx, new)?;
    let changed = tx.exec(
        "UPDATE meters SET ascending_mills = ?1, descending_mills = ?2, piece = ?3, seal = ?4,
                value_outstanding_mills = ?9
         WHERE user_id = ?5 AND ascending_mills = ?6 AND descending_mills = ?7 AND piece = ?8
           AND value_outstanding_mills = ?10",
        &[
            Int(new.ascending_mills),
            Int(new.descending_mills),
            Int(i64::from(new.piece)),
            Param::OptBlob(seal.as_ref().map(|s| s.as_slice())),
            Int(user_id),
            Int(old.ascending_mills),
            Int(old.descending_mills),
            Int(i64::from(old.piece)),
            Int(new.value_outstanding_mills),
            Int(old.value_outstanding_mills),
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
/// balances are not negative, and the descending register equals the customer balance plus what
/// the user's value items hold.
pub(crate) fn check_user_invariants(
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
pub(crate) fn user_invariants(
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
    if Some(meter.descending_mills) != customer.checked_add(meter.value_outstanding_mills) {
        return Err(LedgerError::Invariant(format!(
            "descending register of user {user_id} ({}) differs from the balance ({customer}) \
             and what its value items hold ({})",
            meter.descending_mills, meter.value_outstanding_mills
        )));
    }
    if meter.ascending_mills < 0 {
        return Err(LedgerError::Invariant(format!(
            "ascending register of user {user_id} is negative"
        )));
    }
    Ok(())
}
