//! The ledger as a state machine against a simple model (proptest): random sequences of
//! operations by a few users — fundings (zero, ordinary, near the register limit, a payment id
//! already used), issues (postage and tickets, zero, beyond the balance, beyond the ascending
//! register), print confirmations and voids, refunds inside and outside the refund window,
//! redemptions, confirmation windows and their expiry, time passing, account closures (begin,
//! plan, payouts; then everything that moves money is refused), and repeats of earlier requests
//! (the same request: the first answer, nothing moves twice; another request under a used id:
//! `id_reused`). The model is a few integers per user and a list of items; after every step the
//! store must agree with it: the operation's answer (its values or its error), every user's
//! balance view, meter and history, and the control total (ascending + descending + paid out =
//! funded + voided + refunded; descending = the customer balance; descending + reserved within
//! the register's range, so that every void fits). After each sequence the audit is clean and
//! the accounts, read straight from the database, are the model's and sum to zero. A failing
//! sequence is shrunk by proptest and then by [`minimize`] (single steps removed until none can
//! go).
//!
//! Case counts (debug build, this machine): SQLite [`SQLITE_CASES`] sequences, PostgreSQL
//! [`POSTGRES_CASES`] (a fresh database per sequence, and every step is a round trip), each
//! of up to [`MAX_STEPS`] steps; both well under a minute. PostgreSQL skips, saying why, when it
//! is not reachable, unless `STAMPLINE_REQUIRE_ALL=1`.

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use stampline_ledger::pgtest::TestDatabase;
use stampline_ledger::testsuite::{self, T0_MS, TestSealer};
use stampline_ledger::{
    BalanceView, CloseOutcome, CloseStart, Fingerprint, FundInput, FundOutcome, IssueInput,
    IssueOutcome, ItemStatus, ItemSummary, LedgerError, MAX_HISTORY_LIMIT, Payout, PgStore,
    PieceState, RedeemOutcome, RequestKey, SqliteStore, StatusOutcome, Store, UserId,
    customer_account, reserved_account,
};
use stampline_money::{Amount, MAX_MILLS};

/// Sequences run on SQLite (about 25 s in a debug build; `PROPTEST_CASES` overrides both counts).
const SQLITE_CASES: u32 = 128;
/// Sequences run on PostgreSQL (about 39 s in a debug build: a database per sequence).
const POSTGRES_CASES: u32 = 40;
/// Longest sequence.
const MAX_STEPS: usize = 200;
/// Users per sequence.
const USERS: usize = 3;
/// The refund window every refund asks with.
const REFUND_WINDOW_MS: i64 = 2 * HOUR_MS;
const QUARTER_MS: i64 = 15 * 60_000;
const HOUR_MS: i64 = 4 * QUARTER_MS;
/// A serial no store ever issues.
const UNKNOWN_SERIAL: &str = "SL0199999999-1";

// ---- Operations as generated (indices resolved against the model when they run) ----

/// A request that carries a request id, before it is resolved.
#[derive(Clone, Debug)]
enum Call {
    /// Fund by card; `reuse_payment` names an earlier payment id (any user's) instead of a new one.
    Fund {
        mills: u64,
        reuse_payment: Option<Index>,
    },
    Issue {
        ticket: bool,
        mills: u64,
    },
    /// The item is one of the user's, or with `anyone` one of every item issued so far (any
    /// user's) and an unknown serial.
    Confirm {
        item: Index,
        anyone: bool,
        printed: bool,
    },
    Refund {
        item: Index,
        anyone: bool,
    },
    /// Redeem an item: one of the user's own, or with `anyone` any item (another user's is
    /// `not_allowed`: the model names no redeemers).
    Redeem {
        item: Index,
        anyone: bool,
    },
}

#[derive(Clone, Debug)]
enum Op {
    /// A new request under a new request id.
    New {
        user: usize,
        call: Call,
    },
    /// An earlier request sent again exactly (same user, id and fields).
    Retry {
        request: Index,
    },
    /// Another request under an earlier request's user and id.
    Reuse {
        request: Index,
        call: Call,
    },
    /// Starts the confirmation window of one user's (or everyone's) issued items, `in_ms` from now.
    StartWindow {
        user: Option<usize>,
        in_ms: i64,
    },
    VoidExpired,
    Advance {
        ms: i64,
    },
    /// Closes the user's account as the server does: begin, fix the plan, book the payouts.
    Close {
        user: usize,
    },
}

fn mills() -> impl Strategy<Value = u64> {
    prop_oneof![
        1 => Just(0u64),
        6 => 1..=5_000u64,
        2 => 5_000..=50_000u64,
        1 => (MAX_MILLS - 2)..=MAX_MILLS,
        1 => Just(MAX_MILLS / 2 + 1),
    ]
}

