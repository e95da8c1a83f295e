//! Byte-exact layout, signing and verification, and rejection of malformed items.

mod common;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use common::*;
use stampline_items::*;

fn sample_item() -> Item {
    Item {
        body: Body::Postage(sample_indicium()),
        signature: [0xab; SIGNATURE_LEN],
    }
}

fn sample_bytes() -> Vec<u8> {
    sample_item().to_bytes().expect("sample encodes")
}

fn patched(offset: usize, new: &[u8]) -> Vec<u8> {
    let mut bytes = sample_bytes();
    bytes[offset..offset + new.len()].copy_from_slice(new);
    bytes
}

fn parse_hex(text: &str) -> Vec<u8> {
    let compact: String = text.split_whitespace().collect();
    hex::decode(compact).expect("test hex is valid")
}

#[test]
fn postage_indicium_layout_is_byte_exact() {
    let expected = parse_hex(
        "534c 01 01 0037             \
         01                          \
         534c3031 000004d2           \
         deadbeef                    \
         0000002a                    \
         0000002a1c                  \
         0000002404                  \
         00030c                      \
         01352909                    \
         00000856                    \
         3032313334313233342020      \
         0001                        \
         00000001                    \
         01",
    );
    let bytes = sample_bytes();
    assert_eq!(POSTAGE_BODY_LEN, 55);
    assert_eq!(POSTAGE_ITEM_LEN, 126);
    assert_eq!(bytes.len(), 126);
    assert_eq!(bytes[..62], expected[..]);
    assert_eq!(bytes[62..], [0xab; 64]);
}

#[test]
fn postage_indicium_fields_sit_at_their_documented_offsets() {
    let bytes = sample_bytes();
    let at = |offset: usize, len: usize| &bytes[offset..offset + len];
    assert_eq!(at(0, 2), b"SL"); // magic
    assert_eq!(at(2, 1), [FORMAT_VERSION]);
    assert_eq!(at(3, 1), [Kind::Postage.code()]);
    assert_eq!(at(4, 2), 55u16.to_be_bytes()); // body length
    assert_eq!(at(6, 1), [INDICIUM_VERSION]);
    assert_eq!(at(7, 8), device().to_bytes());
    assert_eq!(at(15, 4), [0xde, 0xad, 0xbe, 0xef]); // key id
    assert_eq!(at(19, 4), 42u32.to_be_bytes()); // piece
    assert_eq!(at(23, 5), [0, 0, 0, 0x2a, 0x1c]); // ascending 10,780
    assert_eq!(at(28, 5), [0, 0, 0, 0x24, 0x04]); // descending 9,220
    assert_eq!(at(33, 3), [0x00, 0x03, 0x0c]); // postage 780
    assert_eq!(at(36, 4), 20_261_129u32.to_be_bytes()); // date of mailing
    assert_eq!(at(40, 4), 2134u32.to_be_bytes()); // originating ZIP
    assert_eq!(at(44, 11), b"021341234  "); // delivery point
    assert_eq!(at(55, 2), 1u16.to_be_bytes()); // rate category
    assert_eq!(at(57, 4), SOFTWARE_ID.to_be_bytes());
    assert_eq!(at(61, 1), [SIG_ALG_ECDSA_P256_SHA256]);
    assert_eq!(at(62, 64), [0xab; 64]);
}

#[test]
fn signed_payload_is_the_item_without_its_signature() {
    let item = sample_item();
    let payload = item.body.signed_payload().expect("encodes");
    assert_eq!(payload.len(), 62);
    assert_eq!(payload[..], sample_bytes()[..62]);
}

#[test]
fn example_device_id_and_serial_read_as_documented() {
    let indicium = sample_indicium();
    assert_eq!(indicium.device_id.to_string(), "SL0100001234");
    assert_eq!(indicium.serial().to_string(), "SL0100001234-42");
    let body = Body::Postage(indicium);
    assert_eq!(body.serial().to_string(), "SL0100001234-42");
    assert_eq!(
        "SL0100001234-42".parse::<Serial>(),
        Ok(Serial {
            device_id: device(),
            number: 42
        })
    );
    assert_eq!(body.kind(), Kind::Postage);
    assert_eq!(body.device_id(), device());
    assert_eq!(body.key_id(), KeyId([0xde, 0xad, 0xbe, 0xef]));
    assert_eq!(body.amount(), mills(780));
}

