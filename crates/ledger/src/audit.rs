//! [`Store::audit`](crate::Store::audit) for every backend: recompute every balance, register and status
//! from the transfers, items and payments, and walk the audit log's hash chain. Nothing here trusts
//! a stored total; each check compares two independent records of the same fact.

use std::collections::{BTreeMap, HashMap};

use crate::chain;
use crate::logic::Ctx;
use crate::logic::audit_log::TRANSFER_ACTIONS;
use crate::logic::meter::{Meter, seal_holds};
use crate::logic::values::{hash32, parse_status};
use crate::sql::Tx;
use crate::{
    ACCOUNT_BANK_CLEARING, ACCOUNT_POSTAGE_SOLD, AuditReport, ItemStatus, LedgerError,
    MAX_AUDIT_PROBLEMS, MAX_REGISTER_MILLS, UserId, VALUE_KINDS, carries_funds, customer_account,
    outstanding_account, reserved_account, value_item_number,
};

/// Collects problems, keeping the first [`MAX_AUDIT_PROBLEMS`] and counting the rest.
#[derive(Default)]
struct Problems {
    list: Vec<String>,
    dropped: u64,
}

impl Problems {
    fn push(&mut self, problem: String) {
        if self.list.len() < MAX_AUDIT_PROBLEMS {
            self.list.push(problem);
        } else {
            self.dropped = self.dropped.saturating_add(1);
        }
    }

    fn finish(mut self) -> Vec<String> {
        if self.dropped > 0 {
            self.list
                .push(format!("... and {} more problems", self.dropped));
        }
        self.list
    }
}

/// What the transfers say about one item.
#[derive(Default)]
struct ItemTransfers {
    reserve: u32,
    post: u32,
    void: u32,
    refund: u32,
    /// Σ redeem transfers (value items).
    redeemed_mills: i128,
}

struct AuditItem {
    user_id: UserId,
    kind: String,
    amount_mills: i64,
    status: ItemStatus,
    piece: i64,
    /// Value items: what is left to redeem.
    remaining_mills: Option<i64>,
    seen: ItemTransfers,
}

impl AuditItem {
    fn is_postage(&self) -> bool {
        self.kind == "postage"
    }
}

/// One (user, kind) value register as the items imply it.
#[derive(Default, PartialEq, Eq, Debug)]
struct ImpliedRegister {
    pieces: Vec<i64>,
    issued: i128,
    returned: i128,
    redeemed: i128,
}

/// What the transfers say about one user.
#[derive(Default)]
struct UserTotals {
    /// Σ fund + Σ void + Σ refund credited to the customer account − Σ payouts.
    control_mills: i128,
    /// Σ reserve: what the ascending register must hold.
    reserved_ever_mills: i128,
    /// Σ amounts of issued items: what reserved:U must hold.
    pending_mills: i128,
    /// Σ what the user's funds-carrying value items hold: the meter's value_outstanding_mills.
    value_outstanding_mills: i128,
    pieces: Vec<i64>,
}

struct AuditPayment {
    user_id: UserId,
    amount_mills: i64,
    funds: u32,
}

