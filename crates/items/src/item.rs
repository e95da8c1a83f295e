//! Item bodies, their encoding, strict parsing and signature verification.

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ParsedPublicKey};
use stampline_money::Amount;

use crate::{
    DeliveryPoint, DeviceId, FORMAT_VERSION, HEADER_LEN, INDICIUM_VERSION, ItemDate, ItemError,
    KeyId, Kind, MAGIC, MAX_BODY_LEN, MAX_FIELD_VALUE_LEN, MAX_POSTAGE_MILLS, POSTAGE_BODY_LEN,
    RateCategory, SIG_ALG_ECDSA_P256_SHA256, SIGNATURE_LEN, Serial, VALUE_BODY_FIXED_LEN, Zip5,
};

/// The largest value of a 5-byte register or amount field.
const MAX_U40: u64 = (1 << 40) - 1;

/// A postage indicium (kind 1): the IBI (Information-Based Indicia) data elements, 55 bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostageIndicium {
    pub device_id: DeviceId,
    pub key_id: KeyId,
    /// Per device, from 1, +1 per item; zero is invalid.
    pub piece: u32,
    /// Ascending register after this piece: all postage ever printed by the device.
    pub ascending: Amount,
    /// Descending register after this piece: postage still available.
    pub descending: Amount,
    /// Postage of this piece: 1..=16,777,215 mills (3 bytes); zero is invalid.
    pub postage: Amount,
    pub mail_date: ItemDate,
    pub from_zip: Zip5,
    pub to: DeliveryPoint,
    pub rate: RateCategory,
    /// The id of the software that built the indicium ([`crate::SOFTWARE_ID`] for Stampline).
    pub software_id: u32,
}

impl PostageIndicium {
    /// `DEVICEID-PIECE`, e.g. `SL0100001234-42`.
    pub fn serial(&self) -> Serial {
        Serial {
            device_id: self.device_id,
            number: u64::from(self.piece),
        }
    }

    /// The human-readable text printed next to the indicium, short ASCII uppercase lines:
    /// `["US POSTAGE", "$0.78", "FIRST-CLASS MAIL", "MAILED 11/29/2026", "FROM ZIP 02134",
    /// "ID# SL0100001234", "SERIAL SL0100001234-42"]`. The date uses the US postal form
    /// MM/DD/YYYY, as printed on US meter and PC-postage imprints.
    pub fn label_lines(&self) -> Vec<String> {
        vec![
            "US POSTAGE".to_owned(),
            self.postage.to_string(),
            self.rate.label_text().to_owned(),
            format!("MAILED {}", self.mail_date.us_format()),
            format!("FROM ZIP {}", self.from_zip),
            format!("ID# {}", self.device_id),
            format!("SERIAL {}", self.serial()),
        ]
    }
}

/// One UTF-8 field of a value item: a tag defined by the item's kind ([`crate::field_tag`]) and a
/// value of 1..=255 bytes without control characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub tag: u8,
    pub value: String,
}

impl Field {
    /// A field (validated when the item is encoded).
    pub fn new(tag: u8, value: impl Into<String>) -> Field {
        Field {
            tag,
            value: value.into(),
        }
    }
}

/// A ticket, check, coupon or gift certificate (kinds 2–5):
/// `8 device id · 4 key id · 8 serial · 5 amount · 4 issue date · 4 valid-until (0 = none) ·
/// fields (tag u8, length u8, UTF-8 bytes)`.
///
/// Rules beyond the byte layout, enforced by both encoding and parsing: `kind` is not postage;
/// `valid_until`, when present, is not before `issue_date`; each field's tag is defined for the
/// kind and appears at most once; values are 1..=255 bytes of UTF-8 without control characters
/// (they are printed on labels, where a newline could fake a line). Field order is kept as given
/// (it is part of the signed bytes). A zero amount is allowed (a complimentary ticket).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueItem {
    pub kind: Kind,
    pub device_id: DeviceId,
    pub key_id: KeyId,
    pub serial: u64,
    pub amount: Amount,
    pub issue_date: ItemDate,
    pub valid_until: Option<ItemDate>,
    pub fields: Vec<Field>,
}