#[test]
fn parse_reads_back_what_to_bytes_wrote() {
    assert_eq!(Item::parse(&sample_bytes()), Ok(sample_item()));
}

#[test]
fn aws_lc_rs_key_pairs_give_spki_der_that_verifiers_accept() {
    let key = TestKey::generate();
    // SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (65-byte point) }: 91 bytes.
    assert_eq!(key.spki.len(), 91);
    assert_eq!(key.spki[..2], [0x30, 0x59]);
    let signature = key.sign_payload(b"hello");
    let verifier = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &key.spki);
    assert!(verifier.verify(b"hello", &signature).is_ok());
    assert!(verifier.verify(b"hellO", &signature).is_err());
}

#[test]
fn sign_encode_parse_verify_round_trips() {
    let key = TestKey::generate();
    let item = signed_postage(&key);
    let bytes = item.to_bytes().expect("encodes");
    let parsed = Item::parse(&bytes).expect("parses");
    assert_eq!(parsed, item);
    assert_eq!(parsed.verify(&key.spki), Ok(()));
}

#[test]
fn flipping_any_bit_of_a_signed_item_makes_parse_or_verify_fail() {
    let key = TestKey::generate();
    let bytes = signed_postage(&key).to_bytes().expect("encodes");
    for bit in 0..bytes.len() * 8 {
        let mut mutated = bytes.clone();
        mutated[bit / 8] ^= 1 << (bit % 8);
        if let Ok(item) = Item::parse(&mutated) {
            assert!(
                item.verify(&key.spki).is_err(),
                "flipping bit {bit} still verifies"
            );
        }
    }
}

#[test]
fn verify_with_another_key_reports_key_id_mismatch() {
    let key = TestKey::generate();
    let other = TestKey::generate();
    let item = signed_postage(&key);
    assert_eq!(item.verify(&other.spki), Err(ItemError::KeyIdMismatch));
}

#[test]
fn verify_reports_a_bad_signature_when_the_key_id_matches() {
    let key = TestKey::generate();
    let mut item = signed_postage(&key);
    item.signature = other_signature(&key, &item);
    assert_eq!(item.verify(&key.spki), Err(ItemError::BadSignature));
    item.signature = [0; SIGNATURE_LEN];
    assert_eq!(item.verify(&key.spki), Err(ItemError::BadSignature));
}

/// A valid signature by `key`, but over a different message.
fn other_signature(key: &TestKey, item: &Item) -> [u8; SIGNATURE_LEN] {
    let mut payload = item.body.signed_payload().expect("encodes");
    payload.push(0);
    key.sign_payload(&payload)
}

#[test]
fn verify_rejects_keys_that_are_not_exactly_a_p256_spki() {
    let key = TestKey::generate();
    let item = signed_postage(&key);
    // The bare 65-byte point at the end of the SPKI: aws-lc-rs would accept it, we do not.
    let point = key.spki[key.spki.len() - 65..].to_vec();
    assert_eq!(item.verify(&point), Err(ItemError::BadPublicKey));
    let mut trailing = key.spki.clone();
    trailing.push(0);
    assert_eq!(item.verify(&trailing), Err(ItemError::BadPublicKey));
    assert_eq!(item.verify(&[]), Err(ItemError::BadPublicKey));
    assert_eq!(item.verify(&[0x30, 0x00]), Err(ItemError::BadPublicKey));
    let mut bad_point = key.spki.clone();
    let last = bad_point.len() - 1;
    bad_point[last] ^= 1; // no longer on the curve
    assert_eq!(item.verify(&bad_point), Err(ItemError::BadPublicKey));
}

