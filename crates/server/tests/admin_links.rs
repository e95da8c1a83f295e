//! The operators' view of live links and their hand on them: `admin_links` lists every link
//! (user, client and platform, address, since, last beat, round trip, items issued), `admin_kick`
//! ends a linked client's link well within one beat interval (the client sees why), and
//! `admin_lock` refuses the user's logins until `admin_unlock`. Only the admin role may.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{PASSWORD, issue, world};
use stampline_client::{Link, LinkError};
use stampline_wire::Op;
use stampline_wire::replies::{AdminKickReply, AdminLinksReply, ConfirmReply, IssueReply};

const BEAT_MS: u64 = 1_000;

async fn links(root: &Link) -> AdminLinksReply {
    root.request(Op::AdminLinks {})
        .await
        .unwrap()
        .decode::<AdminLinksReply>()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_administrator_sees_every_link_and_ends_or_locks_them() {
    let w = world(BEAT_MS, 2_000, 60_000).await;
    let ann = w.user("ann", 10_000).await;
    w.core.create_admin("root", PASSWORD).unwrap();
    let root = Link::connect(&w.endpoint, "root", PASSWORD).await.unwrap();

    // Ann buys one piece on her link.
    let r = ann.request(issue(780, "02134", "94105")).await.unwrap();
    let serial = r.decode::<IssueReply>().unwrap().serial;
    ann.request(Op::Confirm {
        serial,
        printed: true,
    })
    .await
    .unwrap()
    .decode::<ConfirmReply>()
    .unwrap();

    // Beats flow and are reported within a report interval or two.
    tokio::time::sleep(Duration::from_millis(BEAT_MS + 700)).await;
    let view = links(&root).await;
    assert_eq!(view.links.len(), 2, "{view:?}");
    let a = view.links.iter().find(|l| l.user == "ann").unwrap();
    assert!(a.client.starts_with("stampline-cli/"), "{a:?}");
    assert_eq!(
        a.platform.as_deref(),
        Some(format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH).as_str())
    );
    assert!(a.address.starts_with("127.0.0.1:"), "{a:?}");
    assert_eq!(a.issued, 1, "{a:?}");
    assert!(a.last_beat.is_some(), "{a:?}");
    assert!(a.round_trip_ms.is_some(), "{a:?}");
    assert_eq!(a.session, ann.session().to_string());

    // Only the admin role sees or ends links.
    for op in [
        Op::AdminLinks {},
        Op::AdminKick {
            session: None,
            user: Some("root".into()),
        },
        Op::AdminLock {
            user: "root".into(),
        },
    ] {
        let r = ann.request(op).await.unwrap();
        assert_eq!(r.code(), Some("forbidden"), "{r:?}");
    }

    // A kick ends Ann's link well within one beat interval; her client is told why.
    let mut lost = ann.watch_lost();
    let kicked_at = Instant::now();
    let r = root
        .request(Op::AdminKick {
            session: None,
            user: Some("ann".into()),
        })
        .await
        .unwrap()
        .decode::<AdminKickReply>()
        .unwrap();
    assert_eq!(r.ended, vec![ann.session().to_string()]);
    let reason = tokio::time::timeout(Duration::from_millis(BEAT_MS), async {
        loop {
            if let Some(reason) = lost.borrow_and_update().clone() {
                return reason;
            }
            lost.changed().await.unwrap();
        }
    })
    .await
    .expect("the link ends within one beat interval");
    assert!(kicked_at.elapsed() < Duration::from_millis(BEAT_MS));
    assert!(reason.contains("kicked"), "{reason}");
    assert_eq!(links(&root).await.links.len(), 1);

    // She may log in again after a kick; a lock refuses her until it is lifted.
    let again = Link::connect(&w.endpoint, "ann", PASSWORD).await.unwrap();
    let r = root
        .request(Op::AdminLock { user: "ann".into() })
        .await
        .unwrap()
        .decode::<AdminKickReply>()
        .unwrap();
    assert!(r.locked);
    assert_eq!(r.ended, vec![again.session().to_string()]);
    match Link::connect(&w.endpoint, "ann", PASSWORD).await {
        Err(LinkError::Refused { code, .. }) => assert_eq!(code, "user_locked"),
        other => panic!("a locked user logged in: {:?}", other.map(|l| l.session())),
    }
    let r = root
        .request(Op::AdminUnlock { user: "ann".into() })
        .await
        .unwrap();
    assert!(r.ok, "{r:?}");
    Link::connect(&w.endpoint, "ann", PASSWORD).await.unwrap();

    // Every step is in the audit log, which still holds.
    assert!(w.core.store().audit().unwrap().is_clean());
}
