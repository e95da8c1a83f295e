//! Logins from the outside: the back-off per (user name, source) instead of a lockout, failures
//! that all look the same, the operator's view of back-offs, the bounded pool of password hashes
//! answering `busy`, and the data dir's modes — against a real server on port 0 with real TLS.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{PASSWORD, World, issue, raw_hello, world, world_on_manual_clock};
use serde_json::json;
use stampline_client::Link;
use stampline_server::core::DEFAULT_LOGIN_THROTTLE;
use stampline_server::source::SourceKey;
use stampline_wire::replies::{AdminThrottlesReply, AdminUnlockReply, IssueReply};
use stampline_wire::{Frame, Op, Secret};

/// Fails `n` logins of `user` with a wrong password from this machine (127.0.0.1).
async fn fail_logins(w: &World, user: &str, n: u32) {
    for _ in 0..n {
        let e = Link::connect(&w.endpoint, user, "wrong password entirely")
            .await
            .unwrap_err();
        assert_eq!(e.code(), "bad_credentials", "{e}");
    }
}

/// A login straight through the private tier, as if from `ip`.
async fn login_from(w: &World, user: &str, ip: &str) -> Result<(), String> {
    w.core
        .login(
            user.into(),
            Secret(PASSWORD.into()),
            b"transcript".to_vec(),
            format!("address={ip}:4711"),
            SourceKey::of(ip.parse().unwrap()),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.code().to_owned())
}

#[tokio::test]
async fn failures_from_one_source_do_not_stop_the_user_from_another() {
    let (w, _hand) = world_on_manual_clock(60_000).await;
    drop(w.user("ann", 0).await);
    fail_logins(&w, "ann", DEFAULT_LOGIN_THROTTLE.free_failures).await;
    // This source is backed off for ann, even with the right password …
    let e = Link::connect(&w.endpoint, "ann", PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "bad_credentials", "{e}");
    // … but ann logs in from elsewhere (another IPv4 address, another IPv6 /64).
    login_from(&w, "ann", "198.51.100.7").await.unwrap();
    login_from(&w, "ann", "2001:db8:1:2::9").await.unwrap();
    // And other names from this source are not touched.
    drop(w.user("bob", 0).await);
}

#[tokio::test]
async fn a_backed_off_source_is_refused_the_right_password_until_the_back_off_passes() {
    let (w, hand) = world_on_manual_clock(60_000).await;
    drop(w.user("ann", 0).await);
    fail_logins(&w, "ann", DEFAULT_LOGIN_THROTTLE.free_failures).await;
    hand.advance_ms(DEFAULT_LOGIN_THROTTLE.first_ms - 1);
    let e = Link::connect(&w.endpoint, "ann", PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "bad_credentials", "{e}");
    hand.advance_ms(1);
    let link = Link::connect(&w.endpoint, "ann", PASSWORD).await.unwrap();
    link.bye().await.unwrap();
}

#[tokio::test]
async fn unknown_backed_off_and_wrong_password_answers_are_identical() {
    let (w, _hand) = world_on_manual_clock(60_000).await;
    drop(w.user("ann", 0).await);
    drop(w.user("bob", 0).await);
    let answer = |frame: Frame| match frame {
        Frame::Error { code, message } => (code, message),
        other => panic!("expected an error frame, got {other:?}"),
    };
    let (_, wrong) = raw_hello(&w.endpoint, "ann", "wrong password entirely").await;
    let (_, unknown) = raw_hello(&w.endpoint, "nobody", "wrong password entirely").await;
    fail_logins(&w, "bob", DEFAULT_LOGIN_THROTTLE.free_failures).await;
    let (_, backed_off) = raw_hello(&w.endpoint, "bob", PASSWORD).await;
    let wrong = answer(wrong);
    assert_eq!(wrong.0, "bad_credentials");
    assert_eq!(answer(unknown), wrong);
    assert_eq!(answer(backed_off), wrong);
}

#[tokio::test]
async fn an_admin_lists_and_clears_a_users_back_offs() {
    let (w, _hand) = world_on_manual_clock(60_000).await;
    drop(w.user("ann", 0).await);
    w.core
        .create_admin("root", "admin horse battery staple")
        .unwrap();
    fail_logins(&w, "ann", DEFAULT_LOGIN_THROTTLE.free_failures).await;
    let e = Link::connect(&w.endpoint, "ann", PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "bad_credentials", "{e}");

    let root = Link::connect(&w.endpoint, "root", "admin horse battery staple")
        .await
        .unwrap();
    let listed: AdminThrottlesReply = root
        .request(Op::AdminThrottles {})
        .await
        .unwrap()
        .decode()
        .unwrap();
    assert_eq!(listed.throttles.len(), 1, "{listed:?}");
    let t = &listed.throttles[0];
    assert_eq!((t.user.as_str(), t.source.as_str()), ("ann", "127.0.0.1"));
    assert_eq!(t.failures, DEFAULT_LOGIN_THROTTLE.free_failures);
    assert!(t.until_ms.is_some(), "{t:?}");
    let cleared: AdminUnlockReply = root
        .request(Op::AdminUnlock { user: "Ann".into() })
        .await
        .unwrap()
        .decode()
        .unwrap();
    assert_eq!((cleared.user.as_str(), cleared.cleared), ("ann", 1));
    let link = Link::connect(&w.endpoint, "ann", PASSWORD).await.unwrap();
    link.bye().await.unwrap();
    // Only admins may.
    let ann = Link::connect(&w.endpoint, "ann", PASSWORD).await.unwrap();
    let refused = ann.request(Op::AdminThrottles {}).await.unwrap();
    assert_eq!(refused.code(), Some("forbidden"));
}