#[test]
fn value_items_of_every_kind_round_trip_and_verify() {
    let key = TestKey::generate();
    let ticket = sample_ticket();
    let check = ValueItem {
        kind: Kind::Check,
        serial: 1001,
        amount: mills(250_000),
        valid_until: None,
        fields: vec![
            Field::new(field_tag::check::PAYEE, "Jane Roe"),
            Field::new(field_tag::check::CHECK_NUMBER, "1001"),
            Field::new(field_tag::check::MEMO, "rent, December"),
        ],
        ..ticket.clone()
    };
    let coupon = ValueItem {
        kind: Kind::Coupon,
        serial: u64::MAX,
        amount: Amount::ZERO,
        fields: vec![
            Field::new(field_tag::coupon::TERMS, "10% off one item"),
            Field::new(field_tag::coupon::ISSUER, "Corner Books"),
        ],
        ..ticket.clone()
    };
    let certificate = ValueItem {
        kind: Kind::Certificate,
        serial: 0,
        amount: Amount::MAX,
        valid_until: Some(ticket.issue_date),
        fields: vec![],
        ..ticket.clone()
    };
    for mut value in [ticket, check, coupon, certificate] {
        value.key_id = key.key_id();
        let item = key.sign(Body::Value(value.clone()));
        let bytes = item.to_bytes().expect("encodes");
        assert_eq!(bytes[3], value.kind.code());
        let parsed = Item::parse(&bytes).expect("parses");
        assert_eq!(parsed, item);
        assert_eq!(parsed.verify(&key.spki), Ok(()));
        assert_eq!(parsed.body.serial().number, value.serial);
        assert_eq!(parsed.body.amount(), value.amount);
    }
}

#[test]
fn value_item_layout_is_byte_exact() {
    let item = Item {
        body: Body::Value(ValueItem {
            fields: vec![Field::new(field_tag::ticket::SEAT, "F12")],
            ..sample_ticket()
        }),
        signature: [0x11; SIGNATURE_LEN],
    };
    let expected = parse_hex(
        "534c 01 02 0026              \
         534c3031 000004d2            \
         01020304                     \
         0000000000000007             \
         00000030d4                   \
         01352909                     \
         01352968                     \
         03 03 463132                 \
         01",
    );
    let bytes = item.to_bytes().expect("encodes");
    assert_eq!(bytes[..bytes.len() - 64], expected[..]);
    assert_eq!(bytes.len(), 6 + 38 + 1 + 64);
    let ticket = sample_ticket();
    assert_eq!(
        ticket.field(field_tag::ticket::EVENT),
        Some("Winter Concert")
    );
    assert_eq!(ticket.field(99), None);
}

#[test]
fn label_lines_summarise_the_indicium_in_ascii_uppercase() {
    assert_eq!(
        sample_indicium().label_lines(),
        [
            "US POSTAGE",
            "$0.78",
            "FIRST-CLASS MAIL",
            "MAILED 11/29/2026",
            "FROM ZIP 02134",
            "ID# SL0100001234",
            "SERIAL SL0100001234-42",
        ]
    );
}

#[test]
fn kinds_map_codes_and_names() {
    for kind in Kind::ALL {
        assert_eq!(Kind::from_code(kind.code()), Some(kind));
        assert_eq!(Kind::from_name(kind.name()), Some(kind));
        assert_eq!(kind.to_string(), kind.name());
    }
    assert_eq!(Kind::Certificate.code(), 5);
    assert_eq!(Kind::from_code(0), None);
    assert_eq!(Kind::from_code(6), None);
    assert_eq!(Kind::from_name("Ticket"), None);
    assert_eq!(
        Kind::Check.field_name(field_tag::check::PAYEE),
        Some("payee")
    );
    assert_eq!(
        Kind::Coupon.field_tag("terms"),
        Some(field_tag::coupon::TERMS)
    );
    assert_eq!(Kind::Postage.field_name(1), None);
}

// --- rejection of bad values on encoding -------------------------------------------------------

