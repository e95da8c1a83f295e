//! Protocol v1 from the outside: a real server on port 0 with real TLS, driven by the client
//! crate and by a raw WebSocket that misbehaves on purpose.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{PASSWORD, fund, issue, raw_hello, today, world, world_on_manual_clock};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::json;
use stampline_client::{Endpoint, Link, LinkError};
use stampline_wire::replies::{BalanceReply, ConfirmReply, IssueReply, QuoteReply};
use stampline_wire::{Frame, Hex, Op, PrintPolicy, decode_frame, encode_frame};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

async fn balance(link: &Link) -> u64 {
    let r = link.request(Op::Balance {}).await.unwrap();
    r.decode::<BalanceReply>().unwrap().balance_mills
}

/// Read until the server closes; returns the error frame's code and the close code.
async fn read_until_close(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    >,
    limit: Duration,
) -> (Option<String>, Option<u16>) {
    let mut error = None;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("server did not close within {limit:?}"),
            Ok(Some(Ok(Message::Text(t)))) => {
                if let Ok(Frame::Error { code, .. }) = decode_frame(t.as_str()) {
                    error = Some(code);
                }
            }
            Ok(Some(Ok(Message::Close(c)))) => return (error, c.map(|c| u16::from(c.code))),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => return (error, None),
        }
    }
}

#[tokio::test]
async fn a_wrong_password_gets_an_error_frame_and_a_close_and_no_session() {
    let w = world(500, 500, 60_000).await;
    drop(w.user("ann", 0).await);
    let (mut ws, first) = raw_hello(&w.endpoint, "ann", "wrong password entirely").await;
    match first {
        Frame::Error { code, message } => {
            assert_eq!(code, "bad_credentials");
            assert!(!message.contains("wrong password entirely"));
        }
        other => panic!("expected an error frame, got {other:?}"),
    }
    let (_, close) = read_until_close(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(close, Some(1008));
    // An unknown user gets the same answer.
    let (_, first) = raw_hello(&w.endpoint, "nobody", "wrong password entirely").await;
    assert!(matches!(first, Frame::Error { code, .. } if code == "bad_credentials"));
    assert!(w.sessions.list().is_empty());
}

#[tokio::test]
async fn a_replayed_sealed_frame_ends_the_link() {
    let w = world(500, 2_000, 60_000).await;
    let link = w.user("ann", 0).await;
    let id = Uuid::new_v4();
    let frame = link
        .seal_raw(&serde_json::to_vec(&json!({"op": "balance", "id": id.to_string()})).unwrap())
        .unwrap();
    link.send_raw(frame.clone());
    link.send_raw(frame);
    let reason = link
        .wait_lost(Duration::from_secs(5))
        .await
        .expect("link must end");
    assert!(reason.contains("bad_sequence"), "{reason}");
    assert!(link.request(Op::Balance {}).await.is_err());
}

#[tokio::test]
async fn a_tampered_sealed_frame_ends_the_link() {
    let w = world(500, 2_000, 60_000).await;
    let link = w.user("ann", 0).await;
    let frame = link
        .seal_raw(
            &serde_json::to_vec(&json!({"op": "balance", "id": Uuid::new_v4().to_string()}))
                .unwrap(),
        )
        .unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&frame).unwrap();
    let ct = v["ct"].as_str().unwrap().to_owned();
    let flipped = if ct.starts_with('A') {
        ct.replacen('A', "B", 1)
    } else {
        format!("A{}", &ct[1..])
    };
    v["ct"] = json!(flipped);
    link.send_raw(v.to_string());
    let reason = link
        .wait_lost(Duration::from_secs(5))
        .await
        .expect("link must end");
    assert!(reason.contains("unopenable"), "{reason}");
}

