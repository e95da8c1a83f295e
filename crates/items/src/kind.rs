//! Item kinds and the field tags each value-item kind defines.

use std::fmt;

/// What a printed item is: the kind byte at offset 3 (docs/DESIGN.md §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    Postage = 1,
    Ticket = 2,
    Check = 3,
    Coupon = 4,
    Certificate = 5,
}

impl Kind {
    /// Every kind, in code order.
    pub const ALL: [Kind; 5] = [
        Kind::Postage,
        Kind::Ticket,
        Kind::Check,
        Kind::Coupon,
        Kind::Certificate,
    ];

    /// The kind byte written in the item header.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The kind for a header byte, or `None` if unknown.
    pub fn from_code(code: u8) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.code() == code)
    }

    /// The lowercase name used in JSON and on the command line: `"postage"`, `"ticket"`,
    /// `"check"`, `"coupon"`, `"certificate"`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Postage => "postage",
            Kind::Ticket => "ticket",
            Kind::Check => "check",
            Kind::Coupon => "coupon",
            Kind::Certificate => "certificate",
        }
    }

    /// The kind with this exact (lowercase) name.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// The field tags this kind defines, with their names, in tag order. Empty for postage, whose
    /// body has fixed fields instead.
    pub fn field_tags(self) -> &'static [(u8, &'static str)] {
        use field_tag::*;
        match self {
            Kind::Postage => &[],
            Kind::Ticket => &[
                (ticket::EVENT, "event"),
                (ticket::VENUE, "venue"),
                (ticket::SEAT, "seat"),
            ],
            Kind::Check => &[
                (check::PAYEE, "payee"),
                (check::CHECK_NUMBER, "check-number"),
                (check::MEMO, "memo"),
            ],
            Kind::Coupon => &[(coupon::ISSUER, "issuer"), (coupon::TERMS, "terms")],
            Kind::Certificate => &[
                (certificate::RECIPIENT, "recipient"),
                (certificate::CODE, "code"),
            ],
        }
    }

    /// The name of field `tag` for this kind (`"event"`, `"payee"`, …), or `None` if the kind does
    /// not define that tag.
    pub fn field_name(self, tag: u8) -> Option<&'static str> {
        self.field_tags()
            .iter()
            .find(|(known, _)| *known == tag)
            .map(|(_, name)| *name)
    }

    /// The tag of the field called `name` for this kind.
    pub fn field_tag(self, name: &str) -> Option<u8> {
        self.field_tags()
            .iter()
            .find(|(_, known)| *known == name)
            .map(|(tag, _)| *tag)
    }
}

/// The kind's name, as [`Kind::name`].
impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Tags of the UTF-8 fields in value items (tickets, checks, coupons, certificates). A tag means
/// something only together with the item's kind; a parser rejects tags its kind does not define.
pub mod field_tag {
    /// Ticket fields.
    pub mod ticket {
        /// What the ticket admits to, e.g. "Spring Concert".
        pub const EVENT: u8 = 1;
        /// Where, e.g. "Town Hall, Springfield".
        pub const VENUE: u8 = 2;
        /// Seat or section, e.g. "Row F, Seat 12".
        pub const SEAT: u8 = 3;
    }
    /// Check fields.
    pub mod check {
        /// Who the check is payable to.
        pub const PAYEE: u8 = 1;
        /// The check number as text.
        pub const CHECK_NUMBER: u8 = 2;
        /// A free-text memo line.
        pub const MEMO: u8 = 3;
    }
    /// Coupon fields.
    pub mod coupon {
        /// Who honours the coupon.
        pub const ISSUER: u8 = 1;
        /// The terms of the offer.
        pub const TERMS: u8 = 2;
    }
    /// Gift-certificate fields.
    pub mod certificate {
        /// Who the certificate is for.
        pub const RECIPIENT: u8 = 1;
        /// A redemption code printed for the merchant.
        pub const CODE: u8 = 2;
    }
}
