//! Property tests: every valid item round-trips, and parsing never panics on any bytes.

mod common;

use common::*;
use proptest::prelude::*;
use proptest::sample::Index;
use stampline_items::*;
use stampline_money::Amount;

fn device_ids() -> impl Strategy<Value = DeviceId> {
    ("[A-Z0-9]{4}", any::<u32>()).prop_map(|(model, serial)| {
        let model: [u8; 4] = model.as_bytes().try_into().expect("4 ASCII chars");
        DeviceId::new(model, serial).expect("model chars are valid")
    })
}

fn dates() -> impl Strategy<Value = ItemDate> {
    (MIN_YEAR..=MAX_YEAR, 1u8..=12, 1u8..=31).prop_filter_map("real dates only", |(y, m, d)| {
        ItemDate::from_ymd(y, m, d).ok()
    })
}

fn amounts() -> impl Strategy<Value = Amount> {
    prop_oneof![
        (0..=Amount::MAX.mills()).prop_map(mills),
        Just(Amount::ZERO),
        Just(Amount::MAX),
    ]
}

fn postage_indicia() -> impl Strategy<Value = PostageIndicium> {
    (
        (device_ids(), any::<[u8; 4]>(), 1..=u32::MAX),
        (amounts(), amounts(), 1..=MAX_POSTAGE_MILLS),
        (dates(), 0..=MAX_ZIP5),
        "[0-9]{5}|[0-9]{9}|[0-9]{11}",
        (0..RateCategory::ALL.len(), any::<u32>()),
    )
        .prop_map(
            |(
                (device_id, key, piece),
                (ascending, descending, postage),
                (mail_date, zip),
                to,
                (rate, software_id),
            )| {
                PostageIndicium {
                    device_id,
                    key_id: KeyId(key),
                    piece,
                    ascending,
                    descending,
                    postage: mills(postage),
                    mail_date,
                    from_zip: Zip5::from_value(zip).expect("zip in range"),
                    to: to.parse().expect("generated delivery points are valid"),
                    rate: RateCategory::ALL[rate],
                    software_id,
                }
            },
        )
}

fn value_items() -> impl Strategy<Value = ValueItem> {
    let kinds = prop::sample::select(vec![
        Kind::Ticket,
        Kind::Check,
        Kind::Coupon,
        Kind::Certificate,
    ]);
    (
        kinds,
        (device_ids(), any::<[u8; 4]>(), any::<u64>(), amounts()),
        (dates(), prop::option::of(0u16..2000)),
        prop::collection::vec((any::<bool>(), "[a-zA-Z0-9 ,.'%éü€—-]{1,80}"), 3),
    )
        .prop_flat_map(
            |(kind, (device_id, key, serial, amount), (issue_date, days), values)| {
                let fields: Vec<Field> = kind
                    .field_tags()
                    .iter()
                    .zip(values)
                    .filter(|(_, (present, _))| *present)
                    .map(|((tag, _), (_, value))| Field::new(*tag, value))
                    .collect();
                let valid_until = days.and_then(|days| {
                    let until = issue_date
                        .to_date()
                        .checked_add(time::Duration::days(i64::from(days)))?;
                    ItemDate::from_date(until).ok()
                });
                Just(fields)
                    .prop_shuffle()
                    .prop_map(move |fields| ValueItem {
                        kind,
                        device_id,
                        key_id: KeyId(key),
                        serial,
                        amount,
                        issue_date,
                        valid_until,
                        fields,
                    })
            },
        )
}

fn items() -> impl Strategy<Value = Item> {
    (
        prop_oneof![
            postage_indicia().prop_map(Body::Postage),
            value_items().prop_map(Body::Value),
        ],
        any::<[u8; 64]>(),
    )
        .prop_map(|(body, signature)| Item { body, signature })
}

/// Parse must not panic; and whatever it accepts must encode back to exactly the same bytes
/// (the format has one encoding per item, so a signature covers one meaning).
fn check_parse(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(item) = Item::parse(bytes) {
        prop_assert_eq!(item.to_bytes(), Ok(bytes.to_vec()));
    }
    Ok(())
}

proptest! {
    #[test]
    fn valid_items_round_trip_through_bytes(item in items()) {
        let bytes = item.to_bytes().expect("valid items encode");
        prop_assert!(bytes.len() <= MAX_ITEM_LEN);
        if let Body::Postage(_) = item.body {
            prop_assert_eq!(bytes.len(), POSTAGE_ITEM_LEN);
        }
        prop_assert_eq!(Item::parse(&bytes), Ok(item));
    }

    #[test]
    fn parse_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..1200)) {
        check_parse(&bytes)?;
    }

    #[test]
    fn parse_never_panics_on_bytes_with_a_valid_header(
        kind in 0u8..=6,
        len in prop_oneof![Just(55u16), 0u16..1100, any::<u16>()],
        rest in prop::collection::vec(any::<u8>(), 0..1200),
    ) {
        let mut bytes = vec![b'S', b'L', FORMAT_VERSION, kind];
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(&rest);
        check_parse(&bytes)?;
    }

    #[test]
    fn parse_never_panics_on_mutations_of_valid_items(
        item in items(),
        edits in prop::collection::vec((any::<Index>(), any::<u8>()), 1..8),
        cut in prop::option::of(any::<Index>()),
        extra in prop::collection::vec(any::<u8>(), 0..4),
    ) {
        let mut bytes = item.to_bytes().expect("valid items encode");
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        bytes.extend_from_slice(&extra);
        check_parse(&bytes)?;
    }

    #[test]
    fn serials_round_trip_through_text(device_id in device_ids(), number in any::<u64>()) {
        let serial = Serial { device_id, number };
        prop_assert_eq!(serial.to_string().parse::<Serial>(), Ok(serial));
        prop_assert_eq!(device_id.to_string().parse::<DeviceId>(), Ok(device_id));
    }

    #[test]
    fn dates_round_trip_through_text_and_integer(date in dates()) {
        prop_assert_eq!(date.to_string().parse::<ItemDate>(), Ok(date));
        prop_assert_eq!(ItemDate::from_yyyymmdd(date.to_yyyymmdd()), Ok(date));
    }

    #[test]
    fn text_parsers_never_panic(text in any::<String>()) {
        let _ = text.parse::<Serial>();
        let _ = text.parse::<DeviceId>();
        let _ = text.parse::<KeyId>();
        let _ = text.parse::<ItemDate>();
        let _ = text.parse::<Zip5>();
        let _ = text.parse::<DeliveryPoint>();
    }

    #[test]
    fn date_integers_never_panic(value in any::<u32>()) {
        if let Ok(date) = ItemDate::from_yyyymmdd(value) {
            prop_assert_eq!(date.to_yyyymmdd(), value);
        }
    }
}