fn call() -> impl Strategy<Value = Call> {
    prop_oneof![
        3 => (mills(), prop::option::weighted(0.1, any::<Index>()))
            .prop_map(|(mills, reuse_payment)| Call::Fund { mills, reuse_payment }),
        5 => (prop::bool::weighted(0.2), mills())
            .prop_map(|(ticket, mills)| Call::Issue { ticket, mills }),
        4 => (any::<Index>(), prop::bool::weighted(0.15), prop::bool::weighted(0.7))
            .prop_map(|(item, anyone, printed)| Call::Confirm { item, anyone, printed }),
        2 => (any::<Index>(), prop::bool::weighted(0.15))
            .prop_map(|(item, anyone)| Call::Refund { item, anyone }),
        2 => (any::<Index>(), prop::bool::weighted(0.3))
            .prop_map(|(item, anyone)| Call::Redeem { item, anyone }),
    ]
}

/// Times in quarter hours (so that deadlines and windows are met exactly), or a little.
fn delay() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0i64),
        1..=999i64,
        (1..=8i64).prop_map(|q| q * QUARTER_MS)
    ]
}

/// A closure is rare (about one per sequence), as it ends what its user can do.
fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        56 => (0..USERS, call()).prop_map(|(user, call)| Op::New { user, call }),
        8 => any::<Index>().prop_map(|request| Op::Retry { request }),
        4 => (any::<Index>(), call()).prop_map(|(request, call)| Op::Reuse { request, call }),
        4 => (prop::option::of(0..USERS), (0..=4i64).prop_map(|q| q * QUARTER_MS))
            .prop_map(|(user, in_ms)| Op::StartWindow { user, in_ms }),
        4 => Just(Op::VoidExpired),
        8 => delay().prop_map(|ms| Op::Advance { ms }),
        1 => (0..USERS).prop_map(|user| Op::Close { user }),
    ]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 1..=MAX_STEPS)
}

// ---- Requests as sent, and the model ----

/// A resolved request: what its fingerprint covers.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Request {
    Fund { mills: u64, payment_id: String },
    Issue { kind: &'static str, mills: u64 },
    Confirm { serial: String, printed: bool },
    Refund { serial: String },
    Redeem { serial: String },
    Close,
}

impl Request {
    fn fingerprint(&self) -> [u8; 32] {
        let fp = match self {
            Request::Fund { mills, payment_id } => Fingerprint::of(
                "fund",
                &[mills.to_string().as_bytes(), payment_id.as_bytes()],
            ),
            Request::Issue { kind, mills } => {
                Fingerprint::of("issue", &[kind.as_bytes(), mills.to_string().as_bytes()])
            }
            Request::Confirm { serial, printed } => Fingerprint::of(
                "confirm",
                &[serial.as_bytes(), if *printed { b"1" } else { b"0" }],
            ),
            Request::Refund { serial } => Fingerprint::of("refund", &[serial.as_bytes()]),
            Request::Redeem { serial } => Fingerprint::of("redeem", &[serial.as_bytes()]),
            Request::Close => Fingerprint::of("close", &[]),
        };
        fp.0
    }
}

/// A request sent, to be sent again by [`Op::Retry`] and [`Op::Reuse`].
#[derive(Clone, Debug)]
struct Sent {
    user: usize,
    id: String,
    request: Request,
}

/// A successful answer.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Fund(FundOutcome),
    Issue(IssueOutcome),
    Status(StatusOutcome),
    Redeem(RedeemOutcome),
    Close(CloseOutcome),
}

/// An answer: the outcome, or the error as [`error_key`] writes it.
type Answer = Result<Outcome, String>;

/// The error's wire code, with the fields that matter for the two errors that carry numbers.
fn error_key(e: &LedgerError) -> String {
    match e {
        LedgerError::InsufficientFunds {
            balance_mills,
            needed_mills,
        } => insufficient(*balance_mills, *needed_mills),
        LedgerError::NotPending { status } => not_pending(*status),
        e => e.code().to_owned(),
    }
}

fn insufficient(balance_mills: u64, needed_mills: u64) -> String {
    format!("insufficient_funds {balance_mills} < {needed_mills}")
}

fn not_pending(status: ItemStatus) -> String {
    format!("not_pending {status}")
}

#[derive(Clone, Debug)]
struct UserModel {
    id: UserId,
    device: String,
    balance: u64,
    reserved: u64,
    ascending: u64,
    descending: u64,
    piece: u32,
    /// Σ fundings, and Σ voids and refunds: together the control total.
    funded: u64,
    credited: u64,
    /// Σ payouts at closure (customer:U → bank_clearing).
    paid_out: u64,
    closed: bool,
    /// Tickets: the last number of the user's sequence, Σ issued (the register), and what the
    /// user's tickets hold of its funds (issued, printed or redeemed, not voided or refunded).
    tickets: u32,
    tickets_issued: u64,
    outstanding: u64,
}

#[derive(Clone, Debug)]
struct ItemModel {
    serial: String,
    user: usize,
    kind: &'static str,
    mills: u64,
    status: ItemStatus,
    issued_at_ms: i64,
    confirm_by_ms: Option<i64>,
}

