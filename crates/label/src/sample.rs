//! Sample content for examples, benches and tests: the text of a typical First-Class piece from
//! Boston to Washington, so each of them shows and checks the same label.

use crate::{Impb, Piece};

/// The indicium's lines in their short form (a [`crate::LabelSpec`]'s text beside the symbol).
pub fn postage_lines() -> Vec<String> {
    lines(&[
        "US POSTAGE",
        "$0.78",
        "FIRST-CLASS MAIL",
        "11/29/2026",
        "FROM 02134",
        "ID# SL0100001234",
    ])
}

/// A tracking number (IMpb) for the delivery ZIP and serial, under the sample mailer id.
pub fn tracking(zip: &str, serial: &str) -> Impb {
    Impb {
        zip: zip.to_owned(),
        channel: "94".to_owned(),
        service_type: "001".to_owned(),
        mailer_id: "900000001".to_owned(),
        serial: serial.to_owned(),
    }
}

/// A whole piece for [`crate::render_layout`] carrying `item`: the indicium's lines, the sender
/// and recipient addresses and a tracking number.
pub fn piece(item: &[u8]) -> Piece<'_> {
    Piece {
        item,
        indicium: lines(&[
            "US POSTAGE",
            "$0.780",
            "FIRST-CLASS MAIL",
            "MAILED 11/29/2026",
            "FROM ZIP 02134",
            "ID# SL0100001234",
            "SERIAL SL0100001234-42",
        ]),
        from: lines(&[
            "ADA LOVELACE",
            "12 ANALYTICAL ENGINE WAY",
            "BOSTON MA 02134-1204",
        ]),
        to: lines(&[
            "CHARLES BABBAGE",
            "1600 MAIN ST APT 4",
            "WASHINGTON DC 20260-0004",
        ]),
        tracking: Some(tracking("202600004", "0000042")),
    }
}

fn lines(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}