#[test]
fn encoding_rejects_zero_postage() {
    let body = Body::Postage(PostageIndicium {
        postage: Amount::ZERO,
        ..sample_indicium()
    });
    assert_eq!(body.signed_payload(), Err(ItemError::ZeroPostage));
}

#[test]
fn encoding_rejects_postage_above_three_bytes() {
    let at_limit = Body::Postage(PostageIndicium {
        postage: mills(MAX_POSTAGE_MILLS),
        ..sample_indicium()
    });
    assert!(at_limit.signed_payload().is_ok());
    let above = Body::Postage(PostageIndicium {
        postage: mills(MAX_POSTAGE_MILLS + 1),
        ..sample_indicium()
    });
    assert_eq!(
        above.signed_payload(),
        Err(ItemError::FieldTooLarge("postage"))
    );
}

#[test]
fn encoding_rejects_piece_zero() {
    let body = Body::Postage(PostageIndicium {
        piece: 0,
        ..sample_indicium()
    });
    assert_eq!(body.signed_payload(), Err(ItemError::ZeroPiece));
}

#[test]
fn registers_up_to_the_amount_maximum_fit_their_five_bytes() {
    let body = Body::Postage(PostageIndicium {
        ascending: Amount::MAX,
        descending: Amount::MAX,
        ..sample_indicium()
    });
    let item = Item {
        body,
        signature: [0; 64],
    };
    let bytes = item.to_bytes().expect("encodes");
    assert_eq!(bytes[23..33], [0xff; 10]);
    assert_eq!(Item::parse(&bytes), Ok(item));
}

#[test]
fn bad_postal_text_is_rejected() {
    assert_eq!("2134".parse::<Zip5>(), Err(ItemError::BadZip));
    assert_eq!("2026-02-30".parse::<ItemDate>(), Err(ItemError::BadDate));
    assert_eq!(
        "0213A-1234".parse::<DeliveryPoint>(),
        Err(ItemError::BadDeliveryPoint)
    );
    assert_eq!(
        "02134-ABCD".parse::<DeliveryPoint>(),
        Err(ItemError::BadDeliveryPoint)
    );
}

#[test]
fn encoding_rejects_a_value_item_of_kind_postage() {
    let body = Body::Value(ValueItem {
        kind: Kind::Postage,
        ..sample_ticket()
    });
    assert_eq!(body.signed_payload(), Err(ItemError::PostageAsValueItem));
}

#[test]
fn encoding_rejects_bad_value_item_fields() {
    let with_fields = |fields: Vec<Field>| {
        Body::Value(ValueItem {
            fields,
            ..sample_ticket()
        })
        .signed_payload()
    };
    assert_eq!(
        with_fields(vec![Field::new(4, "x")]),
        Err(ItemError::UnknownFieldTag {
            kind: Kind::Ticket,
            tag: 4
        })
    );
    assert_eq!(
        with_fields(vec![Field::new(1, "a"), Field::new(1, "b")]),
        Err(ItemError::DuplicateFieldTag(1))
    );
    assert!(matches!(
        with_fields(vec![Field::new(1, "")]),
        Err(ItemError::BadFieldValue { tag: 1, .. })
    ));
    assert!(matches!(
        with_fields(vec![Field::new(2, "line\nbreak")]),
        Err(ItemError::BadFieldValue { tag: 2, .. })
    ));
    assert!(matches!(
        with_fields(vec![Field::new(3, "x".repeat(256))]),
        Err(ItemError::BadFieldValue { tag: 3, .. })
    ));
    assert!(with_fields(vec![Field::new(3, "x".repeat(255))]).is_ok());
}

#[test]
fn encoding_rejects_valid_until_before_issue_date() {
    let body = Body::Value(ValueItem {
        valid_until: Some(date(2026, 11, 28)),
        ..sample_ticket()
    });
    assert_eq!(body.signed_payload(), Err(ItemError::ValidUntilBeforeIssue));
}

// --- rejection of malformed bytes on parsing ---------------------------------------------------

