//! The private tier in process: auto-refill charges once per need, the reconciliation rules, and
//! every op's answer as its typed reply.

#![allow(clippy::unwrap_used)]

use stampline_ledger::{AutoRefill, RequestKey};
use stampline_server::core::RegisterForm;
use stampline_server::{Server, ServerConfig};
use stampline_wire::Secret;

async fn server_with_user(dir: &tempfile::TempDir) -> (Server, i64) {
    let mut cfg = ServerConfig::new(dir.path().join("data"));
    cfg.core.argon2_memory_kib = 19 * 1024;
    let server = Server::open(cfg).unwrap();
    let uid = register(&server, "ann", "02134").await;
    (server, uid)
}

/// Registers `user` with an address in `zip`; answers the user id.
async fn register(server: &Server, user: &str, zip: &str) -> i64 {
    let registered = server
        .core()
        .register(RegisterForm {
            user: user.into(),
            password: Secret("correct horse battery staple".into()),
            name: "Ann Example".into(),
            address: "1 Main St".into(),
            city: "Boston".into(),
            state: "MA".into(),
            zip: zip.into(),
        })
        .await
        .unwrap();
    assert_eq!(
        (registered.license_id, registered.device_id),
        (None, None),
        "registration licenses nothing"
    );
    server.core().store().user_by_key(user).unwrap().unwrap().id
}

/// The `fund` op by the sandbox's approving card.
fn fund_op(amount_mills: u64) -> stampline_wire::Op {
    stampline_wire::Op::Fund {
        amount_mills,
        card: Some(stampline_wire::Card {
            number: Secret("4242424242424242".into()),
            exp: "12/30".into(),
            cvc: Secret("123".into()),
        }),
        card_token: None,
        eft: None,
    }
}

/// A letter's `issue` op for today.
fn issue_op() -> stampline_wire::Op {
    stampline_wire::Op::Issue {
        kind: "postage".into(),
        postage_mills: 780,
        from_zip: "02134".into(),
        to_zip: "94105".into(),
        mail_date: time::OffsetDateTime::now_utc().date().to_string(),
        class: "first-class-letter".into(),
        weight_oz: None,
        amount_mills: None,
        fields: Default::default(),
        valid_until: None,
    }
}

#[tokio::test]
async fn registration_licenses_nothing_and_the_first_funding_licenses_before_it_charges() {
    use stampline_wire::Op;
    use stampline_wire::replies::BalanceReply;
    let dir = tempfile::tempdir().unwrap();
    let (server, uid) = server_with_user(&dir).await;
    let core = server.core();
    assert!(
        core.cmls().devices().unwrap().is_empty(),
        "CMLS was not asked"
    );
    let balance: BalanceReply = handle(core, uid, Op::Balance {}).await.decode().unwrap();
    assert_eq!((balance.license_id, balance.device_id), (None, None));
    // Nothing to buy with and no device to sign for: a clear refusal, nothing changes.
    let refused = handle(core, uid, issue_op()).await;
    assert_eq!(refused.code(), Some("not_licensed"), "{refused:?}");

    let funded = handle(core, uid, fund_op(5_000)).await;
    assert!(funded.ok, "{funded:?}");
    let balance: BalanceReply = handle(core, uid, Op::Balance {}).await.decode().unwrap();
    let device = balance.device_id.expect("licensed by the first funding");
    assert!(device.starts_with("TEST"), "a sandbox device: {device}");
    let at_cmls = core.cmls().device_status(&device).unwrap();
    assert_eq!(Some(at_cmls.license_id), balance.license_id);
    assert_eq!(at_cmls.reset_total_mills, 5_000);
    // A second funding licenses nothing more.
    assert!(handle(core, uid, fund_op(1_000)).await.ok);
    assert_eq!(core.cmls().devices().unwrap().len(), 1);
    assert!(handle(core, uid, issue_op()).await.ok);
}

#[tokio::test]
async fn a_licence_cmls_refuses_at_the_first_funding_charges_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ServerConfig::new(dir.path().join("data"));
    cfg.core.argon2_memory_kib = 19 * 1024;
    let server = Server::open(cfg).unwrap();
    // The sandbox CMLS refuses ZIP 00000 (not a delivery area; docs/SANDBOXES.md).
    let uid = register(&server, "zed", "00000").await;
    let refused = handle(server.core(), uid, fund_op(5_000)).await;
    assert_eq!(refused.code(), Some("license_refused"), "{refused:?}");
    assert!(
        server.core().bank().payments().unwrap().is_empty(),
        "the card was not charged"
    );
    let meter = server.core().store().meter(uid).unwrap().unwrap();
    assert_eq!((meter.device_id, meter.descending_mills), (None, 0));
}

