//! Value items through the server on a manual clock: expiry at the end of the valid-until day
//! (the public status says `expired`, a redemption is refused `expired`), a certificate's public
//! status while part of it is left, and twenty redemptions of one coupon racing over four links.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::world_on_manual_clock;
use stampline_wire::Op;
use stampline_wire::replies::{IssueReply, RedeemReply, RedeemersReply};

const DAY_MS: i64 = 24 * 3600 * 1000;

fn value_issue(kind: &str, amount_mills: u64, fields: &[(&str, &str)], until: Option<&str>) -> Op {
    Op::Issue {
        kind: kind.into(),
        postage_mills: 0,
        from_zip: String::new(),
        to_zip: String::new(),
        mail_date: String::new(),
        class: String::new(),
        weight_oz: None,
        amount_mills: Some(amount_mills),
        fields: fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
        valid_until: until.map(str::to_owned),
    }
}

fn redeem(serial: &str, amount_mills: Option<u64>) -> Op {
    Op::Redeem {
        serial: serial.to_owned(),
        amount_mills,
    }
}

async fn issued_and_printed(link: &stampline_client::Link, op: Op) -> String {
    let r = link.request(op).await.unwrap();
    let serial = r.decode::<IssueReply>().unwrap().serial;
    let c = link
        .request(Op::Confirm {
            serial: serial.clone(),
            printed: true,
        })
        .await
        .unwrap();
    assert!(c.ok, "{c:?}");
    serial
}

#[tokio::test(flavor = "multi_thread")]
async fn an_item_expires_at_the_end_of_its_day_and_is_refused_after() {
    let (w, hand) = world_on_manual_clock(60_000).await;
    let ann = w.user("ann", 10_000).await;
    let today = time::OffsetDateTime::from_unix_timestamp(w.core.clock().now_ms().div_euclid(1000))
        .unwrap()
        .date()
        .to_string();
    let coupon = issued_and_printed(
        &ann,
        value_issue(
            "coupon",
            1_000,
            &[("issuer", "Corner Bakery"), ("terms", "One per customer")],
            Some(&today),
        ),
    )
    .await;
    let status = w.endpoint.item_status(&coupon).await.unwrap();
    assert_eq!(status.status, "printed");
    assert_eq!(status.kind.as_deref(), Some("coupon"));
    assert_eq!(status.valid_until.as_deref(), Some(today.as_str()));

    // Two days on, the day is over.
    hand.advance_ms(2 * DAY_MS);
    assert_eq!(
        w.endpoint.item_status(&coupon).await.unwrap().status,
        "expired"
    );
    let r = ann.request(redeem(&coupon, None)).await.unwrap();
    assert_eq!(r.code(), Some("expired"), "{r:?}");

    // A certificate redeemed in part tells what is left.
    let cert = issued_and_printed(
        &ann,
        value_issue("certificate", 5_000, &[("recipient", "Jane Doe")], None),
    )
    .await;
    let r = ann
        .request(redeem(&cert, Some(2_000)))
        .await
        .unwrap()
        .decode::<RedeemReply>()
        .unwrap();
    assert_eq!((r.status.as_str(), r.remaining_mills), ("printed", 3_000));
    let status = w.endpoint.item_status(&cert).await.unwrap();
    assert_eq!(status.status, "printed");
    assert_eq!(status.amount_mills, Some(5_000));
    assert_eq!(status.remaining_mills, Some(3_000));
    // Postage fields on a value item are refused, and nothing moves.
    let before = w.core.store().audit().unwrap().transfers;
    let mut mixed = value_issue(
        "ticket",
        1_000,
        &[("event", "E"), ("venue", "V"), ("seat", "S")],
        None,
    );
    if let Op::Issue { postage_mills, .. } = &mut mixed {
        *postage_mills = 780;
    }
    let r = ann.request(mixed).await.unwrap();
    assert_eq!(r.code(), Some("bad_request"), "{r:?}");
    assert_eq!(w.core.store().audit().unwrap().transfers, before);
    assert!(w.core.store().audit().unwrap().is_clean());
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_redemptions_of_one_coupon_over_four_links_succeed_once() {
    let (w, _hand) = world_on_manual_clock(60_000).await;
    let ann = w.user("ann", 10_000).await;
    let mut links = vec![ann];
    for name in ["bob", "cy", "dee"] {
        let link = w.user(name, 0).await;
        let r = links[0]
            .request(Op::Redeemers {
                add: Some(name.to_owned()),
                remove: None,
            })
            .await
            .unwrap()
            .decode::<RedeemersReply>()
            .unwrap();
        assert!(r.redeemers.contains(&name.to_owned()));
        links.push(link);
    }
    let coupon = issued_and_printed(
        &links[0],
        value_issue(
            "coupon",
            500,
            &[("issuer", "Corner Bakery"), ("terms", "One per customer")],
            None,
        ),
    )
    .await;
    let links = std::sync::Arc::new(links);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let links = std::sync::Arc::clone(&links);
        let coupon = coupon.clone();
        tasks.push(tokio::spawn(async move {
            links[i % 4].request(redeem(&coupon, None)).await.unwrap()
        }));
    }
    let mut ok = 0;
    let mut already = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match (r.ok, r.code()) {
            (true, _) => ok += 1,
            (false, Some("already_redeemed")) => already += 1,
            other => panic!("unexpected answer {other:?}: {r:?}"),
        }
    }
    assert_eq!((ok, already), (1, 19));
    assert_eq!(
        w.endpoint.item_status(&coupon).await.unwrap().status,
        "redeemed"
    );
    assert!(w.core.store().audit().unwrap().is_clean());
}
