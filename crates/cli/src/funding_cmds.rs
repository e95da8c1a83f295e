//! Issue 7 client commands: `payment-options` and `auto-refill`.

use stampline_money::Amount;
use stampline_wire::{Card, Op, Secret};

use crate::args::{AutoRefillArgs, CloseAccountArgs, Global};
use crate::client_cmds::{connect, dollars};
use crate::output::{CliError, Out};

fn mills(what: &str, dollars: Option<&String>) -> Result<u64, CliError> {
    let text = dollars.ok_or_else(|| CliError::new("bad_usage", format!("give --{what}")))?;
    Amount::parse_dollars(text)
        .map(|a| a.mills())
        .map_err(|e| CliError::new("bad_amount", format!("--{what}: {e}")))
}

pub async fn payment_options(global: &Global, out: Out) -> Result<(), CliError> {
    let client = connect(global).await?;
    let v = client.call(Op::PaymentOptions {}).await?;
    let _ = client.bye().await;
    let mut human = format!(
        "pay by card (--card --exp --cvc) or EFT (--eft-routing --eft-account), up to {} at a time",
        dollars(v["max_amount_mills"].as_u64().unwrap_or(0))
    );
    let auto = &v["auto_refill"];
    if auto["active"] == true {
        human.push_str(&format!(
            "\nauto-refill: {} from card ending {} when below {}; {} of {} used",
            dollars(auto["amount_mills"].as_u64().unwrap_or(0)),
            auto["last4"].as_str().unwrap_or("????"),
            dollars(auto["threshold_mills"].as_u64().unwrap_or(0)),
            dollars(auto["used_mills"].as_u64().unwrap_or(0)),
            dollars(auto["cap_mills"].as_u64().unwrap_or(0)),
        ));
    } else {
        human.push_str("\nauto-refill: off");
    }
    if let Some(lock) = v["locked"].as_str() {
        human.push_str(&format!("\n{lock}"));
    }
    out.done(&v, &human);
    Ok(())
}

pub async fn auto_refill(global: &Global, a: AutoRefillArgs, out: Out) -> Result<(), CliError> {
    let op = if a.off {
        Op::AutoRefill {
            threshold_mills: 0,
            amount_mills: 0,
            cap_mills: 0,
            card: None,
            off: true,
        }
    } else {
        let number: String = a
            .card
            .as_deref()
            .unwrap_or_default()
            .chars()
            .filter(|c| *c != ' ' && *c != '-')
            .collect();
        if !stampline_sandbox::luhn_ok(&number) {
            return Err(CliError::new(
                "bad_card",
                "card number fails the Luhn check",
            ));
        }
        Op::AutoRefill {
            threshold_mills: mills("threshold", a.threshold.as_ref())?,
            amount_mills: mills("amount", a.amount.as_ref())?,
            cap_mills: mills("cap", a.cap.as_ref())?,
            card: Some(Card {
                number: Secret(number),
                exp: a.exp.clone().unwrap_or_default(),
                cvc: Secret(a.cvc.clone().unwrap_or_default()),
            }),
            off: false,
        }
    };
    let client = connect(global).await?;
    let v = client.call(op).await?;
    let _ = client.bye().await;
    let auto = &v["auto_refill"];
    let human = if auto["active"] == true {
        format!(
            "auto-refill on: {} from card ending {} when the balance is below {}, at most {} in all",
            dollars(auto["amount_mills"].as_u64().unwrap_or(0)),
            auto["last4"].as_str().unwrap_or("????"),
            dollars(auto["threshold_mills"].as_u64().unwrap_or(0)),
            dollars(auto["cap_mills"].as_u64().unwrap_or(0)),
        )
    } else {
        "auto-refill off".to_owned()
    };
    out.done(&v, &human);
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
    let v = client.call(Op::Close {}).await?;
    let _ = client.bye().await;
    let human = format!(
        "account closed; {} refunded to {} payment(s)",
        dollars(v["refunded_mills"].as_u64().unwrap_or(0)),
        v["refunds"].as_array().map_or(0, Vec::len)
    );
    out.done(&v, &human);
    Ok(())
}