#[test]
fn parse_rejects_truncated_items() {
    let bytes = sample_bytes();
    for len in 0..bytes.len() {
        assert_eq!(
            Item::parse(&bytes[..len]),
            Err(ItemError::TooShort),
            "length {len}"
        );
    }
}

#[test]
fn parse_rejects_trailing_bytes() {
    let mut bytes = sample_bytes();
    bytes.push(0);
    assert_eq!(Item::parse(&bytes), Err(ItemError::TrailingBytes));
}

#[test]
fn parse_rejects_bad_header_fields() {
    assert_eq!(Item::parse(&patched(0, b"SM")), Err(ItemError::BadMagic));
    assert_eq!(
        Item::parse(&patched(2, &[2])),
        Err(ItemError::UnsupportedVersion(2))
    );
    assert_eq!(
        Item::parse(&patched(3, &[0])),
        Err(ItemError::UnknownKind(0))
    );
    assert_eq!(
        Item::parse(&patched(3, &[6])),
        Err(ItemError::UnknownKind(6))
    );
    assert_eq!(
        Item::parse(&patched(4, &[0, 54])),
        Err(ItemError::BodyLength {
            kind: Kind::Postage,
            len: 54
        })
    );
    assert_eq!(
        Item::parse(&patched(61, &[2])),
        Err(ItemError::UnsupportedSignatureAlgorithm(2))
    );
}

#[test]
fn parse_rejects_value_bodies_outside_the_length_limits() {
    let mut bytes = Item {
        body: Body::Value(sample_ticket()),
        signature: [0; 64],
    }
    .to_bytes()
    .expect("encodes");
    bytes[4..6].copy_from_slice(&1025u16.to_be_bytes());
    assert_eq!(
        Item::parse(&bytes),
        Err(ItemError::BodyLength {
            kind: Kind::Ticket,
            len: 1025
        })
    );
    bytes[4..6].copy_from_slice(&32u16.to_be_bytes());
    assert_eq!(
        Item::parse(&bytes),
        Err(ItemError::BodyLength {
            kind: Kind::Ticket,
            len: 32
        })
    );
    let oversized = vec![0u8; MAX_ITEM_LEN + 1];
    assert_eq!(Item::parse(&oversized), Err(ItemError::BadMagic));
}

#[test]
fn parse_rejects_bad_postage_fields() {
    assert_eq!(
        Item::parse(&patched(6, &[2])),
        Err(ItemError::UnsupportedIndiciumVersion(2))
    );
    assert_eq!(
        Item::parse(&patched(7, b"sl01")),
        Err(ItemError::BadDeviceId)
    );
    assert_eq!(
        Item::parse(&patched(19, &[0; 4])),
        Err(ItemError::ZeroPiece)
    );
    assert_eq!(
        Item::parse(&patched(33, &[0; 3])),
        Err(ItemError::ZeroPostage)
    );
    let feb_30 = 20_260_230u32.to_be_bytes();
    assert_eq!(Item::parse(&patched(36, &feb_30)), Err(ItemError::BadDate));
    assert_eq!(Item::parse(&patched(36, &[0; 4])), Err(ItemError::BadDate));
    let big_zip = 100_000u32.to_be_bytes();
    assert_eq!(Item::parse(&patched(40, &big_zip)), Err(ItemError::BadZip));
    for bad_point in [
        b"  021341234",
        b"0213A1234  ",
        b"021341     ",
        b"02134 1234 ",
    ] {
        assert_eq!(
            Item::parse(&patched(44, bad_point)),
            Err(ItemError::BadDeliveryPoint)
        );
    }
    assert_eq!(
        Item::parse(&patched(55, &[0, 0])),
        Err(ItemError::BadRateCategory(0))
    );
    assert_eq!(
        Item::parse(&patched(55, &[0, 5])),
        Err(ItemError::BadRateCategory(5))
    );
}

