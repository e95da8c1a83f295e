//! Sample items and a throwaway signing key shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use stampline_items::{
    Body, DeviceId, Field, Item, ItemDate, KeyId, Kind, PostageIndicium, RateCategory,
    SIGNATURE_LEN, SOFTWARE_ID, ValueItem, field_tag,
};
use stampline_money::Amount;

pub fn mills(value: u64) -> Amount {
    Amount::from_mills(value).expect("test amount within range")
}

pub fn date(y: u16, m: u8, d: u8) -> ItemDate {
    ItemDate::from_ymd(y, m, d).expect("test date is valid")
}

pub fn device() -> DeviceId {
    DeviceId::new(*b"SL01", 1234).expect("test device id is valid")
}

/// The indicium used across the tests; key id DEADBEEF, piece 42, $0.78 First-Class letter.
pub fn sample_indicium() -> PostageIndicium {
    PostageIndicium {
        device_id: device(),
        key_id: KeyId([0xde, 0xad, 0xbe, 0xef]),
        piece: 42,
        ascending: mills(10_780),
        descending: mills(9_220),
        postage: mills(780),
        mail_date: date(2026, 11, 29),
        from_zip: "02134".parse().expect("valid zip"),
        to: "02134-1234".parse().expect("valid delivery point"),
        rate: RateCategory::FirstClassLetter,
        software_id: SOFTWARE_ID,
    }
}

pub fn sample_ticket() -> ValueItem {
    ValueItem {
        kind: Kind::Ticket,
        device_id: device(),
        key_id: KeyId([1, 2, 3, 4]),
        serial: 7,
        amount: mills(12_500),
        issue_date: date(2026, 11, 29),
        valid_until: Some(date(2026, 12, 24)),
        fields: vec![
            Field::new(field_tag::ticket::EVENT, "Winter Concert"),
            Field::new(field_tag::ticket::VENUE, "Town Hall, Springfield"),
            Field::new(field_tag::ticket::SEAT, "Row F, Seat 12 — balcón"),
        ],
    }
}

/// A fresh P-256 key pair and its SubjectPublicKeyInfo DER.
pub struct TestKey {
    pair: EcdsaKeyPair,
    pub spki: Vec<u8>,
}

impl TestKey {
    pub fn generate() -> TestKey {
        let pair =
            EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("key generation works");
        let spki = pair
            .public_key()
            .as_der()
            .expect("public key encodes as SPKI")
            .as_ref()
            .to_vec();
        TestKey { pair, spki }
    }

    pub fn key_id(&self) -> KeyId {
        KeyId::of_spki(&self.spki)
    }

    pub fn sign_payload(&self, payload: &[u8]) -> [u8; SIGNATURE_LEN] {
        let signature = self
            .pair
            .sign(&SystemRandom::new(), payload)
            .expect("signing works");
        signature
            .as_ref()
            .try_into()
            .expect("fixed signatures are 64 bytes")
    }

    /// Signs `body` as the crypto device would: over its signed payload.
    pub fn sign(&self, body: Body) -> Item {
        let payload = body.signed_payload().expect("body encodes");
        let signature = self.sign_payload(&payload);
        Item { body, signature }
    }
}

/// A postage item signed by `key`, with the key's real key id.
pub fn signed_postage(key: &TestKey) -> Item {
    let mut indicium = sample_indicium();
    indicium.key_id = key.key_id();
    key.sign(Body::Postage(indicium))
}
