//! `stampline issue ticket|check|coupon|certificate`, `redeem`, `redeemers`, `refund` and
//! `void`: value items over the link, printed like postage ([`stampline_client::ValueRequest`]).

use std::collections::BTreeMap;

use serde_json::json;
use stampline_client::{Client, ValueRequest, jobs};
use stampline_items::Kind;
use stampline_money::Amount;
use stampline_wire::Op;
use stampline_wire::replies::{ChecksReply, ItemStatusReply, RefundReply};

use crate::args::{
    ChecksCommand, Global, IssueCommand, IssueCommon, RedeemArgs, RedeemersAction, RedeemersArgs,
    SerialArgs,
};
use crate::client_cmds::{connect, dollars, user};
use crate::output::{CliError, Out};
use crate::print_cmd;

fn amount(flag: &str, text: &str) -> Result<Amount, CliError> {
    let a = Amount::parse_dollars(text)
        .map_err(|e| CliError::new("bad_amount", format!("{flag}: {e}")))?;
    if a.is_zero() {
        return Err(CliError::new(
            "bad_amount",
            format!("{flag} must be above zero"),
        ));
    }
    Ok(a)
}

/// The flags of one `issue KIND` as the library's request, checked before anything moves.
fn request(
    cmd: IssueCommand,
    drawer: Vec<String>,
) -> Result<(ValueRequest, IssueCommon), CliError> {
    let mut fields = BTreeMap::new();
    let mut put = |name: &str, value: String| {
        fields.insert(name.to_owned(), value);
    };
    let (kind, price, common) = match cmd {
        IssueCommand::Ticket {
            event,
            venue,
            seat,
            price,
            common,
        } => {
            put("event", event);
            put("venue", venue);
            put("seat", seat);
            (Kind::Ticket, amount("--price", &price)?, common)
        }
        IssueCommand::Check {
            payee,
            amount: a,
            memo,
            common,
        } => {
            put("payee", payee);
            if let Some(memo) = memo {
                put("memo", memo);
            }
            (Kind::Check, amount("--amount", &a)?, common)
        }
        IssueCommand::Coupon {
            issuer,
            amount: a,
            terms,
            common,
        } => {
            put("issuer", issuer);
            put("terms", terms);
            (Kind::Coupon, amount("--amount", &a)?, common)
        }
        IssueCommand::Certificate {
            recipient,
            amount: a,
            common,
        } => {
            put("recipient", recipient);
            (Kind::Certificate, amount("--amount", &a)?, common)
        }
    };
    let formats = crate::buy::parse_formats(&common.output.format)?;
    let file_formats = if formats.is_empty() {
        &jobs::DEFAULT_FILE_FORMATS[..]
    } else {
        &formats[..]
    };
    let output = crate::buy::output(
        common.output.printer.as_deref(),
        common.output.printer_cert.as_deref(),
        &formats,
        common.output.out.clone(),
        file_formats,
    )?;
    Ok((
        ValueRequest {
            kind,
            amount: price,
            fields,
            valid_until: common.valid_until.clone(),
            drawer,
            dpi: common.output.dpi,
            output,
        },
        common,
    ))
}

pub async fn issue(global: &Global, cmd: IssueCommand, out: Out) -> Result<(), CliError> {
    let drawer = vec![user(global)?];
    let (request, common) = request(cmd, drawer)?;
    let kind = request.kind;
    let client = connect(global).await?;
    let result = client.issue_value(request).await;
    let _ = client.bye().await;
    let p = result?;
    let files: Vec<String> = p.files().iter().map(|f| f.display().to_string()).collect();
    let v = json!({
        "serial": p.serial,
        "kind": kind.name(),
        "amount_mills": p.postage.mills(),
        "balance_mills": p.confirmed.balance_mills,
        "status": p.confirmed.status,
        "files": files,
        "printed": true,
        "printer": common.output.printer,
        "jobs": print_cmd::jobs_json(&p.jobs),
    });
    let printed = match (&common.output.printer, files.is_empty()) {
        (Some(printer), true) => format!("printed on {printer}"),
        _ => format!("wrote {}", files.join(", ")),
    };
    let human = format!(
        "issued {kind} {} for {}; balance {}; {printed}",
        p.serial,
        dollars(p.postage.mills()),
        dollars(p.confirmed.balance_mills)
    );
    out.done(&v, &human);
    Ok(())
}

/// The serial a `redeem` argument names: an existing file is decoded (PNG, PDF or raw bytes)
/// and its item's signature checked against the published keys; anything else is a serial.
async fn serial_of(client: &Client, item: &str) -> Result<String, CliError> {
    let path = std::path::Path::new(item);
    if !path.is_file() {
        return Ok(item.to_owned());
    }
    let data = std::fs::read(path)
        .map_err(|e| CliError::new("no_file", format!("{}: {e}", path.display())))?;
    let bytes = crate::verify::item_bytes_of(&data)?;
    let keys = client.keys().await?;
    let checked = stampline_client::check_item(&bytes, keys)
        .map_err(|why| CliError::new("invalid_item", format!("{}: {why}", path.display())))?;
    Ok(checked.body.serial().to_string())
}

