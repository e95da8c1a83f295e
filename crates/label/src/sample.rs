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

/// One document of each kind carrying `item`, with typical text, named by kind.
pub fn documents(item: &[u8]) -> Vec<(&'static str, crate::Document<'_>)> {
    use crate::document::{Certificate, Check, Coupon, Document, Ticket};
    vec![
        (
            "ticket",
            Document::Ticket(Ticket {
                item,
                event: "SPRING CONCERT".to_owned(),
                venue: "TOWN HALL, SPRINGFIELD".to_owned(),
                date: "SAT 2027-03-06 19:30".to_owned(),
                seat: "ROW F  SEAT 12".to_owned(),
                price: "$45.00".to_owned(),
                serial: "SL0100001234-20000000007".to_owned(),
            }),
        ),
        (
            "check",
            Document::Check(Check {
                item,
                drawer: lines(&["ANN EXAMPLE", "1 MAIN ST", "BOSTON MA 02134"]),
                number: "1001".to_owned(),
                date: "2026-12-05".to_owned(),
                payee: "SPRINGFIELD WATER DEPT".to_owned(),
                amount: "$1,234.56".to_owned(),
                words: "One thousand two hundred thirty-four and 56/100".to_owned(),
                memo: "ACCT 88-1204".to_owned(),
                micr: "C001001C A021000021A 000123456789C".to_owned(),
                serial: "SL0100001234-30000001001".to_owned(),
            }),
        ),
        (
            "coupon",
            Document::Coupon(Coupon {
                item,
                issuer: "CORNER BAKERY".to_owned(),
                amount: "$5.00 OFF".to_owned(),
                terms: lines(&[
                    "ON ANY PURCHASE OF $25 OR MORE.",
                    "ONE PER CUSTOMER. NOT FOR CASH.",
                ]),
                expires: "EXPIRES 2027-01-31".to_owned(),
                serial: "SL0100001234-40000000009".to_owned(),
            }),
        ),
        (
            "certificate",
            Document::Certificate(Certificate {
                item,
                recipient: "JANE DOE".to_owned(),
                amount: "$50.00".to_owned(),
                code: "7K4M-Q2ZD-9XHP".to_owned(),
                expires: "VALID UNTIL 2027-12-31".to_owned(),
                serial: "SL0100001234-50000000010".to_owned(),
            }),
        ),
    ]
}