impl ValueItem {
    /// The value of the field with `tag`, if present.
    pub fn field(&self, tag: u8) -> Option<&str> {
        self.fields
            .iter()
            .find(|field| field.tag == tag)
            .map(|field| field.value.as_str())
    }
}

/// The body of an item, by kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    Postage(PostageIndicium),
    Value(ValueItem),
}

impl Body {
    /// The item kind.
    pub fn kind(&self) -> Kind {
        match self {
            Body::Postage(_) => Kind::Postage,
            Body::Value(item) => item.kind,
        }
    }

    /// The issuing device.
    pub fn device_id(&self) -> DeviceId {
        match self {
            Body::Postage(indicium) => indicium.device_id,
            Body::Value(item) => item.device_id,
        }
    }

    /// The id of the key that signs (signed) the item.
    pub fn key_id(&self) -> KeyId {
        match self {
            Body::Postage(indicium) => indicium.key_id,
            Body::Value(item) => item.key_id,
        }
    }

    /// The item's serial: the piece number for postage, the 8-byte serial for other kinds.
    pub fn serial(&self) -> Serial {
        match self {
            Body::Postage(indicium) => indicium.serial(),
            Body::Value(item) => Serial {
                device_id: item.device_id,
                number: item.serial,
            },
        }
    }

    /// The postage, or the face amount of a value item.
    pub fn amount(&self) -> Amount {
        match self {
            Body::Postage(indicium) => indicium.postage,
            Body::Value(item) => item.amount,
        }
    }

    /// The bytes the signature covers, `[0, 7+L)`: header, body, signature-algorithm byte.
    /// Fails if a value breaks a rule of the format (zero or too large postage, zero piece, a
    /// value item of kind postage, a bad field, a body above [`MAX_BODY_LEN`]).
    pub fn signed_payload(&self) -> Result<Vec<u8>, ItemError> {
        let body = match self {
            Body::Postage(indicium) => encode_postage(indicium)?,
            Body::Value(item) => encode_value(item)?,
        };
        let kind = self.kind();
        let body_len = u16::try_from(body.len())
            .ok()
            .filter(|_| body_len_is_valid(kind, body.len()))
            .ok_or(ItemError::BodyLength {
                kind,
                len: body.len(),
            })?;
        let mut out = Vec::with_capacity(HEADER_LEN + body.len() + 1 + SIGNATURE_LEN);
        out.extend_from_slice(&MAGIC);
        out.push(FORMAT_VERSION);
        out.push(kind.code());
        out.extend_from_slice(&body_len.to_be_bytes());
        out.extend_from_slice(&body);
        out.push(SIG_ALG_ECDSA_P256_SHA256);
        Ok(out)
    }
}

/// A complete printed item: body and signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub body: Body,
    /// ECDSA P-256 / SHA-256 signature as r||s over [`Body::signed_payload`].
    pub signature: [u8; SIGNATURE_LEN],
}

