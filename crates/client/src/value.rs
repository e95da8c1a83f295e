//! Value items: a ticket, check, coupon or gift certificate issued over the link and printed
//! like postage ([`Client::issue_value`]: the document is laid out once before anything is
//! issued, so text that cannot be printed costs nothing), their redemption, and the users
//! allowed to redeem the caller's items.

use std::collections::BTreeMap;

use stampline_items::{Body, Item, Kind, ValueItem, field_tag};
use stampline_label::Format;
use stampline_label::document::{Certificate, Check, Coupon, Document, Ticket, wrap_words};
use stampline_money::Amount;
use stampline_wire::Op;
use stampline_wire::replies::{IssueReply, RedeemReply, RedeemersReply};

use crate::answers;
use crate::buy::{Output, Purchase};
use crate::error::ClientError;
use crate::link::new_request_id;
use crate::print::DocFormat;
use crate::session::Client;

/// The routing number printed in a check's MICR-style line: the bank sandbox's test routing
/// number until the operator names its own bank (docs/DECISIONS.md V4).
pub const CHECK_ROUTING: &str = "011000015";
/// Coupon terms are cut into at most this many lines of [`TERMS_LINE_CHARS`].
pub const TERMS_LINES: usize = 4;
/// See [`TERMS_LINES`].
pub const TERMS_LINE_CHARS: usize = 45;

/// A value item to issue and print.
#[derive(Debug)]
pub struct ValueRequest {
    pub kind: Kind,
    pub amount: Amount,
    /// The kind's fields by name (`event`, `venue`, `seat`; `payee`, `memo`; `issuer`,
    /// `terms`; `recipient`).
    pub fields: BTreeMap<String, String>,
    /// `YYYY-MM-DD`: redeemable through that day (UTC).
    pub valid_until: Option<String>,
    /// A check's drawer: the account holder's lines printed upper left.
    pub drawer: Vec<String>,
    pub dpi: u32,
    pub output: Output,
}

/// The printed date of an item date: `2027-03-06`.
fn day(date: stampline_items::ItemDate) -> String {
    date.to_date().to_string()
}

/// The document a person sees for a value item: its fields where they belong, the amount as
/// money (in words too on a check), the dates, and the DataMatrix of `bytes`.
pub fn document<'a>(
    item: &ValueItem,
    bytes: &'a [u8],
    drawer: &[String],
) -> Result<Document<'a>, String> {
    let field = |tag| item.field(tag).unwrap_or("").to_uppercase();
    let serial = stampline_items::Serial {
        device_id: item.device_id,
        number: item.serial,
    }
    .to_string();
    let amount = item.amount;
    Ok(match item.kind {
        Kind::Ticket => Document::Ticket(Ticket {
            item: bytes,
            event: field(field_tag::ticket::EVENT),
            venue: field(field_tag::ticket::VENUE),
            date: match item.valid_until {
                Some(until) => format!("VALID THROUGH {}", day(until)),
                None => format!("ISSUED {}", day(item.issue_date)),
            },
            seat: field(field_tag::ticket::SEAT),
            price: amount.with_separators(),
            serial,
        }),
        Kind::Check => {
            let number = item.field(field_tag::check::CHECK_NUMBER).unwrap_or("0");
            let words = amount
                .check_words()
                .ok_or("a check's amount is a whole number of cents")?;
            let account = format!("{:08}", item.device_id.serial());
            Document::Check(Check {
                item: bytes,
                drawer: drawer.iter().map(|l| l.to_uppercase()).collect(),
                number: number.to_owned(),
                date: day(item.issue_date),
                payee: field(field_tag::check::PAYEE),
                amount: amount.with_separators(),
                words,
                memo: field(field_tag::check::MEMO),
                micr: format!("C{number:0>6}C A{CHECK_ROUTING}A {account}C"),
                serial,
            })
        }
        Kind::Coupon => Document::Coupon(Coupon {
            item: bytes,
            issuer: field(field_tag::coupon::ISSUER),
            amount: format!("{} OFF", amount.with_separators()),
            terms: wrap_words(
                &field(field_tag::coupon::TERMS),
                TERMS_LINE_CHARS,
                TERMS_LINES,
            )
            .map_err(|e| format!("terms: {e}"))?,
            expires: item
                .valid_until
                .map(|d| format!("EXPIRES {}", day(d)))
                .unwrap_or_default(),
            serial,
        }),
        Kind::Certificate => Document::Certificate(Certificate {
            item: bytes,
            recipient: field(field_tag::certificate::RECIPIENT),
            amount: amount.with_separators(),
            code: item
                .field(field_tag::certificate::CODE)
                .unwrap_or("")
                .to_owned(),
            expires: item
                .valid_until
                .map(|d| format!("VALID UNTIL {}", day(d)))
                .unwrap_or_default(),
            serial,
        }),
        Kind::Postage => return Err("postage is not a value item".into()),
    })
}

