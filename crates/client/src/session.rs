//! [`Client`]: a server endpoint, a live link to it and the server's published keys, with the
//! one-request operations (balance, fund, history, payment options, auto-refill, close, quote,
//! issue, confirm), each answering its op's typed reply. The workflows made of them are `buy`,
//! `batch` and `reprint`.

use serde::de::DeserializeOwned;
use stampline_money::Amount;
use stampline_wire::replies::{
    AutoRefillReply, BalanceReply, CloseReply, FundReply, HistoryReply, IssueReply,
    PaymentOptionsReply, QuoteReply,
};
use stampline_wire::{Card, Eft, Op};
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::answers::{self, Confirmed, Issued};
use crate::error::ClientError;
use crate::http::{Endpoint, PublishedKey};
use crate::jobs::{self, Verdict};
use crate::link::Link;
use crate::print::JobReport;

/// A logged-in client. Requests may run concurrently on one `Client` (share it by reference or
/// in an `Arc`).
#[derive(Debug)]
pub struct Client {
    endpoint: Endpoint,
    link: Link,
    /// `GET /v1/keys`, fetched once, when an item is first checked.
    keys: OnceCell<Vec<PublishedKey>>,
}

/// What `auto_refill` sets.
#[derive(Debug)]
pub enum AutoRefill {
    /// Ends the standing authorisation.
    Off,
    /// Refill `amount` from `card` whenever the balance falls below `threshold`, at most `cap`
    /// in all.
    On {
        threshold: Amount,
        amount: Amount,
        cap: Amount,
        card: Card,
    },
}

/// How a funding is paid.
#[derive(Debug)]
pub enum Payment {
    Card(Card),
    /// A card saved by an earlier funding.
    CardToken(String),
    Eft(Eft),
}

/// A postage `issue` (docs/DESIGN.md §3).
#[derive(Clone, Debug)]
pub struct PostageIssue {
    pub postage: Amount,
    pub class: String,
    pub from_zip: String,
    pub to_zip: String,
    /// `YYYY-MM-DD`.
    pub mail_date: String,
    pub weight_oz: Option<serde_json::Number>,
}

impl Client {
    /// Logs `user` in and brings the link up.
    pub async fn connect(
        endpoint: Endpoint,
        user: &str,
        password: &str,
    ) -> Result<Client, ClientError> {
        let link = Link::connect(&endpoint, user, password).await?;
        Ok(Client::new(endpoint, link))
    }