impl Item {
    /// The item's bytes: the signed payload, then the signature.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ItemError> {
        let mut out = self.body.signed_payload()?;
        out.extend_from_slice(&self.signature);
        Ok(out)
    }

    /// Strict parse of a whole item: magic `"SL"`, version 1, known kind, body length exactly 55
    /// for postage and 33..=1024 otherwise, total length exact (no trailing bytes), signature
    /// algorithm 1 and every field valid. Never panics, whatever the bytes.
    pub fn parse(bytes: &[u8]) -> Result<Item, ItemError> {
        let mut reader = Reader::new(bytes);
        let [m0, m1, version, kind_code, l0, l1] = reader.take::<HEADER_LEN>()?;
        if [m0, m1] != MAGIC {
            return Err(ItemError::BadMagic);
        }
        if version != FORMAT_VERSION {
            return Err(ItemError::UnsupportedVersion(version));
        }
        let kind = Kind::from_code(kind_code).ok_or(ItemError::UnknownKind(kind_code))?;
        let body_len = usize::from(u16::from_be_bytes([l0, l1]));
        if !body_len_is_valid(kind, body_len) {
            return Err(ItemError::BodyLength {
                kind,
                len: body_len,
            });
        }
        let body_bytes = reader.take_slice(body_len)?;
        let [algorithm] = reader.take::<1>()?;
        let signature = reader.take::<SIGNATURE_LEN>()?;
        if !reader.is_empty() {
            return Err(ItemError::TrailingBytes);
        }
        if algorithm != SIG_ALG_ECDSA_P256_SHA256 {
            return Err(ItemError::UnsupportedSignatureAlgorithm(algorithm));
        }
        let body = match kind {
            Kind::Postage => Body::Postage(parse_postage(body_bytes)?),
            _ => Body::Value(parse_value(kind, body_bytes)?),
        };
        Ok(Item { body, signature })
    }

    /// Verifies the signature with a public key given as SubjectPublicKeyInfo DER (as published
    /// by `GET /v1/keys`). Checks, in order: the key is a well-formed P-256 SPKI
    /// ([`ItemError::BadPublicKey`]), its key id is the one in the item
    /// ([`ItemError::KeyIdMismatch`]), and the signature verifies over the signed payload
    /// ([`ItemError::BadSignature`]).
    pub fn verify(&self, spki_der: &[u8]) -> Result<(), ItemError> {
        // aws-lc-rs also accepts a bare EC point and ignores bytes after the SPKI; the key id is
        // defined over the exact SPKI DER, so insist on exactly one DER SEQUENCE.
        if !is_one_der_sequence(spki_der) {
            return Err(ItemError::BadPublicKey);
        }
        let key = ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, spki_der)
            .map_err(|_| ItemError::BadPublicKey)?;
        if KeyId::of_spki(spki_der) != self.body.key_id() {
            return Err(ItemError::KeyIdMismatch);
        }
        let payload = self.body.signed_payload()?;
        key.verify_sig(&payload, &self.signature)
            .map_err(|_| ItemError::BadSignature)
    }
}

fn body_len_is_valid(kind: Kind, len: usize) -> bool {
    match kind {
        Kind::Postage => len == POSTAGE_BODY_LEN,
        _ => (VALUE_BODY_FIXED_LEN..=MAX_BODY_LEN).contains(&len),
    }
}

/// Whether `der` is one DER SEQUENCE (tag 0x30, definite length) and nothing more.
fn is_one_der_sequence(der: &[u8]) -> bool {
    match der {
        [0x30, len, rest @ ..] if *len < 0x80 => rest.len() == usize::from(*len),
        [0x30, 0x81, len, rest @ ..] => *len >= 0x80 && rest.len() == usize::from(*len),
        [0x30, 0x82, hi, lo, rest @ ..] => {
            let len = u16::from_be_bytes([*hi, *lo]);
            len >= 0x100 && rest.len() == usize::from(len)
        }
        _ => false,
    }
}

// --- encoding ----------------------------------------------------------------------------------

/// The low 5 bytes of `value`, which must fit them.
fn u40_bytes(value: u64, field: &'static str) -> Result<[u8; 5], ItemError> {
    if value > MAX_U40 {
        return Err(ItemError::FieldTooLarge(field));
    }
    let [_, _, _, b0, b1, b2, b3, b4] = value.to_be_bytes();
    Ok([b0, b1, b2, b3, b4])
}

fn encode_postage(indicium: &PostageIndicium) -> Result<Vec<u8>, ItemError> {
    if indicium.piece == 0 {
        return Err(ItemError::ZeroPiece);
    }
    let postage = indicium.postage.mills();
    if postage == 0 {
        return Err(ItemError::ZeroPostage);
    }
    if postage > MAX_POSTAGE_MILLS {
        return Err(ItemError::FieldTooLarge("postage"));
    }
    let [_, _, _, _, _, p0, p1, p2] = postage.to_be_bytes();
    let mut out = Vec::with_capacity(POSTAGE_BODY_LEN);
    out.push(INDICIUM_VERSION);
    out.extend_from_slice(&indicium.device_id.to_bytes());
    out.extend_from_slice(&indicium.key_id.0);
    out.extend_from_slice(&indicium.piece.to_be_bytes());
    out.extend_from_slice(&u40_bytes(
        indicium.ascending.mills(),
        "ascending register",
    )?);
    out.extend_from_slice(&u40_bytes(
        indicium.descending.mills(),
        "descending register",
    )?);
    out.extend_from_slice(&[p0, p1, p2]);
    out.extend_from_slice(&indicium.mail_date.to_yyyymmdd().to_be_bytes());
    out.extend_from_slice(&indicium.from_zip.value().to_be_bytes());
    out.extend_from_slice(&indicium.to.to_field());
    out.extend_from_slice(&indicium.rate.code().to_be_bytes());
    out.extend_from_slice(&indicium.software_id.to_be_bytes());
    Ok(out)
}