#[derive(Debug)]
struct Model {
    now_ms: i64,
    users: Vec<UserModel>,
    /// Every item, in issue order.
    items: Vec<ItemModel>,
    /// Every payment: id, user, mills.
    payments: Vec<(String, usize, u64)>,
    /// The stored outcome of every successful request, by user and request id.
    requests: HashMap<(usize, String), (Request, Outcome)>,
    sent: Vec<Sent>,
    postage_sold: u64,
    /// The balance of outstanding:ticket: printed tickets not yet redeemed.
    tickets_outstanding: u64,
    next_id: u64,
}

impl Model {
    fn new(user_ids: &[UserId]) -> Model {
        let users = user_ids
            .iter()
            .zip(1u32..)
            .map(|(&id, n)| UserModel {
                id,
                device: testsuite::device_id(n),
                balance: 0,
                reserved: 0,
                ascending: 0,
                descending: 0,
                piece: 0,
                funded: 0,
                credited: 0,
                paid_out: 0,
                closed: false,
                tickets: 0,
                tickets_issued: 0,
                outstanding: 0,
            })
            .collect();
        Model {
            now_ms: T0_MS,
            users,
            items: Vec::new(),
            payments: Vec::new(),
            requests: HashMap::new(),
            sent: Vec::new(),
            postage_sold: 0,
            tickets_outstanding: 0,
            next_id: 0,
        }
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{}", self.next_id)
    }

    /// The serial an index picks: an item of anyone's, or (one time in n + 1) an unknown one.
    fn pick_serial(&self, index: &Index) -> String {
        let i = index.index(self.items.len() + 1);
        self.items
            .get(i)
            .map_or_else(|| UNKNOWN_SERIAL.to_owned(), |item| item.serial.clone())
    }

    /// The serial an index picks for `user`: one of the user's items (an unknown serial while
    /// there is none), or with `anyone` as [`Model::pick_serial`].
    fn pick_for(&self, user: usize, index: &Index, anyone: bool) -> String {
        let own: Vec<&ItemModel> = self.items.iter().filter(|i| i.user == user).collect();
        if anyone || own.is_empty() {
            return self.pick_serial(index);
        }
        own[index.index(own.len())].serial.clone()
    }

    fn resolve(&mut self, user: usize, call: &Call) -> Request {
        match call {
            Call::Fund {
                mills,
                reuse_payment,
            } => {
                let payment_id = match reuse_payment {
                    Some(i) if !self.payments.is_empty() => {
                        self.payments[i.index(self.payments.len())].0.clone()
                    }
                    _ => self.fresh("pay-"),
                };
                Request::Fund {
                    mills: *mills,
                    payment_id,
                }
            }
            Call::Issue { ticket, mills } => Request::Issue {
                kind: if *ticket { "ticket" } else { "postage" },
                mills: *mills,
            },
            Call::Confirm {
                item,
                anyone,
                printed,
            } => Request::Confirm {
                serial: self.pick_for(user, item, *anyone),
                printed: *printed,
            },
            Call::Refund { item, anyone } => Request::Refund {
                serial: self.pick_for(user, item, *anyone),
            },
            Call::Redeem { item, anyone } => Request::Redeem {
                serial: self.pick_for(user, item, *anyone),
            },
        }
    }

    /// The user's item with this serial (another user's item is unknown to this one).
    fn item_of(&self, user: usize, serial: &str) -> Option<usize> {
        self.items
            .iter()
            .position(|item| item.serial == serial && item.user == user)
    }

    /// What the store must answer to `request` under (`user`, `id`), applied to the model.
    fn apply(&mut self, user: usize, id: &str, request: &Request) -> Answer {
        let key = (user, id.to_owned());
        if let Some((stored, outcome)) = self.requests.get(&key) {
            return if stored == request {
                Ok(outcome.clone())
            } else {
                Err("id_reused".to_owned())
            };
        }
        let answer = match request {
            Request::Fund { mills, payment_id } => self.fund(user, *mills, payment_id),
            Request::Issue { kind, mills } => self.issue(user, kind, *mills),
            Request::Confirm { serial, printed } => self.confirm(user, serial, *printed),
            Request::Refund { serial } => self.refund(user, serial),
            Request::Redeem { serial } => self.redeem(user, serial),
            Request::Close => self.close(user),
        };
        if let Ok(outcome) = &answer {
            self.requests
                .insert(key, (request.clone(), outcome.clone()));
        }
        answer
    }

