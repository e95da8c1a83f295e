//! What a quote reads from outside: a rate table (JSON an operator loads), weights and ZIPs as
//! typed, dates as sent: parsed or refused, never a panic; a table that loads quotes every class
//! without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stampline_items::{DeliveryPoint, ItemDate, RateCategory, Zip5};
use stampline_rates::{RateTable, Weight};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = text.parse::<Weight>();
    let _ = text.parse::<Zip5>();
    let _ = text.parse::<DeliveryPoint>();
    let _ = text.parse::<ItemDate>();
    if let Ok(table) = RateTable::parse(text) {
        let zips = ["02134", "94105", "00601", "99950"].map(|z| z.parse::<Zip5>().expect("zip"));
        for class in [
            RateCategory::FirstClassLetter,
            RateCategory::FirstClassFlat,
            RateCategory::PriorityMail,
            RateCategory::GroundAdvantage,
        ] {
            for hundredths in [1, 100, 350, 1_600, 7_000] {
                if let Ok(weight) = Weight::from_hundredths(hundredths) {
                    let _ = table.quote(class, weight, zips[0], zips[1]);
                    let _ = table.quote(class, weight, zips[2], zips[3]);
                }
            }
            let _ = table.minimum(class);
        }
    }
});