#[tokio::test]
async fn accounts_never_funded_expire_after_the_configured_time_and_their_names_are_free() {
    let dir = tempfile::tempdir().unwrap();
    let start = stampline_server::clock::now_ms();
    let (clock, manual) = stampline_server::clock::Clock::manual(start);
    let mut cfg = ServerConfig::new(dir.path().join("data"));
    cfg.core.argon2_memory_kib = 19 * 1024;
    cfg.core.clock = clock;
    cfg.core.unfunded_expiry_ms = 3_600_000;
    let server = Server::open(cfg).unwrap();
    let idle = register(&server, "idle", "02134").await;
    let funded = register(&server, "paid", "02134").await;
    assert!(handle(server.core(), funded, fund_op(5_000)).await.ok);
    manual.advance_ms(3_600_000 - 1);
    assert!(server.core().expire_unfunded().await.unwrap().is_empty());
    manual.advance_ms(2);
    assert_eq!(
        server.core().expire_unfunded().await.unwrap(),
        vec!["idle".to_owned()]
    );
    assert!(server.core().store().user_by_id(idle).unwrap().is_none());
    assert!(server.core().store().user_by_id(funded).unwrap().is_some());
    // The name may be registered again.
    register(&server, "idle", "02134").await;
    assert!(server.core().store().audit().unwrap().problems.is_empty());
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

/// One request through the private tier, as the link would send it.
async fn handle(
    core: &std::sync::Arc<stampline_server::core::Core>,
    uid: i64,
    op: stampline_wire::Op,
) -> stampline_wire::Response {
    let request = stampline_wire::Request {
        id: uuid::Uuid::new_v4(),
        op,
    };
    let canonical = request.to_json();
    core.handle(
        uid,
        std::sync::Arc::new(zeroize::Zeroizing::new([7; 32])),
        request,
        canonical,
        uuid::Uuid::new_v4(),
    )
    .await
}

#[tokio::test]
async fn resets_and_refunds_are_reported_to_cmls_with_the_registers() {
    use stampline_wire::{Card, Op};
    let dir = tempfile::tempdir().unwrap();
    let (server, uid) = server_with_user(&dir).await;
    let fund = handle(
        server.core(),
        uid,
        Op::Fund {
            amount_mills: 5_000,
            card: Some(Card {
                number: Secret("4242424242424242".into()),
                exp: "12/30".into(),
                cvc: Secret("123".into()),
            }),
            card_token: None,
            eft: None,
        },
    )
    .await;
    assert!(fund.ok, "{fund:?}");
    let issued = handle(server.core(), uid, issue_op()).await;
    let serial = issued
        .decode::<stampline_wire::replies::IssueReply>()
        .unwrap()
        .serial;
    let confirmed = handle(
        server.core(),
        uid,
        Op::Confirm {
            serial: serial.clone(),
            printed: true,
        },
    )
    .await;
    assert!(confirmed.ok, "{confirmed:?}");
    let refunded = handle(server.core(), uid, Op::Refund { serial }).await;
    assert!(refunded.ok, "{refunded:?}");
    let device = server
        .core()
        .store()
        .meter(uid)
        .unwrap()
        .unwrap()
        .device_id
        .expect("the first funding licensed the meter");
    let status = server.core().cmls().device_status(&device).unwrap();
    assert_eq!((status.resets, status.reset_total_mills), (1, 5_000));
    assert_eq!(status.last_reset_registers, Some((0, 5_000)));
    assert_eq!((status.refunds, status.refund_total_mills), (1, 780));
    // The daily report continues from nothing: one piece, 780 printed.
    let date = time::OffsetDateTime::now_utc().date().to_string();
    let sent = server.core().send_usage_reports(date).await.unwrap();
    assert_eq!(sent, vec![(device.clone(), Vec::<String>::new())]);
    let report = server
        .core()
        .cmls()
        .device_status(&device)
        .unwrap()
        .last_report
        .unwrap();
    assert_eq!(
        (report.pieces, report.postage_mills, report.ascending_mills),
        (1, 780, 780)
    );
}

/// The real software device, except that every item signature it makes has one bit flipped (a
/// device fault).
#[derive(Debug)]
struct FlipsSignatureBits(std::sync::Arc<dyn stampline_psd::Psd>);

impl stampline_psd::Psd for FlipsSignatureBits {
    fn describe(&self) -> String {
        self.0.describe()
    }
    fn auth_public_key(&self) -> Vec<u8> {
        self.0.auth_public_key()
    }
    fn sign_auth(&self, transcript: &[u8]) -> Result<[u8; 64], stampline_psd::PsdError> {
        self.0.sign_auth(transcript)
    }
    fn current_signing_key(&self) -> stampline_items::KeyId {
        self.0.current_signing_key()
    }
    fn sign_item(
        &self,
        key_id: stampline_items::KeyId,
        payload: &[u8],
    ) -> Result<[u8; 64], stampline_psd::PsdError> {
        let mut signature = self.0.sign_item(key_id, payload)?;
        signature[40] ^= 0x01;
        Ok(signature)
    }
    fn published_keys(&self) -> Vec<stampline_psd::PublishedKey> {
        self.0.published_keys()
    }
    fn rotate_signing_key(
        &self,
        now_unix: i64,
    ) -> Result<stampline_psd::Rotation, stampline_psd::PsdError> {
        self.0.rotate_signing_key(now_unix)
    }
    fn revoke_signing_key(
        &self,
        key_id: stampline_items::KeyId,
        now_unix: i64,
        reason: &str,
    ) -> Result<stampline_psd::PublishedKey, stampline_psd::PsdError> {
        self.0.revoke_signing_key(key_id, now_unix, reason)
    }
    fn wrap_secret(
        &self,
        secret: &[u8],
        context: &[u8],
    ) -> Result<Vec<u8>, stampline_psd::PsdError> {
        self.0.wrap_secret(secret, context)
    }
    fn unwrap_secret(
        &self,
        wrapped: &[u8],
        context: &[u8],
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, stampline_psd::PsdError> {
        self.0.unwrap_secret(wrapped, context)
    }
    fn seal(&self, data: &[u8]) -> Result<[u8; 32], stampline_psd::PsdError> {
        self.0.seal(data)
    }
}

/// The server checks every fresh signature before the issue commits (SQLite's writer has the
/// request's task run the check): a faulty device's item is refused and nothing moves.
#[tokio::test(flavor = "multi_thread")]
async fn an_item_whose_fresh_signature_does_not_verify_is_not_issued_and_costs_nothing() {
    use stampline_wire::{Card, Op};
    let dir = tempfile::tempdir().unwrap();
    let (server, uid) = server_with_user(&dir).await;
    let fund = handle(
        server.core(),
        uid,
        Op::Fund {
            amount_mills: 5_000,
            card: Some(Card {
                number: Secret("4242424242424242".into()),
                exp: "12/30".into(),
                cvc: Secret("123".into()),
            }),
            card_token: None,
            eft: None,
        },
    )
    .await;
    assert!(fund.ok, "{fund:?}");
    let real = server.core();
    let faulty = std::sync::Arc::new(
        stampline_server::core::Core::new(
            std::sync::Arc::clone(real.store()),
            std::sync::Arc::new(FlipsSignatureBits(std::sync::Arc::clone(real.psd()))),
            std::sync::Arc::clone(real.cmls()),
            std::sync::Arc::clone(real.bank()),
            real.config().clone(),
        )
        .unwrap(),
    );
    let issue = || Op::Issue {
        kind: "postage".into(),
        postage_mills: 780,
        from_zip: "02134".into(),
        to_zip: "94105".into(),
        mail_date: time::OffsetDateTime::now_utc().date().to_string(),
        class: "first-class-letter".into(),
        weight_oz: None,
        amount_mills: None,
        fields: Default::default(),
        valid_until: None,
    };
    let before = real.store().balance(uid).unwrap();
    let refused = handle(&faulty, uid, issue()).await;
    assert!(!refused.ok, "{refused:?}");
    assert_eq!(refused.code(), Some("signing_failed"), "{refused:?}");
    assert!(
        refused
            .message()
            .is_some_and(|m| m.contains("does not verify")),
        "{refused:?}"
    );
    assert_eq!(real.store().balance(uid).unwrap(), before, "nothing moved");
    assert!(real.store().history(uid, 10).unwrap().is_empty());
    // The same ledger with the sound device issues piece 1: the refusal used no number.
    let issued = handle(real, uid, issue()).await;
    let issued: stampline_wire::replies::IssueReply = issued.decode().unwrap();
    assert!(issued.serial.ends_with("-1"));
}

/// The answer to `op`, which must succeed, as its typed reply (unknown fields refused).
async fn reply<T: serde::de::DeserializeOwned>(
    core: &std::sync::Arc<stampline_server::core::Core>,
    uid: i64,
    op: stampline_wire::Op,
) -> T {
    let response = handle(core, uid, op).await;
    assert!(response.ok, "{response:?}");
    response.decode::<T>().unwrap()
}

#[tokio::test]
async fn every_op_answers_with_the_fields_of_its_typed_reply() {
    use stampline_wire::replies::*;
    use stampline_wire::{Card, Op};
    let dir = tempfile::tempdir().unwrap();
    let (server, uid) = server_with_user(&dir).await;
    let core = server.core();
    let card = || Card {
        number: Secret("4242424242424242".into()),
        exp: "12/30".into(),
        cvc: Secret("123".into()),
    };
    let funded: FundReply = reply(
        core,
        uid,
        Op::Fund {
            amount_mills: 5_000,
            card: Some(card()),
            card_token: None,
            eft: None,
        },
    )
    .await;
    assert_eq!(funded.balance_mills, 5_000);
    let quote: QuoteReply = reply(
        core,
        uid,
        Op::Quote {
            class: "first-class-letter".into(),
            weight_oz: 1.into(),
            from_zip: None,
            to_zip: None,
        },
    )
    .await;
    assert_eq!(quote.zone, None);
    let issue = || Op::Issue {
        kind: "postage".into(),
        postage_mills: quote.postage_mills,
        from_zip: "02134".into(),
        to_zip: "94105".into(),
        mail_date: core.clock().today_utc().to_string(),
        class: "first-class-letter".into(),
        weight_oz: None,
        amount_mills: None,
        fields: Default::default(),
        valid_until: None,
    };
    let issued: IssueReply = reply(core, uid, issue()).await;
    let again: ReprintReply = reply(
        core,
        uid,
        Op::Reprint {
            serial: issued.serial.clone(),
        },
    )
    .await;
    assert_eq!((again.item, again.reprints), (issued.item, 1));
    let confirmed: ConfirmReply = reply(
        core,
        uid,
        Op::Confirm {
            serial: issued.serial.clone(),
            printed: true,
        },
    )
    .await;
    assert_eq!(confirmed.status, "printed");
    // A printed item is never handed out again, and the refusal changes nothing.
    let before: BalanceReply = reply(core, uid, Op::Balance {}).await;
    let copy = handle(
        core,
        uid,
        Op::Reprint {
            serial: issued.serial.clone(),
        },
    )
    .await;
    assert_eq!(copy.code(), Some("already_printed"), "{copy:?}");
    let after: BalanceReply = reply(core, uid, Op::Balance {}).await;
    assert_eq!(after, before);
    let refunded: RefundReply = reply(
        core,
        uid,
        Op::Refund {
            serial: issued.serial.clone(),
        },
    )
    .await;
    assert_eq!(refunded.status, "refunded");
    let history: HistoryReply = reply(
        core,
        uid,
        Op::History {
            limit: 5,
            before: None,
        },
    )
    .await;
    assert_eq!(history.items[0].serial, issued.serial);
    let balance: BalanceReply = reply(core, uid, Op::Balance {}).await;
    assert_eq!(balance.balance_mills, 5_000);
    let set: AutoRefillReply = reply(
        core,
        uid,
        Op::AutoRefill {
            threshold_mills: 1_000,
            amount_mills: 2_000,
            cap_mills: 4_000,
            card: Some(card()),
            off: false,
        },
    )
    .await;
    assert_eq!(set.auto_refill.last4.as_deref(), Some("4242"));
    let options: PaymentOptionsReply = reply(core, uid, Op::PaymentOptions {}).await;
    assert!(options.auto_refill.active && options.locked.is_none());
    let off: AutoRefillReply = reply(
        core,
        uid,
        Op::AutoRefill {
            threshold_mills: 0,
            amount_mills: 0,
            cap_mills: 0,
            card: None,
            off: true,
        },
    )
    .await;
    assert_eq!(off.auto_refill, AutoRefillState::default());
    let _: ByeReply = reply(core, uid, Op::Bye {}).await;

    core.create_admin("root", "correct horse battery staple")
        .unwrap();
    let admin = core.store().user_by_key("root").unwrap().unwrap().id;
    let keys: AdminKeysReply = reply(core, admin, Op::AdminKeys {}).await;
    let rotated: AdminRotateKeyReply = reply(core, admin, Op::AdminRotateKey {}).await;
    assert_eq!(rotated.old_key.key_id, keys.current);
    assert_eq!(rotated.new_key.status, "current");
    let revoked: AdminRevokeKeyReply = reply(
        core,
        admin,
        Op::AdminRevokeKey {
            key_id: keys.current.clone(),
            reason: "test".into(),
        },
    )
    .await;
    assert_eq!(revoked.key.revocation_reason.as_deref(), Some("test"));

    let closed: CloseReply = reply(core, uid, Op::Close {}).await;
    assert_eq!(
        (closed.status.as_str(), closed.balance_mills),
        ("closed", 0)
    );
    assert_eq!(closed.refunded_mills, 5_000);
}
