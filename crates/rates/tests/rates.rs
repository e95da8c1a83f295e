//! The price table at every weight boundary of every class.

#![allow(clippy::unwrap_used)]

use stampline_items::{RateCategory, Zip5};
use stampline_rates::{RateError, Weight, table, zone};

fn z(s: &str) -> Zip5 {
    s.parse().unwrap()
}

fn price(class: RateCategory, w: &str, from: &str, to: &str) -> Result<u64, RateError> {
    table()
        .unwrap()
        .quote(class, w.parse().unwrap(), z(from), z(to))
        .map(|q| q.postage.mills())
}

#[test]
fn the_compiled_in_table_parses_and_names_its_source() {
    let t = table().unwrap();
    assert_eq!(t.effective, "2025-07-13");
    assert!(t.source.contains("ILLUSTRATIVE"));
}

#[test]
fn first_class_letters_are_priced_by_the_ounce_up_to_three_and_a_half() {
    use RateCategory::FirstClassLetter as L;
    let cases = [
        ("0.01", 740),
        ("1", 740),
        ("1.01", 1030),
        ("2", 1030),
        ("2.01", 1320),
        ("3", 1320),
        ("3.01", 1610),
        ("3.5", 1610),
    ];
    for (w, want) in cases {
        assert_eq!(price(L, w, "02134", "94105"), Ok(want), "{w} oz");
    }
    assert!(matches!(
        price(L, "3.51", "02134", "94105"),
        Err(RateError::TooHeavy { .. })
    ));
    assert_eq!(
        price(L, "4", "02134", "94105").unwrap_err().code(),
        "too_heavy"
    );
}

#[test]
fn large_envelopes_are_priced_by_the_ounce_up_to_thirteen() {
    use RateCategory::FirstClassFlat as F;
    assert_eq!(price(F, "1", "02134", "94105"), Ok(1630));
    assert_eq!(price(F, "1.5", "02134", "94105"), Ok(1900));
    assert_eq!(price(F, "13", "02134", "94105"), Ok(1630 + 12 * 270));
    assert!(price(F, "13.01", "02134", "94105").is_err());
}

#[test]
fn priority_mail_is_priced_by_pound_and_zone() {
    use RateCategory::PriorityMail as P;
    let t = table().unwrap();
    let one = price(P, "16", "02134", "02134").unwrap();
    assert_eq!(
        price(P, "0.5", "02134", "02134").unwrap(),
        one,
        "under a pound is one pound"
    );
    let two = price(P, "16.01", "02134", "02134").unwrap();
    assert!(two > one, "each pound or fraction costs more");
    assert!(
        price(P, "16", "02134", "94105").unwrap() > one,
        "farther zones cost more"
    );
    assert!(price(P, "1120", "02134", "94105").is_ok());
    assert!(
        "1120.01".parse::<Weight>().is_err(),
        "nothing is over 70 lb"
    );
    assert_eq!(
        t.quote(P, "16".parse().unwrap(), z("02134"), z("94105"))
            .unwrap()
            .zone,
        Some(8)
    );
}

#[test]
fn ground_advantage_uses_ounce_tiers_below_a_pound_then_pounds() {
    use RateCategory::GroundAdvantage as G;
    let p4 = price(G, "4", "02134", "02134").unwrap();
    let p401 = price(G, "4.01", "02134", "02134").unwrap();
    let p1599 = price(G, "15.99", "02134", "02134").unwrap();
    let p16 = price(G, "16", "02134", "02134").unwrap();
    assert!(p4 < p401 && p401 <= p1599 && p1599 <= p16);
    assert_eq!(p4, 5400);
}

#[test]
fn zones_follow_the_prefix_distance() {
    assert_eq!(zone(z("02134"), z("02199")), 1);
    assert_eq!(zone(z("02134"), z("02450")), 2);
    assert_eq!(zone(z("02134"), z("03101")), 3);
    assert_eq!(zone(z("02134"), z("94105")), 8);
    assert_eq!(zone(z("02134"), z("99501")), 9, "Alaska");
    assert_eq!(zone(z("96813"), z("96720")), 2, "within Hawaii");
}

#[test]
fn weights_parse_exactly_without_floats() {
    assert_eq!("3.5".parse::<Weight>().unwrap().hundredths(), 350);
    assert_eq!("0.25".parse::<Weight>().unwrap().hundredths(), 25);
    assert_eq!("13".parse::<Weight>().unwrap().to_string(), "13");
    for bad in ["", "0", "-1", "1.234", "1e3", ".5", "5.", "abc", "1121"] {
        assert!(bad.parse::<Weight>().is_err(), "{bad}");
    }
}