#[test]
fn parse_accepts_every_rate_and_delivery_point_length() {
    for rate in RateCategory::ALL {
        for point in ["02134", "021341234", "02134123401"] {
            let item = Item {
                body: Body::Postage(PostageIndicium {
                    rate,
                    to: point.parse().expect("valid delivery point"),
                    ..sample_indicium()
                }),
                signature: [0; 64],
            };
            let bytes = item.to_bytes().expect("encodes");
            assert_eq!(Item::parse(&bytes), Ok(item));
        }
    }
}

/// A ticket's bytes with `fields` as the raw field list (header length adjusted).
fn ticket_with_raw_fields(fields: &[u8]) -> Vec<u8> {
    let item = Item {
        body: Body::Value(ValueItem {
            fields: vec![],
            ..sample_ticket()
        }),
        signature: [0; 64],
    };
    let bytes = item.to_bytes().expect("encodes");
    let (payload, signature) = bytes.split_at(bytes.len() - 65);
    let mut out = payload.to_vec();
    out.extend_from_slice(fields);
    out.extend_from_slice(signature);
    let body_len = u16::try_from(33 + fields.len()).expect("small");
    out[4..6].copy_from_slice(&body_len.to_be_bytes());
    out
}

#[test]
fn parse_rejects_bad_value_item_fields() {
    assert!(Item::parse(&ticket_with_raw_fields(&[1, 1, b'a'])).is_ok());
    assert_eq!(
        Item::parse(&ticket_with_raw_fields(&[9, 1, b'a'])),
        Err(ItemError::UnknownFieldTag {
            kind: Kind::Ticket,
            tag: 9
        })
    );
    assert_eq!(
        Item::parse(&ticket_with_raw_fields(&[1, 1, b'a', 1, 1, b'b'])),
        Err(ItemError::DuplicateFieldTag(1))
    );
    assert_eq!(
        Item::parse(&ticket_with_raw_fields(&[1])),
        Err(ItemError::TruncatedField)
    );
    assert_eq!(
        Item::parse(&ticket_with_raw_fields(&[1, 3, b'a'])),
        Err(ItemError::TruncatedField)
    );
    for bad_value in [
        &[1u8, 0][..],
        &[1, 1, 0xff],
        &[1, 2, 0xc3, 0x28],
        &[1, 1, 0x07],
    ] {
        assert!(
            matches!(
                Item::parse(&ticket_with_raw_fields(bad_value)),
                Err(ItemError::BadFieldValue { tag: 1, .. })
            ),
            "{bad_value:?}"
        );
    }
}

#[test]
fn parse_rejects_value_item_dates_that_are_invalid_or_out_of_order() {
    let base = ticket_with_raw_fields(&[]);
    let mut no_expiry = base.clone();
    no_expiry[35..39].copy_from_slice(&[0; 4]);
    let parsed = Item::parse(&no_expiry).expect("valid-until 0 means none");
    let Body::Value(value) = parsed.body else {
        panic!("a ticket parses as a value item");
    };
    assert_eq!(value.valid_until, None);

    let mut bad_issue = base.clone();
    bad_issue[31..35].copy_from_slice(&0u32.to_be_bytes());
    assert_eq!(Item::parse(&bad_issue), Err(ItemError::BadDate));

    let mut early_expiry = base;
    early_expiry[35..39].copy_from_slice(&20_261_128u32.to_be_bytes());
    assert_eq!(
        Item::parse(&early_expiry),
        Err(ItemError::ValidUntilBeforeIssue)
    );
}

#[test]
fn error_messages_name_the_problem() {
    assert_eq!(
        ItemError::FieldTooLarge("postage").to_string(),
        "postage does not fit its field in the item"
    );
    assert_eq!(
        ItemError::BodyLength {
            kind: Kind::Postage,
            len: 54
        }
        .to_string(),
        "body length 54 is not valid for a postage item (postage: exactly 55 bytes; other \
         kinds: 33 to 1024 bytes)"
    );
    assert_eq!(
        ItemError::UnknownFieldTag {
            kind: Kind::Coupon,
            tag: 3
        }
        .to_string(),
        "field tag 3 is not defined for a coupon item"
    );
}