    fn fund(&mut self, user: usize, mills: u64, payment_id: &str) -> Answer {
        if mills == 0 {
            return Err("invalid_input".to_owned());
        }
        if self.payments.iter().any(|(p, _, _)| p == payment_id) {
            return Err("duplicate_payment".to_owned());
        }
        let u = &mut self.users[user];
        if u.closed {
            return Err("account_closed".to_owned());
        }
        // The register keeps room for every reservation to come back (a void is never refused).
        if u.descending + u.reserved + mills > MAX_MILLS {
            return Err("overflow".to_owned());
        }
        u.balance += mills;
        u.descending += mills;
        u.funded += mills;
        let balance_mills = u.balance;
        self.payments.push((payment_id.to_owned(), user, mills));
        Ok(Outcome::Fund(FundOutcome {
            payment_id: payment_id.to_owned(),
            amount_mills: mills,
            balance_mills,
        }))
    }

    fn issue(&mut self, user: usize, kind: &'static str, mills: u64) -> Answer {
        if mills == 0 {
            return Err("invalid_input".to_owned());
        }
        let u = &mut self.users[user];
        if u.closed {
            return Err("account_closed".to_owned());
        }
        if u.balance < mills {
            return Err(insufficient(u.balance, mills));
        }
        if kind == "ticket" {
            return self.issue_ticket(user, mills);
        }
        if u.ascending + mills > MAX_MILLS {
            return Err("overflow".to_owned());
        }
        u.balance -= mills;
        u.reserved += mills;
        u.ascending += mills;
        u.descending -= mills;
        u.piece += 1;
        let signed = testsuite::sign_ok(&PieceState {
            device_id: u.device.clone(),
            piece: u.piece,
            number: u64::from(u.piece),
            ascending_mills: u.ascending,
            descending_mills: u.descending,
        })
        .expect("the test signer signs");
        let balance_mills = u.balance;
        self.items.push(ItemModel {
            serial: signed.serial.clone(),
            user,
            kind,
            mills,
            status: ItemStatus::Issued,
            issued_at_ms: self.now_ms,
            confirm_by_ms: None,
        });
        Ok(Outcome::Issue(IssueOutcome {
            serial: signed.serial,
            item: signed.bytes,
            balance_mills,
            postage_mills: mills,
            refill_due: false,
        }))
    }

    /// A ticket: its own sequence and register; the meter's registers stay put.
    fn issue_ticket(&mut self, user: usize, mills: u64) -> Answer {
        let u = &mut self.users[user];
        if u.tickets_issued + mills > MAX_MILLS {
            return Err("overflow".to_owned());
        }
        u.balance -= mills;
        u.reserved += mills;
        u.outstanding += mills;
        u.tickets_issued += mills;
        u.tickets += 1;
        let number = stampline_ledger::value_item_number("ticket", u64::from(u.tickets))
            .expect("a ticket number");
        let signed = testsuite::sign_ok(&PieceState {
            device_id: u.device.clone(),
            piece: u.tickets,
            number,
            ascending_mills: u.ascending,
            descending_mills: u.descending,
        })
        .expect("the test signer signs");
        let balance_mills = u.balance;
        self.items.push(ItemModel {
            serial: signed.serial.clone(),
            user,
            kind: "ticket",
            mills,
            status: ItemStatus::Issued,
            issued_at_ms: self.now_ms,
            confirm_by_ms: None,
        });
        Ok(Outcome::Issue(IssueOutcome {
            serial: signed.serial,
            item: signed.bytes,
            balance_mills,
            postage_mills: mills,
            refill_due: false,
        }))
    }

    /// Issued → voided: the funds come back, and for postage the descending register.
    fn void(&mut self, i: usize) {
        let item = &mut self.items[i];
        item.status = ItemStatus::Voided;
        let u = &mut self.users[item.user];
        u.reserved -= item.mills;
        u.balance += item.mills;
        if item.kind == "ticket" {
            u.outstanding -= item.mills;
        } else {
            u.descending += item.mills;
            u.credited += item.mills;
        }
    }

    fn status_outcome(&self, user: usize, i: usize) -> Answer {
        Ok(Outcome::Status(StatusOutcome {
            serial: self.items[i].serial.clone(),
            status: self.items[i].status,
            balance_mills: self.users[user].balance,
        }))
    }

    fn confirm(&mut self, user: usize, serial: &str, printed: bool) -> Answer {
        let Some(i) = self.item_of(user, serial) else {
            return Err("unknown_item".to_owned());
        };
        let item = &self.items[i];
        match (item.status, printed) {
            (ItemStatus::Issued, true) if item.confirm_by_ms.is_some_and(|d| d <= self.now_ms) => {
                // Too late to print: voided as expired (that commits), and refused.
                self.void(i);
                return Err(not_pending(ItemStatus::Voided));
            }
            (ItemStatus::Issued, true) => {
                let mills = item.mills;
                if item.kind == "ticket" {
                    self.tickets_outstanding += mills;
                } else {
                    self.postage_sold += mills;
                }
                self.items[i].status = ItemStatus::Printed;
                self.users[user].reserved -= mills;
            }
            (ItemStatus::Issued, false) => self.void(i),
            (ItemStatus::Printed, true) | (ItemStatus::Voided, false) => {}
            (status, _) => return Err(not_pending(status)),
        }
        self.status_outcome(user, i)
    }

