//! `stampline demo`: a server on embedded defaults in a temporary directory, then register, fund
//! $20, buy $0.78 of postage as PNG and PDF labels, and verify the PNG.

use serde_json::json;
use stampline_client::{Client, Endpoint, Trust};
use stampline_server::{Server, ServerConfig};

use crate::args::{BuyArgs, DemoArgs, FundArgs, OutputArgs, RegisterArgs};
use crate::buy::do_buy;
use crate::client_cmds::{do_register, dollars, fund_request};
use crate::output::{CliError, Out};
use crate::verify::do_verify;

pub async fn demo(a: DemoArgs, out: Out) -> Result<(), CliError> {
    let dir = match a.dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!(
            "stampline-demo-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        )),
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| CliError::new("demo", format!("{}: {e}", dir.display())))?;
    let mut cfg = ServerConfig::new(dir.join("data"));
    cfg.beat_interval_ms = 1_000;
    cfg.beat_timeout_ms = 2_000;
    let server = Server::open(cfg).map_err(|e| CliError::new("server_start", format!("{e:#}")))?;
    let trust_path = server.trust_path().to_path_buf();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| CliError::new("listen", e.to_string()))?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::new("listen", e.to_string()))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(listener, async {
        let _ = stop_rx.await;
    }));

    let ep = Endpoint::new(&format!("https://{addr}"), Trust::from_file(&trust_path)?)?;
    // A fresh random password (UUID v4: 122 random bits).
    let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    do_register(
        &ep,
        "demo",
        &password,
        &RegisterArgs {
            name: "Demo User".into(),
            address: "1 Main St".into(),
            city: "Boston".into(),
            state: "MA".into(),
            zip: "02134".into(),
        },
    )
    .await?;
    let client = Client::connect(ep, "demo", &password).await?;
    let exp_year = (time::OffsetDateTime::now_utc().year() + 3) % 100;
    let (amount, payment) = fund_request(&FundArgs {
        amount: "20".into(),
        card: Some("4242424242424242".into()),
        exp: Some(format!("12/{exp_year:02}")),
        cvc: Some("123".into()),
        eft_routing: None,
        eft_account: None,
    })?;
    client.fund(amount, payment).await?;
    let label = dir.join("label");
    let bought = do_buy(
        &client,
        &BuyArgs {
            postage: Some("0.78".into()),
            class: "first-class-letter".into(),
            weight_oz: None,
            from: "02134".into(),
            to: "94105".into(),
            date: None,
            output: OutputArgs {
                format: vec![],
                out: Some(label.clone()),
                printer: None,
                printer_cert: None,
                dpi: 300,
            },
            layout: None,
            to_address: None,
            from_address: None,
            batch: None,
        },
    )
    .await?;
    let balance = client.balance().await?;
    let png = label.with_extension("png");
    let pdf = label.with_extension("pdf");
    let verdict = do_verify(Some(client.endpoint()), None, &png).await?;
    let _ = client.bye().await;
    let _ = stop_tx.send(());
    let _ = running.await;

    let valid = verdict["valid"] == json!(true);
    let v = json!({
        "label_png": png, "label_pdf": pdf, "serial": bought.serial, "postage_mills": bought.postage.mills(),
        "balance_mills": balance.balance_mills, "valid": valid, "device_id": balance.device_id,
        "dir": dir, "trust": trust_path,
    });
    let human = format!(
        "Stampline demo (sandbox: no real postage or money)\n  registered, and licensed meter {} at the first funding ($20.00 by test card)\n  bought {} postage, serial {}\n  balance now {}\n  label PNG: {}\n  label PDF: {}\n  verify: {}",
        balance.device_id.as_deref().unwrap_or("-"),
        dollars(bought.postage.mills()),
        bought.serial,
        dollars(balance.balance_mills),
        png.display(),
        pdf.display(),
        if valid {
            "VALID (barcode decoded, signature checked with the published key, status printed)"
                .to_owned()
        } else {
            format!("INVALID: {}", verdict["reason"])
        }
    );
    out.done(&v, &human);
    if !valid {
        return Err(CliError::new(
            "demo",
            format!("the demo label did not verify: {}", verdict["reason"]),
        ));
    }
    Ok(())
}