#[tokio::test]
async fn failed_logins_are_audited_with_their_source_for_unknown_names_too() {
    let (w, _hand) = world_on_manual_clock(60_000).await;
    drop(w.user("ann", 0).await);
    fail_logins(&w, "ann", 1).await;
    fail_logins(&w, "nobody", 1).await;
    let db = rusqlite::Connection::open(w.dir.path().join("data/ledger.sqlite")).unwrap();
    let mut rows = db
        .prepare("SELECT actor, detail FROM audit_log WHERE action = 'login_failed' ORDER BY seq")
        .unwrap();
    let failed: Vec<(String, String)> = rows
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    for (name, (_, detail)) in ["ann", "nobody"].iter().zip(&failed) {
        assert!(
            detail.contains(name) && detail.contains("127.0.0.1"),
            "{detail}"
        );
        assert!(
            !detail.contains("wrong password"),
            "never the password: {detail}"
        );
    }
    assert_eq!(failed[1].0, "login");
}

#[tokio::test]
async fn a_hello_is_answered_busy_at_once_when_every_hash_slot_is_in_use() {
    let w = world(500, 2_000, 60_000).await;
    drop(w.user("ann", 0).await);
    let pool = w.core.hash_pool();
    let held: Vec<_> = std::iter::from_fn(|| pool.try_slot()).collect();
    assert_eq!(held.len(), pool.size());
    let started = std::time::Instant::now();
    let (_, first) = raw_hello(&w.endpoint, "ann", PASSWORD).await;
    assert!(
        matches!(&first, Frame::Error { code, .. } if code == "busy"),
        "{first:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered at once"
    );
    // The client tries again a few times: it gets in once a slot is free.
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(held);
    });
    let link = Link::connect(&w.endpoint, "ann", PASSWORD).await.unwrap();
    release.await.unwrap();
    link.bye().await.unwrap();
}

#[tokio::test]
async fn a_registration_is_answered_busy_when_every_hash_slot_is_in_use() {
    let w = world(500, 2_000, 60_000).await;
    let pool = w.core.hash_pool();
    let held: Vec<_> = std::iter::from_fn(|| pool.try_slot()).collect();
    let form = json!({"user": "ann", "password": PASSWORD, "name": "Ann Example",
        "address": "1 Main St", "city": "Boston", "state": "MA", "zip": "02134"});
    let e = w.endpoint.register(&form).await.unwrap_err();
    assert_eq!(e.code(), "busy", "{e}");
    drop(held);
    // Nothing was registered: the same form goes through once a slot is free.
    w.endpoint.register(&form).await.unwrap();
}

#[tokio::test]
async fn the_client_gives_up_when_the_server_stays_busy() {
    let w = world(500, 2_000, 60_000).await;
    drop(w.user("ann", 0).await);
    let pool = w.core.hash_pool();
    let _held: Vec<_> = std::iter::from_fn(|| pool.try_slot()).collect();
    let started = std::time::Instant::now();
    let e = Link::connect(&w.endpoint, "ann", PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "busy", "{e}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(10),
        "retried for about a second or two: {waited:?}"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn the_data_dir_is_0700_and_every_file_in_it_0600() {
    use std::os::unix::fs::PermissionsExt as _;
    let w = world(500, 2_000, 60_000).await;
    let link = w.user("ann", 5_000).await;
    let issued: IssueReply = link
        .request(issue(780, "02134", "94105"))
        .await
        .unwrap()
        .decode()
        .unwrap();
    let r = link
        .request(Op::Confirm {
            serial: issued.serial,
            printed: true,
        })
        .await
        .unwrap();
    assert!(r.ok, "{r:?}");
    link.bye().await.unwrap();
    let data = w.dir.path().join("data");
    let mode =
        |p: &std::path::Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    let mut todo = vec![data];
    let mut files = 0;
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                assert_eq!(mode(&path), 0o700, "{}", path.display());
                todo.push(path);
            } else {
                assert_eq!(mode(&path), 0o600, "{}", path.display());
                files += 1;
            }
        }
    }
    assert!(
        files >= 5,
        "the ledger, keys, TLS, trust and sandbox files were walked"
    );
}