    fn refund(&mut self, user: usize, serial: &str) -> Answer {
        if self.users[user].closed {
            return Err("account_closed".to_owned());
        }
        let Some(i) = self.item_of(user, serial) else {
            return Err("unknown_item".to_owned());
        };
        let item = &self.items[i];
        match item.status {
            ItemStatus::Printed if item.kind == "ticket" => {
                if self.now_ms - item.issued_at_ms > REFUND_WINDOW_MS {
                    return Err("refund_window_closed".to_owned());
                }
                let mills = item.mills;
                self.items[i].status = ItemStatus::Refunded;
                self.tickets_outstanding -= mills;
                let u = &mut self.users[user];
                u.balance += mills;
                u.outstanding -= mills;
            }
            ItemStatus::Printed => {
                if self.now_ms - item.issued_at_ms > REFUND_WINDOW_MS {
                    return Err("refund_window_closed".to_owned());
                }
                let mills = item.mills;
                let u = &self.users[user];
                if u.descending + u.reserved + mills > MAX_MILLS {
                    return Err("overflow".to_owned());
                }
                self.items[i].status = ItemStatus::Refunded;
                self.postage_sold -= mills;
                let u = &mut self.users[user];
                u.balance += mills;
                u.descending += mills;
                u.credited += mills;
            }
            ItemStatus::Refunded => {}
            status => return Err(not_pending(status)),
        }
        self.status_outcome(user, i)
    }

    /// The payouts that pay out the user's balance: its payments in order, each for at most
    /// its amount (the balance never exceeds what was funded).
    fn payout_plan(&self, user: usize) -> Vec<Payout> {
        let mut left = self.users[user].balance;
        let mut plan = Vec::new();
        for (payment_id, _, mills) in self.payments.iter().filter(|p| p.1 == user) {
            if left == 0 {
                break;
            }
            let amount_mills = left.min(*mills);
            left -= amount_mills;
            plan.push(Payout {
                payment_id: payment_id.clone(),
                refund_id: format!("refund-{payment_id}"),
                amount_mills,
            });
        }
        plan
    }

    fn close(&mut self, user: usize) -> Answer {
        let u = &self.users[user];
        if u.closed {
            return Err("account_closed".to_owned());
        }
        if u.reserved != 0 {
            return Err("invalid_input".to_owned());
        }
        let payouts = self.payout_plan(user);
        let u = &mut self.users[user];
        let refunded_mills = u.balance;
        u.paid_out += refunded_mills;
        u.descending -= refunded_mills;
        u.balance = 0;
        u.closed = true;
        Ok(Outcome::Close(CloseOutcome {
            refunded_mills,
            payouts,
            balance_mills: 0,
        }))
    }

    /// The user redeems an item: only its own (the model names no redeemers), whole.
    fn redeem(&mut self, user: usize, serial: &str) -> Answer {
        let Some(i) = self.items.iter().position(|item| item.serial == serial) else {
            return Err("unknown_item".to_owned());
        };
        let item = &self.items[i];
        if item.kind == "postage" {
            return Err("not_redeemable".to_owned());
        }
        if item.user != user {
            return Err("not_allowed".to_owned());
        }
        if self.users[user].closed {
            return Err("account_closed".to_owned());
        }
        match item.status {
            ItemStatus::Printed => {}
            ItemStatus::Redeemed => return Err("already_redeemed".to_owned()),
            status => return Err(not_pending(status)),
        }
        let mills = item.mills;
        let u = &self.users[user];
        // As for a funding: the register keeps room for every reservation's void.
        if u.descending + mills > MAX_MILLS || u.descending + mills + u.reserved > MAX_MILLS {
            return Err("overflow".to_owned());
        }
        self.items[i].status = ItemStatus::Redeemed;
        self.tickets_outstanding -= mills;
        let u = &mut self.users[user];
        u.balance += mills;
        u.descending += mills;
        u.credited += mills;
        Ok(Outcome::Redeem(RedeemOutcome {
            serial: serial.to_owned(),
            kind: "ticket".to_owned(),
            status: ItemStatus::Redeemed,
            redeemed_mills: mills,
            remaining_mills: 0,
            balance_mills: u.balance,
        }))
    }

    fn start_window(&mut self, user: Option<usize>, deadline_ms: i64) -> u64 {
        let mut set = 0;
        for item in &mut self.items {
            if item.status == ItemStatus::Issued
                && item.confirm_by_ms.is_none()
                && user.is_none_or(|u| u == item.user)
            {
                item.confirm_by_ms = Some(deadline_ms);
                set += 1;
            }
        }
        set
    }