#[tokio::test]
async fn unanswered_beats_end_the_link_within_the_timeout() {
    let w = world(200, 300, 60_000).await;
    drop(w.user("ann", 0).await);
    let started = tokio::time::Instant::now();
    let (mut ws, first) = raw_hello(&w.endpoint, "ann", PASSWORD).await;
    assert!(matches!(
        first,
        Frame::Welcome {
            beat_interval_ms: 200,
            beat_timeout_ms: 300,
            ..
        }
    ));
    let (error, close) = read_until_close(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(error.as_deref(), Some("beat_timeout"));
    assert_eq!(close, Some(1008));
    // First beat at 200 ms, its ack due 300 ms later: well under 2 s even on a busy machine.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(w.sessions.list().is_empty());
}

#[tokio::test]
async fn a_wrong_beat_ack_ends_the_link() {
    let w = world(100, 1_000, 60_000).await;
    drop(w.user("ann", 0).await);
    let (mut ws, _) = raw_hello(&w.endpoint, "ann", PASSWORD).await;
    let beat = loop {
        if let Some(Ok(Message::Text(t))) = ws.next().await
            && let Ok(f @ Frame::Beat { .. }) = decode_frame(t.as_str())
        {
            break f;
        }
    };
    let Frame::Beat { seq, .. } = beat else {
        unreachable!()
    };
    let ack = Frame::BeatAck {
        seq,
        mac: Hex([0; 32]),
    };
    ws.send(Message::text(encode_frame(&ack))).await.unwrap();
    let (error, close) = read_until_close(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(error.as_deref(), Some("bad_mac"));
    assert_eq!(close, Some(1008));
}

#[tokio::test]
async fn the_client_keeps_a_live_link_over_many_beats() {
    let w = world(50, 1_000, 60_000).await;
    let link = w.user("ann", 0).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(link.lost_reason(), None);
    assert_eq!(balance(&link).await, 0);
    let live = w.sessions.list();
    assert_eq!(live.len(), 1);
    assert!(live[0].last_beat_ms.is_some());
    link.bye().await.unwrap();
}

#[tokio::test]
async fn a_client_pinned_to_another_key_refuses_the_server() {
    let w = world(500, 500, 60_000).await;
    drop(w.user("ann", 0).await);
    let other = world(500, 500, 60_000).await;
    // Right certificate, wrong auth key: the welcome's signature does not verify.
    let mut trust = w.endpoint.trust.clone();
    trust.auth_spki_der = other.endpoint.trust.auth_spki_der.clone();
    let ep = Endpoint::new(&w.endpoint.url(), trust).unwrap();
    let e = Link::connect(&ep, "ann", PASSWORD).await.unwrap_err();
    assert!(matches!(e, LinkError::BadServerSignature), "{e}");
    // Wrong certificate: TLS refuses before any password is sent.
    let ep = Endpoint::new(&w.endpoint.url(), other.endpoint.trust.clone()).unwrap();
    let e = Link::connect(&ep, "ann", PASSWORD).await.unwrap_err();
    assert_eq!(e.code(), "tls_failed", "{e}");
}

#[tokio::test]
async fn a_retried_issue_returns_the_same_item_and_charges_once() {
    let w = world(500, 2_000, 60_000).await;
    let link = w.user("ann", 5_000).await;
    let id = Uuid::new_v4();
    let first = link
        .request_with_id(id, issue(780, "02134", "94105"))
        .await
        .unwrap();
    assert!(first.ok, "{first:?}");
    let again = link
        .request_with_id(id, issue(780, "02134", "94105"))
        .await
        .unwrap();
    assert_eq!(first.fields, again.fields);
    assert_eq!(balance(&link).await, 4_220);
    // Across links too.
    let link2 = Link::connect(&w.endpoint, "ann", PASSWORD).await.unwrap();
    let third = link2
        .request_with_id(id, issue(780, "02134", "94105"))
        .await
        .unwrap();
    assert_eq!(first.fields, third.fields);
    // A different request under a used id is refused and changes nothing.
    let other = link
        .request_with_id(id, issue(900, "02134", "94105"))
        .await
        .unwrap();
    assert!(!other.ok);
    assert_eq!(other.code(), Some("id_reused"));
    assert_eq!(balance(&link).await, 4_220);
    // A retried fund charges once as well.
    let fid = Uuid::new_v4();
    let a = link
        .request_with_id(fid, fund(1_000, "4242424242424242"))
        .await
        .unwrap();
    let b = link
        .request_with_id(fid, fund(1_000, "4242424242424242"))
        .await
        .unwrap();
    assert!(a.ok);
    assert_eq!(a.fields, b.fields);
    assert_eq!(balance(&link).await, 5_220);
}

#[tokio::test]
async fn a_failed_print_confirmation_returns_the_funds_and_voids_the_serial() {
    let w = world(500, 2_000, 60_000).await;
    let link = w.user("ann", 2_000).await;
    let r = link.request(issue(780, "02134", "94105")).await.unwrap();
    let issued: IssueReply = r.decode().unwrap();
    assert_eq!(issued.balance_mills, 1_220);
    assert_eq!(
        issued.print,
        PrintPolicy {
            spool: false,
            copies: 1
        }
    );
    let serial = issued.serial;
    assert_eq!(
        w.endpoint.item_status(&serial).await.unwrap().status,
        "issued"
    );
    let c = link
        .request(Op::Confirm {
            serial: serial.clone(),
            printed: false,
        })
        .await
        .unwrap();
    assert_eq!(c.decode::<ConfirmReply>().unwrap().status, "voided");
    assert_eq!(balance(&link).await, 2_000);
    assert_eq!(
        w.endpoint.item_status(&serial).await.unwrap().status,
        "voided"
    );
    // Registers never run backwards: the void credits the descending register again.
    let b: BalanceReply = link
        .request(Op::Balance {})
        .await
        .unwrap()
        .decode()
        .unwrap();
    assert_eq!(b.ascending_mills, 780);
    assert_eq!(b.descending_mills, 2_000);
    assert_eq!(b.pieces, 0);
    // Unknown serials stay unknown.
    assert_eq!(
        w.endpoint
            .item_status("SL0199999999-1")
            .await
            .unwrap()
            .status,
        "unknown"
    );
}

#[tokio::test]
async fn an_unconfirmed_item_is_voided_after_the_window_once_the_link_is_gone() {
    let window_ms = 10 * 60 * 1000;
    let (w, hand) = world_on_manual_clock(window_ms).await;
    let link = w.user("ann", 2_000).await;
    let r = link.request(issue(780, "02134", "94105")).await.unwrap();
    let serial = r.decode::<IssueReply>().unwrap().serial;
    // While the link is live the item has no window: however far time moves, it stays issued.
    hand.advance_ms(2 * window_ms);
    assert!(w.core.sweep(false).await.unwrap().is_empty());
    assert_eq!(
        w.endpoint.item_status(&serial).await.unwrap().status,
        "issued"
    );
    drop(link);
    // The server notices the link's end on its own; each round moves time past a window that
    // may have started since the round before, until the sweep voids the item.
    let mut status = String::new();
    for _ in 0..100 {
        hand.advance_ms(window_ms + 1);
        w.core.sweep(false).await.unwrap();
        status = w.endpoint.item_status(&serial).await.unwrap().status;
        if status == "voided" {
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, "voided");
    let link = Link::connect(&w.endpoint, "ann", PASSWORD).await.unwrap();
    assert_eq!(balance(&link).await, 2_000);
}

#[tokio::test]
async fn bad_requests_get_clear_codes_and_the_link_and_balance_stay() {
    let w = world(500, 2_000, 60_000).await;
    let link = w.user("ann", 1_000).await;
    let other = w.user("bob", 1_000).await;
    let cases: Vec<(Op, &str)> = vec![
        (issue(5_000, "02134", "94105"), "insufficient_funds"),
        (issue(780, "0213", "94105"), "bad_zip"),
        (issue(780, "02134", "941"), "bad_zip"),
        (issue(0, "02134", "94105"), "bad_amount"),
        (issue(16_777_216, "02134", "94105"), "bad_amount"),
        (fund(1_000, "4242424242424241"), "bad_card"),
        (fund(1_000, "4000000000000002"), "card_declined"),
        (fund(0, "4242424242424242"), "bad_amount"),
        (
            Op::Confirm {
                serial: "SL0100000001-999".into(),
                printed: true,
            },
            "unknown_item",
        ),
        (
            Op::History {
                limit: 0,
                before: None,
            },
            "bad_request",
        ),
    ];
    for (op, code) in cases {
        let name = op.name();
        let r = link.request(op).await.unwrap();
        assert!(!r.ok, "{name} should fail");
        assert_eq!(r.code(), Some(code), "{name}: {r:?}");
        assert!(r.message().is_some_and(|m| !m.is_empty()));
        assert_eq!(balance(&link).await, 1_000);
    }
    // Negative amounts and unknown ops, sent raw.
    let id = Uuid::new_v4().to_string();
    let r = link
        .request_raw(
            &id,
            &serde_json::to_vec(&json!({"op": "steal", "id": id})).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        (r.ok, r.code(), r.op.as_str(), r.id.as_str()),
        (false, Some("unknown_op"), "steal", id.as_str())
    );
    let id = Uuid::new_v4().to_string();
    let r = link
        .request_raw(
            &id,
            &serde_json::to_vec(&json!({"op": "fund", "id": id, "amount_mills": -5})).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.code(), Some("bad_request"));
    assert_eq!(balance(&link).await, 1_000);
    // An oversized frame ends that link with a clear code; others are still served.
    link.send_raw(format!(
        "{{\"type\":\"beat_ack\",\"pad\":\"{}\"}}",
        "x".repeat(stampline_wire::MAX_FRAME_BYTES)
    ));
    let reason = link
        .wait_lost(Duration::from_secs(5))
        .await
        .expect("link must end");
    assert!(reason.contains("frame_too_large"), "{reason}");
    assert_eq!(balance(&other).await, 1_000);
    let again = Link::connect(&w.endpoint, "ann", PASSWORD).await.unwrap();
    assert_eq!(balance(&again).await, 1_000);
}

#[tokio::test]
async fn quotes_price_pieces_and_underpaid_or_overweight_issues_are_refused() {
    let w = world(500, 2_000, 60_000).await;
    let link = w.user("ann", 5_000).await;
    let q = link
        .request(Op::Quote {
            class: "first-class-letter".into(),
            weight_oz: serde_json::Number::from(2),
            from_zip: None,
            to_zip: None,
        })
        .await
        .unwrap();
    assert_eq!(q.decode::<QuoteReply>().unwrap().postage_mills, 1_030);
    let rated = |postage_mills: u64, weight: &str| Op::Issue {
        kind: "postage".into(),
        postage_mills,
        from_zip: "02134".into(),
        to_zip: "94105".into(),
        mail_date: today(),
        class: "first-class-letter".into(),
        weight_oz: Some(weight.parse().unwrap()),
        amount_mills: None,
        fields: Default::default(),
        valid_until: None,
    };
    for (op, code) in [
        (rated(1_029, "2"), "underpaid"),
        (rated(2_000, "4"), "too_heavy"),
        (rated(1_030, "0"), "bad_weight"),
        (issue(700, "02134", "94105"), "underpaid"),
    ] {
        let r = link.request(op).await.unwrap();
        assert_eq!(r.code(), Some(code), "{r:?}");
        assert_eq!(balance(&link).await, 5_000);
    }
    let r = link.request(rated(1_030, "2")).await.unwrap();
    assert!(r.ok, "{r:?}");
    assert_eq!(balance(&link).await, 3_970);
    // Prices are public: no login needed.
    let (_, v) = w
        .endpoint
        .call(
            "GET",
            "/v1/quote?class=priority-mail&weight_oz=16&from_zip=02134&to_zip=94105",
            None,
        )
        .await
        .unwrap();
    let quote: QuoteReply = serde_json::from_value(v).unwrap();
    assert_eq!(quote.zone, Some(8));
    assert!(quote.postage_mills > 9_000);
}
