//! Client commands that are one request each: register, fund, balance, history, quote; and the
//! server, trust and login flags every client command shares.

use serde_json::json;
use stampline_client::{Client, Endpoint, Payment, Trust};
use stampline_money::Amount;
use stampline_wire::replies::RegisterReply;
use stampline_wire::{Card, Eft, Secret};

use crate::args::{FundArgs, Global, HistoryArgs, QuoteArgs, RegisterArgs};
use crate::output::{CliError, Out};

pub fn endpoint(global: &Global) -> Result<Endpoint, CliError> {
    let url = global
        .server
        .as_deref()
        .ok_or_else(|| CliError::new("no_server", "give --server or set STAMPLINE_SERVER"))?;
    let trust_path = global.trust.as_deref().ok_or_else(|| {
        CliError::new(
            "no_trust",
            "give --trust or set STAMPLINE_TRUST (the server's trust.pem)",
        )
    })?;
    Ok(Endpoint::new(url, Trust::from_file(trust_path)?)?)
}

pub fn user(global: &Global) -> Result<String, CliError> {
    global
        .user
        .clone()
        .ok_or_else(|| CliError::new("no_user", "give --user or set STAMPLINE_USER"))
}

/// The password from STAMPLINE_PASSWORD, or a prompt that does not echo.
pub fn password() -> Result<String, CliError> {
    if let Ok(p) = std::env::var("STAMPLINE_PASSWORD") {
        return Ok(p);
    }
    rpassword::prompt_password("Password: ").map_err(|e| {
        CliError::new(
            "no_password",
            format!("set STAMPLINE_PASSWORD or run in a terminal: {e}"),
        )
    })
}

pub async fn connect(global: &Global) -> Result<Client, CliError> {
    let ep = endpoint(global)?;
    Ok(Client::connect(ep, &user(global)?, &password()?).await?)
}

pub fn dollars(mills: u64) -> String {
    Amount::from_mills(mills).map_or_else(|| format!("{mills} mills"), |a| a.to_string())
}

pub async fn do_register(
    ep: &Endpoint,
    user: &str,
    password: &str,
    a: &RegisterArgs,
) -> Result<RegisterReply, CliError> {
    let form = json!({"user": user, "password": password, "name": a.name, "address": a.address,
        "city": a.city, "state": a.state, "zip": a.zip});
    Ok(ep.register(&form).await?)
}

pub async fn register(global: &Global, a: RegisterArgs, out: Out) -> Result<(), CliError> {
    let ep = endpoint(global)?;
    let v = do_register(&ep, &user(global)?, &password()?, &a).await?;
    let human = format!(
        "registered {} — the meter is licensed at the first funding (stampline fund)",
        v.user
    );
    out.reply(&v, &human);
    Ok(())
}

/// The amount and payment of `fund`, refusing a card number that fails the Luhn check before it
/// leaves.
pub fn fund_request(a: &FundArgs) -> Result<(Amount, Payment), CliError> {
    let amount =
        Amount::parse_dollars(&a.amount).map_err(|e| CliError::new("bad_amount", e.to_string()))?;
    if amount.is_zero() {
        return Err(CliError::new("bad_amount", "amount must be more than zero"));
    }
    let payment = match (&a.card, &a.eft_routing, &a.eft_account) {
        (Some(number), None, None) => {
            Payment::Card(card(number, a.exp.as_deref(), a.cvc.as_deref())?)
        }
        (None, Some(routing), Some(account)) => Payment::Eft(Eft {
            routing: routing.clone(),
            account: Secret(account.clone()),
        }),
        _ => {
            return Err(CliError::new(
                "bad_request",
                "give --card/--exp/--cvc or --eft-routing/--eft-account",
            ));
        }
    };
    Ok((amount, payment))
}