    /// Voids every expired item; their serials by user id, then serial (as the store orders them).
    fn void_expired(&mut self) -> Vec<String> {
        let mut expired: Vec<usize> = (0..self.items.len())
            .filter(|&i| {
                let item = &self.items[i];
                item.status == ItemStatus::Issued
                    && item.confirm_by_ms.is_some_and(|d| d <= self.now_ms)
            })
            .collect();
        expired.sort_by(|&a, &b| {
            let key = |i: usize| (self.users[self.items[i].user].id, &self.items[i].serial);
            key(a).cmp(&key(b))
        });
        for &i in &expired {
            self.void(i);
        }
        expired
            .into_iter()
            .map(|i| self.items[i].serial.clone())
            .collect()
    }
}

// ---- Running a sequence ----

/// A store under test and a way to read its accounts behind its back.
struct Backend {
    store: Box<dyn Store>,
    /// Every account and its balance, straight from the database.
    accounts: Box<dyn FnMut() -> Vec<(String, i64)>>,
    /// Kept alive until the store is dropped (the temporary directory or database).
    _keep: Box<dyn std::any::Any>,
}

fn amount(mills: u64) -> Amount {
    Amount::from_mills(mills).expect("generated amounts are in range")
}

/// Sends `request` to the store under (`user`, `id`).
fn send(store: &dyn Store, model: &Model, user: usize, id: &str, request: &Request) -> Answer {
    let key = RequestKey {
        user_id: model.users[user].id,
        request_id: id,
        fingerprint: request.fingerprint(),
    };
    let now_ms = model.now_ms;
    let result = match request {
        Request::Fund { mills, payment_id } => {
            let input = FundInput {
                amount: amount(*mills),
                payment_id,
                method: "card",
                token: Some("tok_visa"),
                last4: Some("4242"),
            };
            store.fund(&key, &input, now_ms).map(Outcome::Fund)
        }
        Request::Issue { kind, mills } => {
            let input = IssueInput {
                kind,
                amount: amount(*mills),
                session: None,
                valid_until_ms: None,
            };
            store
                .issue(&key, &input, Box::new(testsuite::sign_ok), now_ms)
                .wait()
                .map(Outcome::Issue)
        }
        Request::Confirm { serial, printed } => store
            .confirm(&key, serial, *printed, now_ms)
            .wait()
            .map(Outcome::Status),
        Request::Refund { serial } => store
            .refund(&key, serial, REFUND_WINDOW_MS, now_ms)
            .map(Outcome::Status),
        Request::Redeem { serial } => store
            .redeem(&key, serial, None, now_ms)
            .map(Outcome::Redeem),
        Request::Close => close(store, model, user, &key),
    };
    result.map_err(|e| error_key(&e))
}

/// Closes as the server does: begins, fixes the plan (the model's), books the payouts.
fn close(
    store: &dyn Store,
    model: &Model,
    user: usize,
    key: &RequestKey,
) -> Result<Outcome, LedgerError> {
    let now_ms = model.now_ms;
    let balance_mills = match store.begin_close(key, now_ms)? {
        CloseStart::Closed(outcome) => return Ok(Outcome::Close(outcome)),
        CloseStart::Closing { balance_mills } => balance_mills,
    };
    assert_eq!(balance_mills, model.users[user].balance, "balance to close");
    let payouts = model.payout_plan(user);
    let plan: Vec<(String, u64)> = payouts
        .iter()
        .map(|p| (p.payment_id.clone(), p.amount_mills))
        .collect();
    store.fix_close_plan(key.user_id, &plan, now_ms)?;
    store
        .close_account(key, &payouts, now_ms)
        .map(Outcome::Close)
}

/// Runs one step on the store and the model; fails when their answers differ.
fn step(store: &dyn Store, model: &mut Model, op: &Op) -> Result<(), TestCaseError> {
    let keyed = match op {
        Op::New { user, call } => {
            let request = model.resolve(*user, call);
            let id = model.fresh("r-");
            Some(Sent {
                user: *user,
                id,
                request,
            })
        }
        Op::Retry { request } => {
            if model.sent.is_empty() {
                return Ok(());
            }
            Some(model.sent[request.index(model.sent.len())].clone())
        }
        Op::Reuse { request, call } => {
            if model.sent.is_empty() {
                return Ok(());
            }
            let earlier = model.sent[request.index(model.sent.len())].clone();
            Some(Sent {
                request: model.resolve(earlier.user, call),
                ..earlier
            })
        }
        Op::Close { user } => Some(Sent {
            user: *user,
            id: model.fresh("r-"),
            request: Request::Close,
        }),
        _ => None,
    };
    if let Some(sent) = keyed {
        let actual = send(store, model, sent.user, &sent.id, &sent.request);
        let expected = model.apply(sent.user, &sent.id, &sent.request);
        prop_assert_eq!(actual, expected, "answer to {:?}", sent);
        model.sent.push(sent);
        return Ok(());
    }
    match op {
        Op::StartWindow { user, in_ms } => {
            let deadline_ms = model.now_ms + in_ms;
            let actual = store
                .start_confirm_window(user.map(|u| model.users[u].id), deadline_ms)
                .map_err(|e| error_key(&e));
            prop_assert_eq!(actual, Ok(model.start_window(*user, deadline_ms)));
        }
        Op::VoidExpired => {
            let actual = store.void_expired(model.now_ms).map_err(|e| error_key(&e));
            prop_assert_eq!(actual, Ok(model.void_expired()));
        }
        Op::Advance { ms } => model.now_ms += ms,
        Op::New { .. } | Op::Retry { .. } | Op::Reuse { .. } | Op::Close { .. } => {
            unreachable!("handled above")
        }
    }
    Ok(())
}