fn encode_value(item: &ValueItem) -> Result<Vec<u8>, ItemError> {
    if item.kind == Kind::Postage {
        return Err(ItemError::PostageAsValueItem);
    }
    check_validity_dates(item.issue_date, item.valid_until)?;
    let mut out = Vec::with_capacity(VALUE_BODY_FIXED_LEN);
    out.extend_from_slice(&item.device_id.to_bytes());
    out.extend_from_slice(&item.key_id.0);
    out.extend_from_slice(&item.serial.to_be_bytes());
    out.extend_from_slice(&u40_bytes(item.amount.mills(), "amount")?);
    out.extend_from_slice(&item.issue_date.to_yyyymmdd().to_be_bytes());
    let valid_until = item.valid_until.map_or(0, ItemDate::to_yyyymmdd);
    out.extend_from_slice(&valid_until.to_be_bytes());
    let mut seen = TagSet::default();
    for field in &item.fields {
        check_field(item.kind, field.tag, field.value.as_bytes(), &mut seen)?;
        let len = u8::try_from(field.value.len()).map_err(|_| ItemError::BadFieldValue {
            tag: field.tag,
            reason: "value is longer than 255 bytes",
        })?;
        out.push(field.tag);
        out.push(len);
        out.extend_from_slice(field.value.as_bytes());
    }
    Ok(out)
}

fn check_validity_dates(issue: ItemDate, valid_until: Option<ItemDate>) -> Result<(), ItemError> {
    match valid_until {
        Some(until) if until < issue => Err(ItemError::ValidUntilBeforeIssue),
        _ => Ok(()),
    }
}

/// Which of the 256 possible tags have been seen.
#[derive(Default)]
struct TagSet([u64; 4]);

impl TagSet {
    /// Marks `tag` as seen; false if it already was.
    fn insert(&mut self, tag: u8) -> bool {
        let bit = 1u64 << (tag % 64);
        let Some(word) = self.0.get_mut(usize::from(tag / 64)) else {
            return false; // unreachable: tag / 64 < 4
        };
        let fresh = *word & bit == 0;
        *word |= bit;
        fresh
    }
}

/// The rules every field obeys, on encoding and on parsing.
fn check_field(kind: Kind, tag: u8, value: &[u8], seen: &mut TagSet) -> Result<(), ItemError> {
    if kind.field_name(tag).is_none() {
        return Err(ItemError::UnknownFieldTag { kind, tag });
    }
    if !seen.insert(tag) {
        return Err(ItemError::DuplicateFieldTag(tag));
    }
    let bad = |reason| ItemError::BadFieldValue { tag, reason };
    if value.is_empty() {
        return Err(bad("value is empty"));
    }
    if value.len() > MAX_FIELD_VALUE_LEN {
        return Err(bad("value is longer than 255 bytes"));
    }
    let text = std::str::from_utf8(value).map_err(|_| bad("value is not valid UTF-8"))?;
    if text.chars().any(char::is_control) {
        return Err(bad("value contains a control character"));
    }
    Ok(())
}

// --- parsing -----------------------------------------------------------------------------------