/// The card of `--card --exp --cvc`, its number without spaces or dashes; a number that fails
/// the Luhn check is refused here, before it leaves the machine.
pub fn card(number: &str, exp: Option<&str>, cvc: Option<&str>) -> Result<Card, CliError> {
    let number: String = number.chars().filter(|c| *c != ' ' && *c != '-').collect();
    if !stampline_sandbox::luhn_ok(&number) {
        return Err(CliError::new(
            "bad_card",
            "card number fails the Luhn check",
        ));
    }
    Ok(Card {
        number: Secret(number),
        exp: exp.unwrap_or_default().to_owned(),
        cvc: Secret(cvc.unwrap_or_default().to_owned()),
    })
}

pub async fn fund(global: &Global, a: FundArgs, out: Out) -> Result<(), CliError> {
    let (amount, payment) = fund_request(&a)?;
    let client = connect(global).await?;
    let v = client.fund(amount, payment).await?;
    let _ = client.bye().await;
    let human = format!(
        "funded {} (payment {}); balance {}",
        dollars(v.amount_mills),
        v.payment_id,
        dollars(v.balance_mills)
    );
    out.reply(&v, &human);
    Ok(())
}

pub async fn balance(global: &Global, out: Out) -> Result<(), CliError> {
    let client = connect(global).await?;
    let v = client.balance().await?;
    let _ = client.bye().await;
    let meter = match (&v.device_id, &v.license_id) {
        (Some(device), Some(licence)) => format!("meter {device}, licence {licence}"),
        _ => "meter not licensed yet: the first funding licenses it".to_owned(),
    };
    let human = format!(
        "balance {}  (ascending register {}, descending register {}, {} pieces; {meter})",
        dollars(v.balance_mills),
        dollars(v.ascending_mills),
        dollars(v.descending_mills),
        v.pieces
    );
    out.reply(&v, &human);
    Ok(())
}

/// Midnight (UTC) starting the day `text` ("YYYY-MM-DD"), in Unix ms.
fn day_start_ms(flag: &str, text: &str) -> Result<i64, CliError> {
    let date = text
        .parse::<stampline_items::ItemDate>()
        .map_err(|_| CliError::new("bad_date", format!("{flag} must be a valid YYYY-MM-DD")))?
        .to_date();
    Ok(date.midnight().assume_utc().unix_timestamp() * 1000)
}

/// What `history` walks: from the newest item (or the one before `--before`) back, a page of the
/// server's at a time, keeping the items of `--kind` issued in `[from, to)`, until `--limit` of
/// them are kept (without a period) or an item older than the period comes (with one), or the
/// items run out. There is no upper bound: the server pages by keyset.
pub async fn walk_history(
    client: &stampline_client::Client,
    before: Option<String>,
    kind: Option<&str>,
    period: Option<(i64, i64)>,
    limit: Option<usize>,
) -> Result<Vec<stampline_wire::replies::HistoryLine>, CliError> {
    let page = stampline_server::core::MAX_HISTORY;
    let mut kept = Vec::new();
    let mut before = before;
    loop {
        let reply = client.history(page, before.as_deref()).await?;
        let n = reply.items.len();
        for item in reply.items {
            before = Some(item.serial.clone());
            if let Some((from, _)) = period
                && item.issued_at_ms < from
            {
                return Ok(kept);
            }
            let in_period = period.is_none_or(|(_, to)| item.issued_at_ms < to);
            if in_period && kind.is_none_or(|k| item.kind == k) {
                kept.push(item);
                if limit.is_some_and(|l| kept.len() >= l) {
                    return Ok(kept);
                }
            }
        }
        if n < usize::try_from(page).unwrap_or(usize::MAX) {
            return Ok(kept);
        }
    }
}

