//! The client library's purchase workflow (`stampline_client::Client`), called directly as the
//! web portal's server-side tests will, against a real `stampline server` on port 0.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Cli, PASSWORD, TestServer};
use stampline_client::label::{self, LabelChoice};
use stampline_client::print::{DocFormat, PrintOptions};
use stampline_client::{
    BatchEvent, BatchPiece, BatchRequest, BuyRequest, Client, ClientError, Endpoint, Output,
    Payment, PieceEnd, ReprintRequest, Trust, check_item, jobs,
};
use stampline_label::{Format, Layout};
use stampline_money::Amount;
use stampline_wire::{Card, Secret};

fn postage(dollars: &str) -> Amount {
    Amount::parse_dollars(dollars).unwrap()
}

/// A registered user with $20 on a live client.
async fn funded_client(server: &TestServer, user: &str) -> Client {
    server.register(user);
    let endpoint = Endpoint::new(&server.url, Trust::from_file(&server.trust).unwrap()).unwrap();
    let client = Client::connect(endpoint, user, PASSWORD).await.unwrap();
    let card = Card {
        number: Secret(common::CARD.into()),
        exp: common::exp(),
        cvc: Secret("123".into()),
    };
    client
        .fund(postage("20"), Payment::Card(card))
        .await
        .unwrap();
    client
}

async fn balance_mills(client: &Client) -> u64 {
    client.balance().await.unwrap().balance_mills
}

fn letter(output: Output) -> BuyRequest {
    BuyRequest {
        class: "first-class-letter".into(),
        postage: Some(postage("0.78")),
        weight_oz: None,
        from_zip: "02134".into(),
        to_zip: "94105".into(),
        mail_date: None,
        label: LabelChoice::default(),
        dpi: 300,
        output,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_buy_through_the_library_charges_once_prints_and_confirms_a_verified_item() {
    let server = TestServer::start();
    let client = funded_client(&server, "ann").await;
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("label");

    let bought = client
        .buy(letter(Output::Files {
            base: Some(base.clone()),
            formats: vec![DocFormat::Raw, DocFormat::Png],
        }))
        .await
        .unwrap();

    assert_eq!(bought.postage, postage("0.78"));
    assert_eq!(bought.confirmed.status, "printed");
    assert_eq!(bought.confirmed.balance_mills, 20_000 - 780);
    assert_eq!(balance_mills(&client).await, 20_000 - 780);
    let item = check_item(&bought.item, client.keys().await.unwrap()).unwrap();
    assert_eq!(item.body.serial().to_string(), bought.serial);
    assert_eq!(
        bought.files(),
        vec![base.with_extension("raw"), base.with_extension("png")]
    );
    assert_eq!(
        std::fs::read(base.with_extension("raw")).unwrap(),
        bought.item
    );
    client.bye().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_buy_whose_file_cannot_be_written_is_voided_and_refunded() {
    let server = TestServer::start();
    let client = funded_client(&server, "bob").await;
    let nowhere = std::path::PathBuf::from("/nonexistent/dir/label");

    let e = client
        .buy(letter(Output::Files {
            base: Some(nowhere),
            formats: vec![DocFormat::Raw],
        }))
        .await
        .unwrap_err();

    assert!(matches!(e, ClientError::PrintFailed(_)), "{e:?}");
    assert_eq!(e.code(), "print_failed");
    assert!(e.to_string().contains("voided and refunded"), "{e}");
    assert_eq!(balance_mills(&client).await, 20_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rated_buy_charges_the_quote_and_a_bad_layout_is_refused_before_any_charge() {
    let server = TestServer::start();
    let client = funded_client(&server, "cat").await;
    let dir = tempfile::tempdir().unwrap();
    let weight: serde_json::Number = "3".parse().unwrap();
    let quoted = client
        .quote("first-class-letter", &weight, "02134", "94105")
        .await
        .unwrap();

    let mut rated = letter(Output::Files {
        base: Some(dir.path().join("rated")),
        formats: vec![DocFormat::Raw],
    });
    rated.postage = None;
    rated.weight_oz = Some(weight);
    let bought = client.buy(rated).await.unwrap();
    assert_eq!(bought.postage, quoted);
    assert_eq!(balance_mills(&client).await, 20_000 - quoted.mills());

    let mut too_long = letter(Output::Files {
        base: Some(dir.path().join("never")),
        formats: vec![DocFormat::Pdf],
    });
    too_long.label = LabelChoice {
        layout: Some(Layout::Envelope10),
        from: vec![],
        to: vec!["X".repeat(500), "BOSTON MA 02134".into()],
    };
    let e = client.buy(too_long).await.unwrap_err();
    assert!(
        matches!(e.code().as_str(), "bad_address" | "bad_label"),
        "{e:?}"
    );
    assert_eq!(balance_mills(&client).await, 20_000 - quoted.mills());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_reports_each_piece_as_it_settles_and_prints_them_into_one_file() {
    let server = TestServer::start();
    let client = funded_client(&server, "dan").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("batch.pdf");
    let to = label::parse_address("to", "Ada Lovelace|12 Main St|Boston MA 02134").unwrap();
    let piece = |row| BatchPiece {
        row,
        postage: postage("0.78"),
        class: "first-class-letter".into(),
        weight_oz: None,
        from_zip: "94105".into(),
        to_zip: label::address_zip(&to).unwrap(),
        from: vec![],
        to: to.clone(),
    };
    let mut issuing = Vec::new();
    let mut settled = Vec::new();

    let report = client
        .buy_batch(
            BatchRequest {
                pieces: vec![piece(1), piece(2)],
                layout: Layout::Label4x6,
                format: Format::Pdf,
                dpi: 300,
                path: path.clone(),
                mail_date: None,
            },
            |event| match event {
                BatchEvent::Issuing { row, rows } => issuing.push((row, rows)),
                BatchEvent::Settled(piece) => settled.push(piece.clone()),
            },
        )
        .await
        .unwrap();

    assert!(report.complete(), "{report:?}");
    assert_eq!(issuing, vec![(1, 2), (2, 2)]);
    assert_eq!(settled, report.pieces);
    assert!(settled.iter().all(|p| p.end == PieceEnd::Printed));
    assert_eq!(report.printed_mills(), 1_560);
    assert_eq!(report.balance_mills, Some(20_000 - 1_560));
    assert_eq!(report.file.as_deref(), Some(path.as_path()));
    assert!(std::fs::read(&path).unwrap().starts_with(b"%PDF"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_printed_item_is_not_reprinted_and_nothing_changes() {
    let server = TestServer::start();
    let client = funded_client(&server, "eve").await;
    let dir = tempfile::tempdir().unwrap();
    let bought = client
        .buy(letter(Output::Files {
            base: Some(dir.path().join("first")),
            formats: vec![DocFormat::Raw],
        }))
        .await
        .unwrap();
    let again = dir.path().join("again");
    let targets = jobs::targets(
        &format!("file:{}", again.display()),
        &[DocFormat::Raw],
        &PrintOptions::default(),
    )
    .unwrap();

    let refused = client
        .reprint(ReprintRequest {
            serial: bought.serial.clone(),
            targets,
            dpi: 300,
        })
        .await
        .unwrap_err();

    assert_eq!(refused.code(), "already_printed", "{refused}");
    assert!(
        !again.with_extension("raw").exists(),
        "no second copy of a printed indicium is written"
    );
    assert_eq!(balance_mills(&client).await, 20_000 - 780);
}