pub async fn redeem(global: &Global, a: RedeemArgs, out: Out) -> Result<(), CliError> {
    let part = match &a.amount {
        Some(text) => Some(amount("--amount", text)?),
        None => None,
    };
    let client = connect(global).await?;
    let result = async {
        let serial = serial_of(&client, &a.item).await?;
        Ok::<_, CliError>(client.redeem(&serial, part).await?)
    }
    .await;
    let _ = client.bye().await;
    let r = result?;
    let left = if r.remaining_mills > 0 {
        format!(", {} left", dollars(r.remaining_mills))
    } else {
        String::new()
    };
    let human = format!(
        "redeemed {} {} for {}{left}; your balance {}",
        r.kind,
        r.serial,
        dollars(r.redeemed_mills),
        dollars(r.balance_mills)
    );
    out.reply(&r, &human);
    Ok(())
}

pub async fn redeemers(global: &Global, a: RedeemersArgs, out: Out) -> Result<(), CliError> {
    let (add, remove) = match a.action {
        Some(RedeemersAction::Add { redeemer }) => (Some(redeemer), None),
        Some(RedeemersAction::Remove { redeemer }) => (None, Some(redeemer)),
        Some(RedeemersAction::List) | None => (None, None),
    };
    let client = connect(global).await?;
    let result = client.redeemers(add, remove).await;
    let _ = client.bye().await;
    let r = result?;
    let human = if r.redeemers.is_empty() {
        "only you redeem your items".to_owned()
    } else {
        format!("may redeem your items: {}", r.redeemers.join(", "))
    };
    out.reply(&r, &human);
    Ok(())
}

pub async fn refund(global: &Global, a: SerialArgs, out: Out) -> Result<(), CliError> {
    let client = connect(global).await?;
    let result = client
        .call::<RefundReply>(Op::Refund {
            serial: a.serial.clone(),
        })
        .await;
    let _ = client.bye().await;
    let r = result?;
    let human = format!(
        "{} is {}; balance {}",
        r.serial,
        r.status,
        dollars(r.balance_mills)
    );
    out.reply(&r, &human);
    Ok(())
}

/// Void: an issued item is confirmed as not printed; one past that (`not_pending`: a printed
/// check not yet presented) is refunded, which the ledger refuses in turn for an item that is
/// neither. Either way its amount comes back.
pub async fn void(global: &Global, a: SerialArgs, out: Out) -> Result<(), CliError> {
    let client = connect(global).await?;
    let result = async {
        match client.confirm(&a.serial, false).await {
            Ok(r) => Ok(r),
            Err(e) if e.code() == "not_pending" => Ok(client
                .call::<ItemStatusReply>(Op::Refund {
                    serial: a.serial.clone(),
                })
                .await?),
            Err(e) => Err(CliError::from(e)),
        }
    }
    .await;
    let _ = client.bye().await;
    let r = result?;
    let human = format!(
        "{} is {}; balance {}",
        r.serial,
        r.status,
        dollars(r.balance_mills)
    );
    out.reply(&r, &human);
    Ok(())
}

/// The positive-pay file: one header line, then one line per check — the account, the check
/// number, the issue date as MM/DD/YYYY, the amount in dollars and cents without a sign or
/// separators, the payee, and `V` for a check the bank must not pay (voided or refunded).
pub fn positive_pay_csv(reply: &ChecksReply) -> Result<Vec<u8>, CliError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let fail = |e: csv::Error| CliError::new("io_error", format!("positive-pay file: {e}"));
    w.write_record([
        "Account Number",
        "Check Number",
        "Issue Date",
        "Amount",
        "Payee Name",
        "Void Indicator",
    ])
    .map_err(fail)?;
    for c in &reply.checks {
        let date = match c.issue_date.split('-').collect::<Vec<_>>()[..] {
            [y, m, d] => format!("{m}/{d}/{y}"),
            _ => c.issue_date.clone(),
        };
        let amount = format!(
            "{}.{:02}",
            c.amount_mills / 1000,
            (c.amount_mills % 1000) / 10
        );
        w.write_record([
            reply.account.as_str(),
            &c.check_number.to_string(),
            &date,
            &amount,
            &c.payee,
            if c.void { "V" } else { "" },
        ])
        .map_err(fail)?;
    }
    w.into_inner()
        .map_err(|e| CliError::new("io_error", format!("positive-pay file: {e}")))
}

pub async fn checks(global: &Global, cmd: ChecksCommand, out: Out) -> Result<(), CliError> {
    let ChecksCommand::PositivePay {
        from,
        to,
        format,
        out: path,
    } = cmd;
    if format != "csv" && format != "json" {
        return Err(CliError::new(
            "unsupported",
            format!("--format {format:?}: csv or json"),
        ));
    }
    let client = connect(global).await?;
    let result = client.call::<ChecksReply>(Op::Checks { from, to }).await;
    let _ = client.bye().await;
    let reply = result?;
    let body = if format == "csv" {
        positive_pay_csv(&reply)?
    } else {
        serde_json::to_vec_pretty(&reply).unwrap_or_default()
    };
    match &path {
        Some(path) => {
            std::fs::write(path, &body)
                .map_err(|e| CliError::new("io_error", format!("{}: {e}", path.display())))?;
            let v = json!({"file": path.display().to_string(), "checks": reply.checks.len()});
            out.done(
                &v,
                &format!("wrote {} checks to {}", reply.checks.len(), path.display()),
            );
        }
        None if out.json && format == "json" => out.reply(&reply, ""),
        None => {
            use std::io::Write as _;
            std::io::stdout()
                .write_all(&body)
                .map_err(|e| CliError::new("io_error", format!("stdout: {e}")))?;
        }
    }
    Ok(())
}