    /// A client over a link that is already up.
    pub fn new(endpoint: Endpoint, link: Link) -> Client {
        Client {
            endpoint,
            link,
            keys: OnceCell::new(),
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub fn link(&self) -> &Link {
        &self.link
    }

    /// The server's published signing keys.
    pub async fn keys(&self) -> Result<&[PublishedKey], ClientError> {
        let keys = self
            .keys
            .get_or_try_init(|| async { self.endpoint.keys().await })
            .await?;
        Ok(keys)
    }

    /// One request; the answer as the op's typed reply (a struct of
    /// [`stampline_wire::replies`]), or the server's refusal.
    pub async fn call<T: DeserializeOwned>(&self, op: Op) -> Result<T, ClientError> {
        let response = self.link.request(op).await?;
        answers::reply(response)
    }

    /// `balance`: what the user can spend and the meter's registers.
    pub async fn balance(&self) -> Result<BalanceReply, ClientError> {
        self.call(Op::Balance {}).await
    }

    /// `history`: the latest `limit` items, or the `limit` before the item `before`.
    pub async fn history(
        &self,
        limit: u32,
        before: Option<&str>,
    ) -> Result<HistoryReply, ClientError> {
        self.call(Op::History {
            limit,
            before: before.map(str::to_owned),
        })
        .await
    }

    /// `fund`: adds `amount` to the account.
    pub async fn fund(&self, amount: Amount, payment: Payment) -> Result<FundReply, ClientError> {
        let (card, card_token, eft) = match payment {
            Payment::Card(card) => (Some(card), None, None),
            Payment::CardToken(token) => (None, Some(token), None),
            Payment::Eft(eft) => (None, None, Some(eft)),
        };
        self.call(Op::Fund {
            amount_mills: amount.mills(),
            card,
            card_token,
            eft,
        })
        .await
    }

    /// `payment_options`: the ways to pay, the largest payment, the standing auto-refill and
    /// the lock, if any.
    pub async fn payment_options(&self) -> Result<PaymentOptionsReply, ClientError> {
        self.call(Op::PaymentOptions {}).await
    }

    /// `auto_refill`: sets (or, with `off`, ends) the standing authorisation to refill.
    pub async fn auto_refill(&self, op: AutoRefill) -> Result<AutoRefillReply, ClientError> {
        self.call(match op {
            AutoRefill::Off => Op::AutoRefill {
                threshold_mills: 0,
                amount_mills: 0,
                cap_mills: 0,
                card: None,
                off: true,
            },
            AutoRefill::On {
                threshold,
                amount,
                cap,
                card,
            } => Op::AutoRefill {
                threshold_mills: threshold.mills(),
                amount_mills: amount.mills(),
                cap_mills: cap.mills(),
                card: Some(card),
                off: false,
            },
        })
        .await
    }

    /// `close`: closes the account and refunds its balance.
    pub async fn close(&self) -> Result<CloseReply, ClientError> {
        self.call(Op::Close {}).await
    }

    /// The postage of a piece, as the server rates it.
    pub async fn quote(
        &self,
        class: &str,
        weight_oz: &serde_json::Number,
        from_zip: &str,
        to_zip: &str,
    ) -> Result<Amount, ClientError> {
        let q: QuoteReply = self
            .call(Op::Quote {
                class: class.to_owned(),
                weight_oz: weight_oz.clone(),
                from_zip: Some(from_zip.to_owned()),
                to_zip: Some(to_zip.to_owned()),
            })
            .await?;
        Amount::from_mills(q.postage_mills)
            .ok_or_else(|| ClientError::BadAnswer("quote without postage".into()))
    }

    /// `issue` of a postage item under request id `id` (its idempotency key). The item is not
    /// checked here: see [`crate::check_item`].
    pub async fn issue_postage(
        &self,
        id: Uuid,
        issue: &PostageIssue,
    ) -> Result<Issued, ClientError> {
        let op = Op::Issue {
            kind: "postage".into(),
            postage_mills: issue.postage.mills(),
            from_zip: issue.from_zip.clone(),
            to_zip: issue.to_zip.clone(),
            mail_date: issue.mail_date.clone(),
            class: issue.class.clone(),
            weight_oz: issue.weight_oz.clone(),
            amount_mills: None,
            fields: Default::default(),
            valid_until: None,
        };
        let response = self.link.request_with_id(id, op).await?;
        answers::reply::<IssueReply>(response).map(Issued::from)
    }

    /// `confirm`: the item was printed, or it was not (then it is voided and refunded).
    pub async fn confirm(&self, serial: &str, printed: bool) -> Result<Confirmed, ClientError> {
        let response = self
            .link
            .request(Op::Confirm {
                serial: serial.to_owned(),
                printed,
            })
            .await?;
        answers::reply(response)
    }

    /// Confirms an item as not printed; says what became of its money.
    pub async fn void(&self, serial: &str) -> &'static str {
        if self.confirm(serial, false).await.is_ok() {
            "the item was voided and refunded"
        } else {
            "the item will be voided and refunded when the confirmation window ends"
        }
    }

    /// Confirms `printed` or `failed` for an item whose confirmation is pending, from how its
    /// jobs ended. The error says what happened to the money.
    pub async fn settle(
        &self,
        serial: &str,
        reports: &[JobReport],
    ) -> Result<Confirmed, ClientError> {
        match jobs::verdict(reports, self.link.lost_reason()) {
            Verdict::Printed => self.confirm(serial, true).await.map_err(|e| match e {
                ClientError::Link(e) => ClientError::ConfirmInDoubt(e),
                other => other,
            }),
            Verdict::LinkLost(why) => {
                jobs::remove_files(reports);
                Err(ClientError::LinkLost(format!(
                    "link lost while printing, so the job was cancelled: {why}; the item was not confirmed and will be voided and refunded when the confirmation window ends"
                )))
            }
            Verdict::Failed(why) => {
                jobs::remove_files(reports);
                let tail = self.void(serial).await;
                Err(ClientError::PrintFailed(format!(
                    "the printer did not print: {why}; {tail}"
                )))
            }
        }
    }

    /// Says bye and closes the link cleanly.
    pub async fn bye(self) -> Result<(), ClientError> {
        Ok(self.link.bye().await?)
    }
}