/// Every user's balance view, meter and history are the model's.
fn check_views(store: &dyn Store, model: &Model) -> Result<(), TestCaseError> {
    for (n, u) in model.users.iter().enumerate() {
        prop_assert_eq!(
            u.descending,
            u.balance + u.outstanding,
            "model: descending = balance + what the tickets hold"
        );
        let postage_reserved: u64 = model
            .items
            .iter()
            .filter(|i| i.user == n && i.kind == "postage" && i.status == ItemStatus::Issued)
            .map(|i| i.mills)
            .sum();
        prop_assert!(
            u.descending + postage_reserved <= MAX_MILLS,
            "model: room for every void"
        );
        prop_assert_eq!(
            u.ascending + u.descending + u.paid_out,
            u.funded + u.credited,
            "model: the control total"
        );
        let items: Vec<&ItemModel> = model.items.iter().filter(|i| i.user == n).collect();
        let pieces = items
            .iter()
            .filter(|i| {
                i.kind == "postage" && matches!(i.status, ItemStatus::Issued | ItemStatus::Printed)
            })
            .count();
        let view = store.balance(u.id).map_err(|e| error_key(&e));
        prop_assert_eq!(
            view,
            Ok(BalanceView {
                balance_mills: u.balance,
                ascending_mills: u.ascending,
                descending_mills: u.descending,
                pieces: u64::try_from(pieces).expect("few items"),
                reserved_mills: u.reserved,
            }),
            "balance of user {}",
            n
        );
        let meter = store
            .meter(u.id)
            .map_err(internal)?
            .ok_or_else(|| TestCaseError::fail(format!("user {n} has no meter")))?;
        prop_assert_eq!(
            (
                meter.device_id.as_deref(),
                meter.ascending_mills,
                meter.descending_mills,
                meter.piece
            ),
            (Some(u.device.as_str()), u.ascending, u.descending, u.piece),
            "meter of user {}",
            n
        );
        let history = store
            .history(u.id, MAX_HISTORY_LIMIT)
            .map_err(|e| error_key(&e));
        // Newest first; within one millisecond by number (a value item's number is above every
        // postage piece's).
        let number = |i: &ItemModel| -> u64 {
            i.serial
                .rsplit('-')
                .next()
                .and_then(|n| n.parse().ok())
                .expect("a numbered serial")
        };
        let mut ordered = items.clone();
        ordered.sort_by_key(|i| (i.issued_at_ms, number(i)));
        let expected: Vec<ItemSummary> = ordered
            .iter()
            .rev()
            .map(|i| ItemSummary {
                serial: i.serial.clone(),
                kind: i.kind.to_owned(),
                amount_mills: i.mills,
                status: i.status,
                issued_at_ms: i.issued_at_ms,
            })
            .collect();
        prop_assert_eq!(history, Ok(expected), "history of user {}", n);
    }
    Ok(())
}

/// The audit is clean and every account, read from the database, is the model's; they sum to 0.
fn check_books(backend: &mut Backend, model: &Model) -> Result<(), TestCaseError> {
    let report = backend.store.audit().map_err(internal)?;
    prop_assert!(report.is_clean(), "audit problems: {:#?}", report.problems);
    let accounts = (backend.accounts)();
    let sum: i64 = accounts.iter().map(|(_, balance)| balance).sum();
    prop_assert_eq!(sum, 0, "accounts {:?} do not sum to zero", accounts);
    let signed = |mills: u64| i64::try_from(mills).expect("register-sized");
    let funded: u64 = model.users.iter().map(|u| u.funded - u.paid_out).sum();
    let mut expected = vec![
        ("bank_clearing".to_owned(), -signed(funded)),
        ("postage_sold".to_owned(), signed(model.postage_sold)),
        (
            "outstanding:ticket".to_owned(),
            signed(model.tickets_outstanding),
        ),
    ];
    for u in &model.users {
        expected.push((customer_account(u.id), signed(u.balance)));
        expected.push((reserved_account(u.id), signed(u.reserved)));
    }
    expected.sort();
    // Accounts no transfer has touched yet may be absent or zero.
    let mut actual: Vec<(String, i64)> = accounts;
    actual.retain(|(id, balance)| *balance != 0 || expected.iter().any(|(e, _)| e == id));
    for (id, balance) in &expected {
        if *balance == 0 && !actual.iter().any(|(a, _)| a == id) {
            actual.push((id.clone(), 0));
        }
    }
    actual.sort();
    prop_assert_eq!(actual, expected, "accounts");
    let mut payments: Vec<String> = backend
        .store
        .payments()
        .map_err(internal)?
        .into_iter()
        .map(|p| p.payment_id)
        .collect();
    payments.sort();
    let mut expected_payments: Vec<String> = model.payments.iter().map(|p| p.0.clone()).collect();
    expected_payments.sort();
    prop_assert_eq!(payments, expected_payments, "payments");
    Ok(())
}

