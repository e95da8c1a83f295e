//! Issue 7 in process: auto-refill charges once per need, and the reconciliation rules.

#![allow(clippy::unwrap_used)]

use stampline_ledger::{AutoRefill, RequestKey};
use stampline_server::core::RegisterForm;
use stampline_server::{Server, ServerConfig};
use stampline_wire::Secret;

async fn server_with_user(dir: &tempfile::TempDir) -> (Server, i64) {
    let mut cfg = ServerConfig::new(dir.path().join("data"));
    cfg.core.argon2_memory_kib = 19 * 1024;
    let server = Server::open(cfg).unwrap();
    server
        .core()
        .register(RegisterForm {
            user: "ann".into(),
            password: Secret("correct horse battery staple".into()),
            name: "Ann Example".into(),
            address: "1 Main St".into(),
            city: "Boston".into(),
            state: "MA".into(),
            zip: "02134".into(),
        })
        .await
        .unwrap();
    let uid = server
        .core()
        .store()
        .user_by_key("ann")
        .unwrap()
        .unwrap()
        .id;
    (server, uid)
}

#[tokio::test]
async fn an_auto_refill_already_charged_before_a_crash_is_booked_once_and_not_charged_again() {
    let dir = tempfile::tempdir().unwrap();
    let (server, uid) = server_with_user(&dir).await;
    let core = server.core();
    let token = core
        .bank()
        .tokenize_card("4242424242424242", "12/30", "123", "t1")
        .unwrap();
    let key = RequestKey {
        user_id: uid,
        request_id: "set-1",
        fingerprint: [1; 32],
    };
    let auth = AutoRefill {
        token: token.token.clone(),
        last4: token.last4,
        threshold_mills: 5_000,
        amount_mills: 10_000,
        cap_mills: 15_000,
        used_mills: 0,
        refills: 0,
    };
    core.store().set_auto_refill(&key, Some(&auth), 0).unwrap();
    // A previous check charged refill 0 and stopped before booking it.
    let first = core
        .bank()
        .charge(&token.token, 10_000, &format!("{uid}:auto-refill-0"))
        .unwrap();
    let out = core.refill_if_needed(uid).unwrap().unwrap();
    assert_eq!(out.payment_id, first.payment_id);
    assert_eq!(out.balance_mills, 10_000);
    // The need is met: another check does nothing.
    assert!(core.refill_if_needed(uid).unwrap().is_none());
    assert_eq!(core.bank().payments().unwrap().len(), 1);
    let auth = core.store().auto_refill(uid).unwrap().unwrap();
    assert_eq!((auth.used_mills, auth.refills), (10_000, 1));
    // Reconciliation agrees with the in-process bank and CMLS.
    let report = core.reconcile().await.unwrap();
    assert!(report.clean, "{:?}", report.differences);
}

#[tokio::test]
async fn setting_a_standing_authorisation_again_with_the_same_request_id_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (server, uid) = server_with_user(&dir).await;
    let store = server.core().store();
    let key = RequestKey {
        user_id: uid,
        request_id: "set-1",
        fingerprint: [1; 32],
    };
    let auth = AutoRefill {
        token: "tok_1".into(),
        last4: "4242".into(),
        threshold_mills: 1,
        amount_mills: 2,
        cap_mills: 4,
        used_mills: 0,
        refills: 0,
    };
    store.set_auto_refill(&key, Some(&auth), 0).unwrap();
    assert!(store.count_auto_refill(uid, 0, 2).unwrap());
    assert!(!store.count_auto_refill(uid, 0, 2).unwrap(), "counted once");
    store.set_auto_refill(&key, Some(&auth), 0).unwrap();
    assert_eq!(store.auto_refill(uid).unwrap().unwrap().used_mills, 2);
    assert!(store.count_auto_refill(uid, 1, 2).unwrap());
    assert!(!store.count_auto_refill(uid, 2, 2).unwrap(), "over the cap");
}
