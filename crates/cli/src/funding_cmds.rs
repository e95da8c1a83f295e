//! The payment commands beyond `fund`: `payment-options`, `auto-refill` and `close-account`.

use stampline_client::AutoRefill;
use stampline_money::Amount;
use stampline_wire::replies::AutoRefillState;

use crate::args::{AutoRefillArgs, CloseAccountArgs, Global};
use crate::client_cmds::{card, connect, dollars};
use crate::output::{CliError, Out};

fn amount(what: &str, dollars: Option<&String>) -> Result<Amount, CliError> {
    let text = dollars.ok_or_else(|| CliError::new("bad_usage", format!("give --{what}")))?;
    Amount::parse_dollars(text).map_err(|e| CliError::new("bad_amount", format!("--{what}: {e}")))
}

pub async fn payment_options(global: &Global, out: Out) -> Result<(), CliError> {
    let client = connect(global).await?;
    let v = client.payment_options().await?;
    let _ = client.bye().await;
    let mut human = format!(
        "pay by card (--card --exp --cvc) or EFT (--eft-routing --eft-account), up to {} at a time",
        dollars(v.max_amount_mills)
    );
    let auto = &v.auto_refill;
    if auto.active {
        human.push_str(&format!(
            "\nauto-refill: {} from card ending {} when below {}; {} of {} used",
            dollars(auto.amount_mills.unwrap_or(0)),
            last4(auto),
            dollars(auto.threshold_mills.unwrap_or(0)),
            dollars(auto.used_mills.unwrap_or(0)),
            dollars(auto.cap_mills.unwrap_or(0)),
        ));
    } else {
        human.push_str("\nauto-refill: off");
    }
    if let Some(lock) = &v.locked {
        human.push_str(&format!("\n{lock}"));
    }
    out.reply(&v, &human);
    Ok(())
}

pub async fn auto_refill(global: &Global, a: AutoRefillArgs, out: Out) -> Result<(), CliError> {
    let op = if a.off {
        AutoRefill::Off
    } else {
        let card = card(
            a.card.as_deref().unwrap_or_default(),
            a.exp.as_deref(),
            a.cvc.as_deref(),
        )?;
        AutoRefill::On {
            threshold: amount("threshold", a.threshold.as_ref())?,
            amount: amount("amount", a.amount.as_ref())?,
            cap: amount("cap", a.cap.as_ref())?,
            card,
        }
    };
    let client = connect(global).await?;
    let v = client.auto_refill(op).await?;
    let _ = client.bye().await;
    let auto = &v.auto_refill;
    let human = if auto.active {
        format!(
            "auto-refill on: {} from card ending {} when the balance is below {}, at most {} in all",
            dollars(auto.amount_mills.unwrap_or(0)),
            last4(auto),
            dollars(auto.threshold_mills.unwrap_or(0)),
            dollars(auto.cap_mills.unwrap_or(0)),
        )
    } else {
        "auto-refill off".to_owned()
    };
    out.reply(&v, &human);
    Ok(())
}

pub async fn close_account(global: &Global, a: CloseAccountArgs, out: Out) -> Result<(), CliError> {
    if !a.yes {
        return Err(CliError::new(
            "bad_usage",
            "closing an account cannot be undone: add --yes",
        ));
    }
    let client = connect(global).await?;
    let v = client.close().await?;
    let _ = client.bye().await;
    let human = format!(
        "account closed; {} refunded to {} payment(s)",
        dollars(v.refunded_mills),
        v.refunds.len()
    );
    out.reply(&v, &human);
    Ok(())
}

/// The last four digits of the auto-refill's card, or `????` when the server did not say.
fn last4(auto: &AutoRefillState) -> &str {
    auto.last4.as_deref().unwrap_or("????")
}