/// `history` as CSV: serial, kind, amount (dollars), amount in mills, status, issue time (RFC
/// 3339, UTC).
fn history_csv(items: &[stampline_wire::replies::HistoryLine]) -> Result<Vec<u8>, CliError> {
    let fail = |e: csv::Error| CliError::new("io_error", format!("history file: {e}"));
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "serial",
        "kind",
        "amount",
        "amount_mills",
        "status",
        "issued_at",
    ])
    .map_err(fail)?;
    for i in items {
        let at = time::OffsetDateTime::from_unix_timestamp(i.issued_at_ms.div_euclid(1000))
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default();
        let dollars = Amount::from_mills(i.amount_mills)
            .map(|a| a.to_string().trim_start_matches('$').to_owned())
            .unwrap_or_default();
        w.write_record([
            i.serial.as_str(),
            &i.kind,
            &dollars,
            &i.amount_mills.to_string(),
            &i.status,
            &at,
        ])
        .map_err(fail)?;
    }
    w.into_inner()
        .map_err(|e| CliError::new("io_error", format!("history file: {e}")))
}

pub async fn history(global: &Global, a: HistoryArgs, out: Out) -> Result<(), CliError> {
    if let Some(kind) = &a.kind
        && stampline_items::Kind::from_name(kind).is_none()
    {
        return Err(CliError::new(
            "bad_request",
            format!("--kind {kind:?}: postage, ticket, check, coupon or certificate"),
        ));
    }
    if a.format != "table" && a.format != "csv" {
        return Err(CliError::new(
            "unsupported",
            format!("--format {:?}: table or csv", a.format),
        ));
    }
    if a.limit == 0 {
        return Err(CliError::new("bad_request", "--limit must be at least 1"));
    }
    let period = match (&a.from, &a.to) {
        (Some(from), Some(to)) => {
            let (start, end) = (
                day_start_ms("--from", from)?,
                day_start_ms("--to", to)? + 24 * 3600 * 1000,
            );
            if end <= start {
                return Err(CliError::new("bad_date", "--to is before --from"));
            }
            Some((start, end))
        }
        (None, None) => None,
        _ => {
            return Err(CliError::new(
                "bad_request",
                "give --from and --to together (a whole period)",
            ));
        }
    };
    // A period is listed whole; otherwise --limit items.
    let limit = period
        .is_none()
        .then(|| usize::try_from(a.limit).unwrap_or(usize::MAX));
    let client = connect(global).await?;
    let result = walk_history(&client, a.before.clone(), a.kind.as_deref(), period, limit).await;
    let _ = client.bye().await;
    let items = result?;
    if a.format == "csv" {
        let body = history_csv(&items)?;
        match &a.out {
            Some(path) => {
                std::fs::write(path, &body)
                    .map_err(|e| CliError::new("io_error", format!("{}: {e}", path.display())))?;
                out.done(
                    &json!({"file": path.display().to_string(), "items": items.len()}),
                    &format!("wrote {} items to {}", items.len(), path.display()),
                );
            }
            None => {
                use std::io::Write as _;
                std::io::stdout()
                    .write_all(&body)
                    .map_err(|e| CliError::new("io_error", format!("stdout: {e}")))?;
            }
        }
        return Ok(());
    }
    let mut human = String::new();
    for item in &items {
        human.push_str(&format!(
            "{}  {}  {}  {}\n",
            item.serial,
            item.kind,
            dollars(item.amount_mills),
            item.status
        ));
    }
    if human.is_empty() {
        human = "no items".into();
    }
    out.reply(
        &stampline_wire::replies::HistoryReply { items },
        human.trim_end(),
    );
    Ok(())
}

pub async fn quote(global: &Global, a: QuoteArgs, out: Out) -> Result<(), CliError> {
    let v = endpoint(global)?
        .quote(&a.class, &a.weight_oz, a.from.as_deref(), a.to.as_deref())
        .await?;
    let zone = v.zone.map(|z| format!(", zone {z}")).unwrap_or_default();
    let human = format!(
        "{} {} oz: {}{zone} (rate table {})",
        v.class,
        v.weight_oz,
        dollars(v.postage_mills),
        v.rate_table
    );
    out.reply(&v, &human);
    Ok(())
}