/// One sequence on a fresh store.
fn run_sequence(mut backend: Backend, ops: &[Op]) -> Result<(), TestCaseError> {
    let store = &*backend.store;
    let user_ids: Vec<UserId> = (1..=u32::try_from(USERS).expect("few users"))
        .map(|n| testsuite::add_user(store, n))
        .collect();
    let mut model = Model::new(&user_ids);
    for (n, op) in ops.iter().enumerate() {
        step(store, &mut model, op).map_err(|e| at_step(e, n, op))?;
        check_views(store, &model).map_err(|e| at_step(e, n, op))?;
    }
    check_books(&mut backend, &model)
}

/// A read that should not fail.
fn internal(e: LedgerError) -> TestCaseError {
    TestCaseError::fail(format!("unexpected error {e:?}"))
}

fn at_step(e: TestCaseError, n: usize, op: &Op) -> TestCaseError {
    TestCaseError::fail(format!("step {n} ({op:?}): {}", reason(&e)))
}

fn reason(e: &TestCaseError) -> &str {
    match e {
        TestCaseError::Fail(why) | TestCaseError::Reject(why) => why.message(),
    }
}

/// Runs `cases` sequences, each on a fresh backend from `make`; panics with the shrunk sequence.
fn check(cases: u32, make: &dyn Fn() -> Backend) {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(cases);
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    match runner.run(&ops(), |ops| run_sequence(make(), &ops)) {
        Ok(()) => {}
        Err(TestError::Fail(why, ops)) => {
            let (why, ops) = minimize(make, why.message().to_owned(), ops);
            panic!("the ledger disagrees with the model: {why}\nminimal sequence: {ops:#?}")
        }
        Err(e) => panic!("{e}"),
    }
}

/// Proptest shrinks a sequence in one pass (it deletes each step once, then shrinks the steps
/// that are left), and a step deleted while a later one still needed it stays in: this removes
/// single steps again until none can go.
fn minimize(make: &dyn Fn() -> Backend, mut why: String, mut ops: Vec<Op>) -> (String, Vec<Op>) {
    let fails = |ops: &[Op]| match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_sequence(make(), ops)
    })) {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("panicked".to_owned()),
    };
    let mut removed = true;
    while removed {
        removed = false;
        for i in (0..ops.len()).rev() {
            let mut fewer = ops.clone();
            fewer.remove(i);
            if let Some(reason) = fails(&fewer) {
                (why, ops, removed) = (reason, fewer, true);
            }
        }
    }
    (why, ops)
}

fn sqlite_backend() -> Backend {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ledger.db");
    let store = SqliteStore::open(&path)
        .expect("open store")
        .with_sealer(Arc::new(TestSealer));
    let conn = rusqlite::Connection::open(&path).expect("open reader");
    let accounts = move || {
        let mut stmt = conn
            .prepare("SELECT id, balance FROM accounts ORDER BY id")
            .expect("prepare");
        stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .expect("query accounts")
            .collect::<Result<Vec<_>, _>>()
            .expect("read accounts")
    };
    Backend {
        store: Box::new(store),
        accounts: Box::new(accounts),
        _keep: Box::new(dir),
    }
}

fn postgres_backend(db: TestDatabase) -> Backend {
    let store = PgStore::connect_with_pool(db.url(), 2)
        .expect("connect store")
        .with_sealer(Arc::new(TestSealer));
    let mut client = postgres::Client::connect(db.url(), postgres::NoTls).expect("reader");
    let accounts = move || {
        client
            .query("SELECT id, balance FROM accounts ORDER BY id", &[])
            .expect("query accounts")
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
            .collect()
    };
    Backend {
        store: Box::new(store),
        accounts: Box::new(accounts),
        _keep: Box::new(db),
    }
}

#[test]
fn sqlite_ledger_matches_the_model() {
    check(SQLITE_CASES, &sqlite_backend);
}

#[test]
fn postgres_ledger_matches_the_model() {
    // Skips (or, under STAMPLINE_REQUIRE_ALL=1, fails) here when PostgreSQL is not reachable.
    if TestDatabase::create("postgres_ledger_matches_the_model").is_none() {
        return;
    }
    check(POSTGRES_CASES, &|| {
        let db = TestDatabase::create("postgres_ledger_matches_the_model")
            .expect("PostgreSQL was reachable a moment ago");
        postgres_backend(db)
    });
}