pub(crate) fn audit(tx: &mut dyn Tx, ctx: Ctx<'_>) -> Result<AuditReport, LedgerError> {
    let mut problems = Problems::default();

    // Accounts, with the balance the transfers imply.
    let mut accounts: BTreeMap<String, (i64, i128)> = BTreeMap::new();
    for row in tx.rows("SELECT id, balance FROM accounts", &[])? {
        accounts.insert(row.text(0)?, (row.int(1)?, 0));
    }
    let total: i128 = accounts
        .values()
        .map(|(balance, _)| i128::from(*balance))
        .sum();
    if total != 0 {
        problems.push(format!("account balances sum to {total}, not 0"));
    }
    for required in [ACCOUNT_BANK_CLEARING, ACCOUNT_POSTAGE_SOLD] {
        if !accounts.contains_key(required) {
            problems.push(format!("account {required} is missing"));
        }
    }

    let mut items: HashMap<String, AuditItem> = HashMap::new();
    for row in tx.rows(
        "SELECT serial, user_id, kind, amount_mills, status, piece, remaining_mills FROM items",
        &[],
    )? {
        {
            let serial: String = row.text(0)?;
            let status: String = row.text(4)?;
            let status = match parse_status(&status) {
                Ok(status) => status,
                Err(e) => {
                    problems.push(format!("item {serial}: {e}"));
                    continue;
                }
            };
            items.insert(
                serial,
                AuditItem {
                    user_id: row.int(1)?,
                    kind: row.text(2)?,
                    amount_mills: row.int(3)?,
                    status,
                    piece: row.int(5)?,
                    remaining_mills: row.opt_int(6)?,
                    seen: ItemTransfers::default(),
                },
            );
        }
    }

    let mut payments: HashMap<String, AuditPayment> = HashMap::new();
    for row in tx.rows(
        "SELECT payment_id, user_id, amount_mills FROM payments",
        &[],
    )? {
        payments.insert(
            row.text(0)?,
            AuditPayment {
                user_id: row.int(1)?,
                amount_mills: row.int(2)?,
                funds: 0,
            },
        );
    }

    let mut users: BTreeMap<UserId, UserTotals> = BTreeMap::new();
    for row in tx.rows("SELECT id FROM users", &[])? {
        users.insert(row.int(0)?, UserTotals::default());
    }

    // Transfers: each must have the shape its kind implies.
    let mut transfer_ids: Vec<i64> = Vec::new();
    for row in tx.rows(
        "SELECT id, from_account, to_account, amount_mills, kind, item_serial, payment_id
         FROM transfers ORDER BY id",
        &[],
    )? {
        {
            let id: i64 = row.int(0)?;
            let from: String = row.text(1)?;
            let to: String = row.text(2)?;
            let amount: i64 = row.int(3)?;
            let kind: String = row.text(4)?;
            let serial: Option<String> = row.opt_text(5)?;
            let payment_id: Option<String> = row.opt_text(6)?;
            transfer_ids.push(id);
            if amount <= 0 {
                problems.push(format!(
                    "transfer {id} moves {amount}, not a positive amount"
                ));
            }
            for (account, sign) in [(&from, -1i128), (&to, 1i128)] {
                match accounts.get_mut(account) {
                    Some((_, implied)) => *implied += sign * i128::from(amount),
                    None => problems.push(format!("transfer {id} names unknown account {account}")),
                }
            }
            let ok = match (kind.as_str(), serial.as_deref(), payment_id.as_deref()) {
                ("fund", None, Some(pid)) => {
                    check_fund(id, &from, &to, amount, pid, &mut payments, &mut users)
                }
                ("payout", None, Some(pid)) => {
                    check_payout(id, &from, &to, amount, pid, &payments, &mut users)
                }
                ("reserve" | "post" | "void" | "refund" | "redeem", Some(serial), None) => {
                    check_item_transfer(
                        id, &kind, &from, &to, amount, serial, &mut items, &mut users,
                    )
                }
                _ => Err(format!(
                    "transfer {id} of kind {kind} has the wrong item or payment reference"
                )),
            };
            if let Err(problem) = ok {
                problems.push(problem);
            }
        }
    }

    for (account, (balance, implied)) in &accounts {
        if i128::from(*balance) != *implied {
            problems.push(format!(
                "account {account} holds {balance} but its transfers sum to {implied}"
            ));
        }
        if *balance < 0 && (account.starts_with("customer:") || account.starts_with("reserved:")) {
            problems.push(format!("account {account} is negative ({balance})"));
        }
    }

    let mut registers: BTreeMap<(UserId, String), ImpliedRegister> = BTreeMap::new();
    let mut outstanding: BTreeMap<String, i128> = BTreeMap::new();
    for (serial, item) in &items {
        let s = &item.seen;
        let funded = item.is_postage() || carries_funds(&item.kind);
        let expected = match (funded, item.status) {
            (false, _) => (0, 0, 0, 0),
            (true, ItemStatus::Issued) => (1, 0, 0, 0),
            (true, ItemStatus::Printed | ItemStatus::Redeemed) => (1, 1, 0, 0),
            (true, ItemStatus::Voided) => (1, 0, 1, 0),
            (true, ItemStatus::Refunded) => (1, 1, 0, 1),
        };
        if (s.reserve, s.post, s.void, s.refund) != expected {
            problems.push(format!(
                "item {serial} is {} but has {} reserve, {} post, {} void, {} refund transfers",
                item.status, s.reserve, s.post, s.void, s.refund
            ));
        }
        if item.status == ItemStatus::Redeemed && item.is_postage() {
            problems.push(format!("postage item {serial} is marked redeemed"));
        }
        let Some(totals) = users.get_mut(&item.user_id) else {
            problems.push(format!(
                "item {serial} belongs to unknown user {}",
                item.user_id
            ));
            continue;
        };
        if funded && item.status == ItemStatus::Issued {
            totals.pending_mills += i128::from(item.amount_mills);
        }
        if item.is_postage() {
            totals.pieces.push(item.piece);
            if item.remaining_mills.is_some() || s.redeemed_mills != 0 {
                problems.push(format!(
                    "postage item {serial} has a value item's remainder"
                ));
            }
            continue;
        }
        // A value item: what is left, what was redeemed, and what it holds of its issuer's funds.
        let amount = i128::from(item.amount_mills);
        let left = i128::from(item.remaining_mills.unwrap_or(-1));
        let redeemed = amount - left;
        let left_ok = match item.status {
            ItemStatus::Issued | ItemStatus::Voided | ItemStatus::Refunded => left == amount,
            ItemStatus::Printed => left > 0 && left <= amount,
            ItemStatus::Redeemed => left == 0,
        };
        if !left_ok {
            problems.push(format!(
                "{} {serial} is {} with {} of {amount} left to redeem",
                item.kind, item.status, left
            ));
        }
        if funded && s.redeemed_mills != redeemed {
            problems.push(format!(
                "{} {serial}: {redeemed} redeemed but its redeem transfers move {}",
                item.kind, s.redeemed_mills
            ));
        }
        let holds = matches!(
            item.status,
            ItemStatus::Issued | ItemStatus::Printed | ItemStatus::Redeemed
        );
        if funded && holds {
            totals.value_outstanding_mills += amount;
        }
        if funded && item.status == ItemStatus::Printed {
            *outstanding.entry(item.kind.clone()).or_default() += left;
        }
        let register = registers
            .entry((item.user_id, item.kind.clone()))
            .or_default();
        register.pieces.push(item.piece);
        register.issued += amount;
        if !holds {
            register.returned += amount;
        }
        register.redeemed += redeemed;
    }
    for kind in VALUE_KINDS.into_iter().filter(|k| carries_funds(k)) {
        let account = outstanding_account(kind);
        let holds = accounts.get(&account).map_or(0, |a| i128::from(a.0));
        let implied = outstanding.get(kind).copied().unwrap_or(0);
        if holds != implied {
            problems.push(format!(
                "account {account} holds {holds} but printed {kind}s have {implied} left to redeem"
            ));
        }
    }
    check_value_registers(tx, &registers, &mut problems)?;

    for (payment_id, payment) in &payments {
        if payment.funds != 1 {
            problems.push(format!(
                "payment {payment_id} has {} fund transfers, not 1",
                payment.funds
            ));
        }
    }

    check_meters(tx, ctx, &accounts, &mut users, &mut problems)?;
    let audit_entries = check_audit_log(tx, &transfer_ids, &mut problems)?;

    Ok(AuditReport {
        problems: problems.finish(),
        accounts: count(accounts.len()),
        transfers: count(transfer_ids.len()),
        items: count(items.len()),
        audit_entries,
    })
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// The user id of "customer:U" or "reserved:U".
fn account_user(account: &str, prefix: &str) -> Option<UserId> {
    account.strip_prefix(prefix)?.parse().ok()
}

fn check_fund(
    id: i64,
    from: &str,
    to: &str,
    amount: i64,
    payment_id: &str,
    payments: &mut HashMap<String, AuditPayment>,
    users: &mut BTreeMap<UserId, UserTotals>,
) -> Result<(), String> {
    let Some(user_id) = account_user(to, "customer:") else {
        return Err(format!("fund transfer {id} credits {to}, not a customer"));
    };
    if from != ACCOUNT_BANK_CLEARING {
        return Err(format!(
            "fund transfer {id} debits {from}, not {ACCOUNT_BANK_CLEARING}"
        ));
    }
    let Some(payment) = payments.get_mut(payment_id) else {
        return Err(format!(
            "fund transfer {id} names unknown payment {payment_id}"
        ));
    };
    payment.funds = payment.funds.saturating_add(1);
    if payment.user_id != user_id || payment.amount_mills != amount {
        return Err(format!(
            "fund transfer {id} ({amount} to user {user_id}) differs from payment {payment_id} \
             ({} for user {})",
            payment.amount_mills, payment.user_id
        ));
    }
    match users.get_mut(&user_id) {
        Some(totals) => totals.control_mills += i128::from(amount),
        None => return Err(format!("fund transfer {id} credits unknown user {user_id}")),
    }
    Ok(())
}

/// A balance paid back at closure: customer:U → bank_clearing, naming one of U's payments; it
/// lowers U's control total.
fn check_payout(
    id: i64,
    from: &str,
    to: &str,
    amount: i64,
    payment_id: &str,
    payments: &HashMap<String, AuditPayment>,
    users: &mut BTreeMap<UserId, UserTotals>,
) -> Result<(), String> {
    let Some(user_id) = account_user(from, "customer:") else {
        return Err(format!(
            "payout transfer {id} debits {from}, not a customer"
        ));
    };
    if to != ACCOUNT_BANK_CLEARING {
        return Err(format!(
            "payout transfer {id} credits {to}, not {ACCOUNT_BANK_CLEARING}"
        ));
    }
    match payments.get(payment_id) {
        Some(p) if p.user_id == user_id => {}
        _ => {
            return Err(format!(
                "payout transfer {id} names payment {payment_id}, not one of user {user_id}'s"
            ));
        }
    }
    match users.get_mut(&user_id) {
        Some(totals) => totals.control_mills -= i128::from(amount),
        None => {
            return Err(format!(
                "payout transfer {id} debits unknown user {user_id}"
            ));
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn check_item_transfer(
    id: i64,
    kind: &str,
    from: &str,
    to: &str,
    amount: i64,
    serial: &str,
    items: &mut HashMap<String, AuditItem>,
    users: &mut BTreeMap<UserId, UserTotals>,
) -> Result<(), String> {
    let Some(item) = items.get_mut(serial) else {
        return Err(format!("{kind} transfer {id} names unknown item {serial}"));
    };
    let customer = customer_account(item.user_id);
    let reserved = reserved_account(item.user_id);
    let postage = item.is_postage();
    if !postage && !carries_funds(&item.kind) {
        return Err(format!(
            "{kind} transfer {id} names {} {serial}, which carries no funds",
            item.kind
        ));
    }
    let sold = if postage {
        ACCOUNT_POSTAGE_SOLD.to_owned()
    } else {
        outstanding_account(&item.kind)
    };
    if kind == "redeem" {
        return check_redeem(id, from, to, amount, serial, &sold, item, users);
    }
    let (expected_from, expected_to, counter) = match kind {
        "reserve" => (customer.as_str(), reserved.as_str(), &mut item.seen.reserve),
        "post" => (reserved.as_str(), sold.as_str(), &mut item.seen.post),
        "void" => (reserved.as_str(), customer.as_str(), &mut item.seen.void),
        _ => (sold.as_str(), customer.as_str(), &mut item.seen.refund),
    };
    *counter = counter.saturating_add(1);
    if from != expected_from || to != expected_to || amount != item.amount_mills {
        return Err(format!(
            "{kind} transfer {id} of item {serial} moves {amount} from {from} to {to}, expected \
             {} from {expected_from} to {expected_to}",
            item.amount_mills
        ));
    }
    let Some(totals) = users.get_mut(&item.user_id) else {
        return Err(format!(
            "item {serial} belongs to unknown user {}",
            item.user_id
        ));
    };
    // A value item's reservation and its return never touch the postage registers.
    match kind {
        "reserve" if postage => totals.reserved_ever_mills += i128::from(amount),
        "void" | "refund" if postage => totals.control_mills += i128::from(amount),
        _ => {}
    }
    Ok(())
}

/// A redemption: outstanding:KIND → customer:REDEEMER, within what the item holds; it raises the
/// redeemer's control total (its descending register rose by it, as for a funding).
#[allow(clippy::too_many_arguments)]
fn check_redeem(
    id: i64,
    from: &str,
    to: &str,
    amount: i64,
    serial: &str,
    outstanding: &str,
    item: &mut AuditItem,
    users: &mut BTreeMap<UserId, UserTotals>,
) -> Result<(), String> {
    if item.is_postage() {
        return Err(format!("redeem transfer {id} names postage item {serial}"));
    }
    item.seen.redeemed_mills += i128::from(amount);
    let Some(redeemer) = account_user(to, "customer:") else {
        return Err(format!("redeem transfer {id} credits {to}, not a customer"));
    };
    if from != outstanding || amount > item.amount_mills {
        return Err(format!(
            "redeem transfer {id} of item {serial} moves {amount} from {from}, expected at most \
             {} from {outstanding}",
            item.amount_mills
        ));
    }
    match users.get_mut(&redeemer) {
        Some(totals) => totals.control_mills += i128::from(amount),
        None => {
            return Err(format!(
                "redeem transfer {id} credits unknown user {redeemer}"
            ));
        }
    }
    Ok(())
}

/// Each stored value register against what its items imply: the sequence numbered from 1
/// without gaps, and the issued, returned and redeemed sums.
fn check_value_registers(
    tx: &mut dyn Tx,
    implied: &BTreeMap<(UserId, String), ImpliedRegister>,
    problems: &mut Problems,
) -> Result<(), LedgerError> {
    let mut stored: BTreeMap<(UserId, String), (i64, i64, i64, i64)> = BTreeMap::new();
    for row in tx.rows(
        "SELECT user_id, kind, pieces, issued_mills, returned_mills, redeemed_mills
         FROM value_registers",
        &[],
    )? {
        stored.insert(
            (row.int(0)?, row.text(1)?),
            (row.int(2)?, row.int(3)?, row.int(4)?, row.int(5)?),
        );
    }
    let empty = ImpliedRegister::default();
    let keys: std::collections::BTreeSet<&(UserId, String)> =
        stored.keys().chain(implied.keys()).collect();
    for key in keys {
        let (user_id, kind) = key;
        let who = format!("{kind} register of user {user_id}");
        let Some(&(pieces, issued, returned, redeemed)) = stored.get(key) else {
            problems.push(format!("{who} is missing, though the user issued {kind}s"));
            continue;
        };
        let items = implied.get(key).unwrap_or(&empty);
        let mut numbers = items.pieces.clone();
        numbers.sort_unstable();
        let expected: Vec<i64> = (1..=pieces.max(0))
            .filter_map(|n| u64::try_from(n).ok())
            .filter_map(|n| value_item_number(kind, n))
            .filter_map(|n| i64::try_from(n).ok())
            .collect();
        if numbers != expected {
            problems.push(format!(
                "{who}: {pieces} issued by its sequence, but {} items numbered otherwise",
                numbers.len()
            ));
        }
        let sums = [
            ("issued", issued, items.issued),
            ("returned", returned, items.returned),
            ("redeemed", redeemed, items.redeemed),
        ];
        for (name, register, from_items) in sums {
            if i128::from(register) != from_items {
                problems.push(format!(
                    "{who}: {name} register {register}, its items say {from_items}"
                ));
            }
        }
    }
    Ok(())
}

fn check_meters(
    tx: &mut dyn Tx,
    ctx: Ctx<'_>,
    accounts: &BTreeMap<String, (i64, i128)>,
    users: &mut BTreeMap<UserId, UserTotals>,
    problems: &mut Problems,
) -> Result<(), LedgerError> {
    let mut with_meter = std::collections::BTreeSet::new();
    let rows = tx.rows(
        "SELECT user_id, device_id, license_id, ascending_mills, descending_mills, piece, seal,
                value_outstanding_mills
         FROM meters",
        &[],
    )?;
    for row in rows {
        let user_id: UserId = row.int(0)?;
        let ascending: i64 = row.int(3)?;
        let descending: i64 = row.int(4)?;
        let piece: i64 = row.int(5)?;
        with_meter.insert(user_id);
        let mut meter = Meter {
            user_id,
            device_id: row.opt_text(1)?,
            license_id: row.opt_text(2)?,
            ascending_mills: ascending,
            descending_mills: descending,
            piece: 0,
            value_outstanding_mills: row.int(7)?,
            seal: row.opt_blob(6)?,
        };
        let who = format!("meter {} (user {user_id})", meter.label());
        let sealed = match u32::try_from(piece) {
            Ok(piece_u32) => {
                meter.piece = piece_u32;
                seal_holds(ctx, &meter)?
            }
            Err(_) => false,
        };
        if !sealed {
            problems.push(format!(
                "{who}: register seal does not match the registers (edited behind the ledger)"
            ));
        }
        let Some(totals) = users.get_mut(&user_id) else {
            problems.push(format!("{who} has no user"));
            continue;
        };
        let customer = accounts.get(&customer_account(user_id)).map(|a| a.0);
        let reserved = accounts.get(&reserved_account(user_id)).map(|a| a.0);
        let (Some(customer), Some(reserved)) = (customer, reserved) else {
            problems.push(format!("{who} lacks its customer or reserved account"));
            continue;
        };
        for (name, value) in [("ascending", ascending), ("descending", descending)] {
            if value < 0 || u64::try_from(value).is_ok_and(|v| v > MAX_REGISTER_MILLS) {
                problems.push(format!("{who}: {name} register {value} out of range"));
            }
        }
        let value_outstanding = meter.value_outstanding_mills;
        if i128::from(descending) != i128::from(customer) + i128::from(value_outstanding) {
            problems.push(format!(
                "{who}: descending register {descending} differs from balance {customer} plus \
                 the {value_outstanding} its value items hold"
            ));
        }
        if i128::from(value_outstanding) != totals.value_outstanding_mills {
            problems.push(format!(
                "{who}: value items hold {value_outstanding} by the meter, {} by the items",
                totals.value_outstanding_mills
            ));
        }
        if i128::from(ascending) != totals.reserved_ever_mills {
            problems.push(format!(
                "{who}: ascending register {ascending} differs from the {} issued",
                totals.reserved_ever_mills
            ));
        }
        let registers = i128::from(ascending) + i128::from(descending);
        if registers != totals.control_mills {
            problems.push(format!(
                "{who}: ascending + descending = {registers}, control total is {}",
                totals.control_mills
            ));
        }
        if i128::from(reserved) != totals.pending_mills {
            problems.push(format!(
                "{who}: reserved balance {reserved} differs from the {} of issued items",
                totals.pending_mills
            ));
        }
        totals.pieces.sort_unstable();
        let consecutive = totals
            .pieces
            .iter()
            .zip(1i64..)
            .all(|(&piece, expected)| piece == expected);
        if !consecutive || i64::try_from(totals.pieces.len()).ok() != Some(piece) {
            problems.push(format!(
                "{who}: piece counter {piece} but {} items, numbered {}",
                totals.pieces.len(),
                if consecutive {
                    "1 upwards"
                } else {
                    "with gaps or repeats"
                }
            ));
        }
    }
    for user_id in users.keys() {
        if !with_meter.contains(user_id) {
            problems.push(format!("user {user_id} has no meter"));
        }
    }
    Ok(())
}

/// Only the audit log's hash chains (what the server checks when it starts): each problem found.
pub(crate) fn audit_chains(tx: &mut dyn Tx, _: Ctx<'_>) -> Result<Vec<String>, LedgerError> {
    let mut problems = Problems::default();
    walk_audit_log(tx, &mut problems)?;
    Ok(problems.finish())
}

/// Walks the hash chain and checks that every transfer is logged exactly once. Returns the number
/// of entries.
fn check_audit_log(
    tx: &mut dyn Tx,
    transfer_ids: &[i64],
    problems: &mut Problems,
) -> Result<u64, LedgerError> {
    let (entries, mut logged) = walk_audit_log(tx, problems)?;
    for id in transfer_ids {
        match logged.remove(id) {
            Some(1) => {}
            Some(n) => problems.push(format!("transfer {id} is logged {n} times")),
            None => problems.push(format!("transfer {id} is not in the audit log")),
        }
    }
    for id in logged.keys() {
        problems.push(format!(
            "audit log names transfer {id}, which does not exist"
        ));
    }
    Ok(entries)
}

/// Walks every hash chain of the audit log; returns the number of entries and how many times each
/// transfer is named.
fn walk_audit_log(
    tx: &mut dyn Tx,
    problems: &mut Problems,
) -> Result<(u64, HashMap<i64, u32>), LedgerError> {
    let mut logged: HashMap<i64, u32> = HashMap::new();
    // Every chain is walked from its genesis (SQLite has chain 0 only; PostgreSQL one per
    // connection that appended).
    let rows = tx.rows(
        "SELECT chain, seq, at_ms, actor, action, detail, prev_hash, hash FROM audit_log
         ORDER BY chain, seq",
        &[],
    )?;
    let mut current_chain = None;
    let mut prev_seq = 0i64;
    let mut prev_hash = chain::GENESIS_HASH;
    let mut entries = 0u64;
    for row in rows {
        entries = entries.saturating_add(1);
        let chain_id: i64 = row.int(0)?;
        if current_chain != Some(chain_id) {
            current_chain = Some(chain_id);
            prev_seq = 0;
            prev_hash = chain::GENESIS_HASH;
        }
        let seq: i64 = row.int(1)?;
        let at_ms: i64 = row.int(2)?;
        let actor: String = row.text(3)?;
        let action: String = row.text(4)?;
        let detail: String = row.text(5)?;
        let stored_prev: Vec<u8> = row.blob(6)?;
        let stored_hash: Vec<u8> = row.blob(7)?;
        let on = if chain_id == 0 {
            String::new()
        } else {
            format!(" (chain {chain_id})")
        };
        if Some(seq) != prev_seq.checked_add(1) {
            problems.push(format!(
                "audit log{on} jumps from entry {prev_seq} to {seq} (entries missing)"
            ));
        }
        if stored_prev.as_slice() != prev_hash.as_slice() {
            problems.push(format!(
                "audit entry {seq}{on}: previous hash does not match entry {prev_seq}"
            ));
        }
        let computed = chain::entry_hash(&prev_hash, seq, at_ms, &actor, &action, &detail);
        match hash32(&stored_hash, "audit hash") {
            Ok(hash) if hash == computed => {}
            _ => problems.push(format!(
                "audit entry {seq}{on}: hash does not match its content"
            )),
        }
        // Continue the chain from the stored hash, so that one edit is reported once.
        prev_hash = hash32(&stored_hash, "audit hash").unwrap_or(computed);
        prev_seq = seq;
        if TRANSFER_ACTIONS.contains(&action.as_str()) {
            let transfer = serde_json::from_str::<serde_json::Value>(&detail)
                .ok()
                .and_then(|v| v.get("transfer").and_then(serde_json::Value::as_i64));
            match transfer {
                Some(id) => *logged.entry(id).or_insert(0) += 1,
                None => problems.push(format!(
                    "audit entry {seq} ({action}) does not name its transfer"
                )),
            }
        }
    }
    Ok((entries, logged))
}