/// A cursor over untrusted bytes; every read is bounds-checked and fails with
/// [`ItemError::TooShort`].
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { rest: bytes }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], ItemError> {
        let (head, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(ItemError::TooShort)?;
        self.rest = rest;
        Ok(*head)
    }

    fn take_slice(&mut self, len: usize) -> Result<&'a [u8], ItemError> {
        let (head, rest) = self.rest.split_at_checked(len).ok_or(ItemError::TooShort)?;
        self.rest = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, ItemError> {
        self.take::<1>().map(|[byte]| byte)
    }

    fn u16(&mut self) -> Result<u16, ItemError> {
        self.take().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Result<u32, ItemError> {
        self.take().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Result<u64, ItemError> {
        self.take().map(u64::from_be_bytes)
    }

    fn u40(&mut self) -> Result<u64, ItemError> {
        let [b0, b1, b2, b3, b4] = self.take()?;
        Ok(u64::from_be_bytes([0, 0, 0, b0, b1, b2, b3, b4]))
    }

    fn u24(&mut self) -> Result<u64, ItemError> {
        let [b0, b1, b2] = self.take()?;
        Ok(u64::from_be_bytes([0, 0, 0, 0, 0, b0, b1, b2]))
    }

    fn device_id(&mut self) -> Result<DeviceId, ItemError> {
        DeviceId::from_bytes(self.take()?)
    }

    fn key_id(&mut self) -> Result<KeyId, ItemError> {
        self.take().map(KeyId)
    }

    fn amount(&mut self, field: &'static str) -> Result<Amount, ItemError> {
        Amount::from_mills(self.u40()?).ok_or(ItemError::FieldTooLarge(field))
    }

    fn date(&mut self) -> Result<ItemDate, ItemError> {
        ItemDate::from_yyyymmdd(self.u32()?)
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
}

fn parse_postage(body: &[u8]) -> Result<PostageIndicium, ItemError> {
    let mut reader = Reader::new(body);
    let version = reader.u8()?;
    if version != INDICIUM_VERSION {
        return Err(ItemError::UnsupportedIndiciumVersion(version));
    }
    let device_id = reader.device_id()?;
    let key_id = reader.key_id()?;
    let piece = reader.u32()?;
    if piece == 0 {
        return Err(ItemError::ZeroPiece);
    }
    let ascending = reader.amount("ascending register")?;
    let descending = reader.amount("descending register")?;
    let postage = reader.u24()?;
    if postage == 0 {
        return Err(ItemError::ZeroPostage);
    }
    let postage = Amount::from_mills(postage).ok_or(ItemError::FieldTooLarge("postage"))?;
    let mail_date = reader.date()?;
    let from_zip = Zip5::from_value(reader.u32()?)?;
    let to = DeliveryPoint::from_field(&reader.take()?)?;
    let rate_code = reader.u16()?;
    let rate = RateCategory::from_code(rate_code).ok_or(ItemError::BadRateCategory(rate_code))?;
    let software_id = reader.u32()?;
    if !reader.is_empty() {
        return Err(ItemError::BodyLength {
            kind: Kind::Postage,
            len: body.len(),
        });
    }
    Ok(PostageIndicium {
        device_id,
        key_id,
        piece,
        ascending,
        descending,
        postage,
        mail_date,
        from_zip,
        to,
        rate,
        software_id,
    })
}

fn parse_value(kind: Kind, body: &[u8]) -> Result<ValueItem, ItemError> {
    let mut reader = Reader::new(body);
    let device_id = reader.device_id()?;
    let key_id = reader.key_id()?;
    let serial = reader.u64()?;
    let amount = reader.amount("amount")?;
    let issue_date = reader.date()?;
    let valid_until = match reader.u32()? {
        0 => None,
        value => Some(ItemDate::from_yyyymmdd(value)?),
    };
    check_validity_dates(issue_date, valid_until)?;
    let mut fields = Vec::new();
    let mut seen = TagSet::default();
    while !reader.is_empty() {
        let tag = reader.u8()?;
        let len = reader.u8().map_err(|_| ItemError::TruncatedField)?;
        let value = reader
            .take_slice(usize::from(len))
            .map_err(|_| ItemError::TruncatedField)?;
        check_field(kind, tag, value, &mut seen)?;
        let value = String::from_utf8(value.to_vec()).map_err(|_| ItemError::BadFieldValue {
            tag,
            reason: "value is not valid UTF-8",
        })?;
        fields.push(Field { tag, value });
    }
    Ok(ValueItem {
        kind,
        device_id,
        key_id,
        serial,
        amount,
        issue_date,
        valid_until,
        fields,
    })
}
