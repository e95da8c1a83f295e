//! Properties of the layouts over arbitrary content: any text and item either lays out or is
//! refused with a clear error — never a panic — and what lays out reads back exactly.

// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use stampline_label::{Format, Impb, LabelError, Layout, Piece, decode_png, render_layout};

fn any_line() -> impl Strategy<Value = String> {
    // Mostly printable ASCII, sometimes a character the label fonts cannot print.
    prop_oneof![
        9 => "[ -~]{0,45}",
        1 => "[ -~]{0,10}[\u{80}-\u{10FFFF}\t][ -~]{0,10}",
    ]
}

fn any_layout() -> impl Strategy<Value = Layout> {
    prop_oneof![
        Just(Layout::Envelope10),
        Just(Layout::Label4x6),
        Just(Layout::Sheet)
    ]
}

fn tracking() -> Impb {
    Impb {
        zip: "94105".to_owned(),
        channel: "94".to_owned(),
        service_type: "055".to_owned(),
        mailer_id: "900000001".to_owned(),
        serial: "0000001".to_owned(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_content_lays_out_or_is_refused_with_a_named_error(
        layout in any_layout(),
        item in proptest::collection::vec(any::<u8>(), 0..400),
        indicium in proptest::collection::vec(any_line(), 0..12),
        from in proptest::collection::vec(any_line(), 0..8),
        to in proptest::collection::vec(any_line(), 0..8),
        pdf in any::<bool>(),
    ) {
        let piece = Piece { item: &item, indicium, from, to, tracking: Some(tracking()) };
        let format = if pdf { Format::Pdf } else { Format::Svg };
        match render_layout(layout, format, 300, &[piece]) {
            Ok(out) => prop_assert!(!out.is_empty()),
            Err(LabelError::BadText(_) | LabelError::DoesNotFit(_) | LabelError::DataTooLarge { .. }) => {}
            Err(other) => prop_assert!(false, "unexpected error {other}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn whatever_lays_out_as_png_reads_back_to_the_exact_item(
        layout in any_layout(),
        item in proptest::collection::vec(any::<u8>(), 1..200),
        to in proptest::collection::vec("[ -~]{1,40}", 0..5),
        dpi in prop_oneof![Just(203u32), Just(300u32)],
    ) {
        let piece = Piece {
            item: &item,
            indicium: vec!["US POSTAGE".to_owned(), "$0.780".to_owned()],
            from: vec!["RETURN".to_owned()],
            to,
            tracking: Some(tracking()),
        };
        // Up to 200 bytes and 4 address lines always fit every layout.
        let png = render_layout(layout, Format::Png, dpi, &[piece]).unwrap();
        prop_assert_eq!(decode_png(&png).unwrap(), item);
    }
}