/// Renders a value item in `format` (`raw` is its bytes).
pub fn render(
    item: &Item,
    bytes: &[u8],
    format: DocFormat,
    dpi: u32,
    drawer: &[String],
) -> Result<Vec<u8>, String> {
    let Body::Value(value) = &item.body else {
        return Err("not a value item".into());
    };
    let format = match format {
        DocFormat::Png => Format::Png,
        DocFormat::Svg => Format::Svg,
        DocFormat::Pdf => Format::Pdf,
        DocFormat::Zpl => Format::Zpl,
        DocFormat::Raw => return Ok(bytes.to_vec()),
    };
    let doc = document(value, bytes, drawer)?;
    stampline_label::render_document(&doc, format, dpi).map_err(|e| e.to_string())
}

/// Lays the document out once with stand-ins for what the server adds (the longest serial and
/// check number, a certificate code, a full-size symbol), in every format asked for, so that a
/// field too long for the page is refused before anything is issued.
fn check_before_issue(request: &ValueRequest) -> Result<(), ClientError> {
    let today = stampline_items::ItemDate::from_date(time::OffsetDateTime::now_utc().date())
        .map_err(|e| ClientError::BadRequest(e.to_string()))?;
    let valid_until = match &request.valid_until {
        Some(text) => Some(text.parse().map_err(|_| {
            ClientError::BadRequest("--valid-until must be a valid YYYY-MM-DD".into())
        })?),
        None => None,
    };
    let mut fields = Vec::new();
    for (name, value) in &request.fields {
        let tag = request.kind.field_tag(name).ok_or_else(|| {
            ClientError::BadRequest(format!("a {} has no field {name}", request.kind))
        })?;
        fields.push(stampline_items::Field::new(tag, value.clone()));
    }
    match request.kind {
        Kind::Check => fields.push(stampline_items::Field::new(
            field_tag::check::CHECK_NUMBER,
            "9999999999",
        )),
        Kind::Certificate => fields.push(stampline_items::Field::new(
            field_tag::certificate::CODE,
            "XXXX-XXXX-XXXX",
        )),
        _ => {}
    }
    let stand_in = ValueItem {
        kind: request.kind,
        device_id: stampline_items::DeviceId::new(*b"SL01", 99_999_999)
            .map_err(|e| ClientError::BadRequest(e.to_string()))?,
        key_id: stampline_items::KeyId([0; 4]),
        serial: 59_999_999_999,
        amount: request.amount,
        issue_date: today,
        valid_until,
        fields,
    };
    let bytes = vec![0xA5u8; 64 + 33 + request.fields.values().map(|v| v.len() + 2).sum::<usize>()];
    let doc = document(&stand_in, &bytes, &request.drawer).map_err(ClientError::BadRequest)?;
    let formats = match &request.output {
        Output::Files { formats, .. } => formats.clone(),
        Output::Printers(targets) => targets.iter().map(|t| t.format).collect(),
    };
    for format in formats {
        let format = match format {
            DocFormat::Png => Format::Png,
            DocFormat::Svg => Format::Svg,
            DocFormat::Pdf => Format::Pdf,
            DocFormat::Zpl => Format::Zpl,
            DocFormat::Raw => continue,
        };
        stampline_label::render_document(&doc, format, request.dpi)
            .map_err(|e| ClientError::BadRequest(format!("the {}: {e}", request.kind)))?;
    }
    Ok(())
}

impl Client {
    /// Issues a value item and prints it, as [`Client::buy`] does postage: jobs opened first,
    /// the item checked against the published keys, confirmed from the jobs' final states.
    pub async fn issue_value(&self, request: ValueRequest) -> Result<Purchase, ClientError> {
        crate::label::check_dpi(request.dpi)?;
        if request.kind == Kind::Check && !request.amount.is_whole_cents() {
            return Err(ClientError::BadRequest(
                "a check pays whole cents: give --amount with at most two decimals".into(),
            ));
        }
        check_before_issue(&request)?;
        let id = new_request_id();
        let op = Op::Issue {
            kind: request.kind.name().to_owned(),
            postage_mills: 0,
            from_zip: String::new(),
            to_zip: String::new(),
            mail_date: String::new(),
            class: String::new(),
            weight_oz: None,
            amount_mills: Some(request.amount.mills()),
            fields: request.fields.clone(),
            valid_until: request.valid_until.clone(),
        };
        let issue = async {
            let response = self.link().request_with_id(id, op).await?;
            answers::reply::<IssueReply>(response).map(answers::Issued::from)
        };
        let (dpi, drawer) = (request.dpi, request.drawer);
        self.issue_and_print(
            id,
            request.output,
            request.amount,
            issue,
            move |item: &Item, bytes: &[u8], format| render(item, bytes, format, dpi, &drawer),
        )
        .await
    }

    /// Redeems a value item: the whole, or `amount` of a gift certificate.
    pub async fn redeem(
        &self,
        serial: &str,
        amount: Option<Amount>,
    ) -> Result<RedeemReply, ClientError> {
        let response = self
            .link()
            .request(Op::Redeem {
                serial: serial.to_owned(),
                amount_mills: amount.map(Amount::mills),
            })
            .await?;
        answers::reply(response)
    }

    /// The users allowed to redeem this user's items, after allowing or withdrawing one.
    pub async fn redeemers(
        &self,
        add: Option<String>,
        remove: Option<String>,
    ) -> Result<RedeemersReply, ClientError> {
        let response = self.link().request(Op::Redeemers { add, remove }).await?;
        answers::reply(response)
    }
}
