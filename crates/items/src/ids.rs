//! Identifiers printed in items: the device id, the key id and the serial.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::digest;

use crate::ItemError;

/// Length of a device id's model part: provider + model, e.g. `"SL01"`.
pub const DEVICE_MODEL_LEN: usize = 4;
/// Digits of a device serial as written: zero-padded to 8, more only above 99,999,999.
pub const DEVICE_SERIAL_MIN_DIGITS: usize = 8;
/// The model reserved for test devices: the sandbox licensing system hands it out, so every item
/// a sandbox signs says it is a test item (`"TEST00001234"`); no production device has it.
pub const TEST_DEVICE_MODEL: [u8; 4] = *b"TEST";
/// Length of an encoded device id: 4 model bytes + a big-endian u32 serial.
pub const DEVICE_ID_LEN: usize = 8;
/// Length of a key id: the first 4 bytes of SHA-256 over the key's SPKI DER.
pub const KEY_ID_LEN: usize = 4;

/// The postal security device (meter) that issued an item: 4 ASCII characters for provider and
/// model (uppercase letters or digits, e.g. `"SL01"`) and a 32-bit serial.
///
/// Written as the 4 characters then the serial zero-padded to 8 decimal digits:
/// `"SL0100001234"` (more digits only above 99,999,999).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId {
    model: [u8; 4],
    serial: u32,
}

fn is_model_byte(byte: u8) -> bool {
    byte.is_ascii_uppercase() || byte.is_ascii_digit()
}

impl DeviceId {
    /// A device id; fails unless every model byte is `A`–`Z` or `0`–`9`.
    pub fn new(model: [u8; 4], serial: u32) -> Result<DeviceId, ItemError> {
        if model.iter().all(|byte| is_model_byte(*byte)) {
            Ok(DeviceId { model, serial })
        } else {
            Err(ItemError::BadDeviceId)
        }
    }

    /// The device id encoded in an item: 4 model bytes and a big-endian serial.
    pub fn from_bytes(bytes: [u8; 8]) -> Result<DeviceId, ItemError> {
        let [m0, m1, m2, m3, s0, s1, s2, s3] = bytes;
        DeviceId::new([m0, m1, m2, m3], u32::from_be_bytes([s0, s1, s2, s3]))
    }

    /// The provider + model characters, e.g. `*b"SL01"`.
    pub fn model(&self) -> [u8; 4] {
        self.model
    }

    /// The model as text, e.g. `"SL01"`.
    pub fn model_str(&self) -> &str {
        // Model bytes are validated ASCII in `new`, so this never falls back.
        std::str::from_utf8(&self.model).unwrap_or("????")
    }

    /// Whether this is a test device ([`TEST_DEVICE_MODEL`]): its items are not postage.
    pub fn is_test(&self) -> bool {
        self.model == TEST_DEVICE_MODEL
    }

    /// The device serial within the model.
    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// The 8 bytes written in items: model, then the serial big-endian.
    pub fn to_bytes(&self) -> [u8; 8] {
        let [s0, s1, s2, s3] = self.serial.to_be_bytes();
        let [m0, m1, m2, m3] = self.model;
        [m0, m1, m2, m3, s0, s1, s2, s3]
    }
}

/// `"SL0100001234"`.
impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{:0width$}",
            self.model_str(),
            self.serial,
            width = DEVICE_SERIAL_MIN_DIGITS
        )
    }
}

/// Strict: exactly the text [`Display`](fmt::Display) writes (4 model characters, then the serial
/// with exactly 8 digits, or more without leading zeros above 99,999,999).
impl FromStr for DeviceId {
    type Err = ItemError;

    fn from_str(text: &str) -> Result<DeviceId, ItemError> {
        let bytes = text.as_bytes();
        let (Some(model), Some(digits)) = (
            bytes.first_chunk::<DEVICE_MODEL_LEN>(),
            bytes.get(DEVICE_MODEL_LEN..),
        ) else {
            return Err(ItemError::BadDeviceId);
        };
        let serial = parse_decimal(digits).ok_or(ItemError::BadDeviceId)?;
        let serial = u32::try_from(serial).map_err(|_| ItemError::BadDeviceId)?;
        let device = DeviceId::new(*model, serial)?;
        // Canonical form only: "SL011234" or "SL01000001234" are rejected.
        if format!("{serial:0DEVICE_SERIAL_MIN_DIGITS$}").as_bytes() != digits {
            return Err(ItemError::BadDeviceId);
        }
        Ok(device)
    }
}

/// Parses ASCII decimal digits (no sign, no whitespace) into a u64; `None` if empty, not digits,
/// or too large.
pub(crate) fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |value, byte| {
        if byte.is_ascii_digit() {
            value.checked_mul(10)?.checked_add(u64::from(byte - b'0'))
        } else {
            None
        }
    })
}

/// Which signing key signed an item: the first 4 bytes of SHA-256 over the key's
/// SubjectPublicKeyInfo DER (docs/DESIGN.md §4, §7). Written as 8 lowercase hex characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; 4]);

impl KeyId {
    /// The key id of a public key given as SubjectPublicKeyInfo DER.
    pub fn of_spki(spki_der: &[u8]) -> KeyId {
        let hash = digest::digest(&digest::SHA256, spki_der);
        let mut id = [0u8; KEY_ID_LEN];
        // A SHA-256 digest has 32 bytes; zip copies the first 4 without any indexing.
        for (out, byte) in id.iter_mut().zip(hash.as_ref()) {
            *out = *byte;
        }
        KeyId(id)
    }
}

/// `"1a2b3c4d"`.
impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// Strict: exactly 8 lowercase hex characters.
impl FromStr for KeyId {
    type Err = ItemError;

    fn from_str(text: &str) -> Result<KeyId, ItemError> {
        let lower_hex = |byte: &u8| byte.is_ascii_digit() || (b'a'..=b'f').contains(byte);
        if text.len() != 2 * KEY_ID_LEN || !text.as_bytes().iter().all(lower_hex) {
            return Err(ItemError::BadKeyId);
        }
        let mut id = [0u8; KEY_ID_LEN];
        hex::decode_to_slice(text, &mut id).map_err(|_| ItemError::BadKeyId)?;
        Ok(KeyId(id))
    }
}

/// An item's serial: the issuing device and a number that is unique per device: the piece number
/// for postage, the 8-byte serial for other kinds. Written `DEVICEID-N`, e.g. `"SL0100001234-42"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial {
    pub device_id: DeviceId,
    pub number: u64,
}

/// `"SL0100001234-42"`.
impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.device_id, self.number)
    }
}

/// Strict: a canonical device id, one hyphen, then N in decimal without sign or leading zeros.
impl FromStr for Serial {
    type Err = ItemError;

    fn from_str(text: &str) -> Result<Serial, ItemError> {
        let (device, number) = text.split_once('-').ok_or(ItemError::BadSerial)?;
        let device_id = device.parse().map_err(|_| ItemError::BadSerial)?;
        let digits = number.as_bytes();
        if digits.len() > 1 && digits.first() == Some(&b'0') {
            return Err(ItemError::BadSerial);
        }
        let number = parse_decimal(digits).ok_or(ItemError::BadSerial)?;
        Ok(Serial { device_id, number })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> DeviceId {
        DeviceId::new(*b"SL01", 1234).expect("valid model")
    }

    #[test]
    fn only_the_reserved_test_model_marks_a_test_device() {
        assert!(DeviceId::new(TEST_DEVICE_MODEL, 7).unwrap().is_test());
        assert!(!DeviceId::new(*b"SL01", 7).unwrap().is_test());
        assert!(!DeviceId::new(*b"TES7", 7).unwrap().is_test());
        assert_eq!(
            "TEST00000007".parse::<DeviceId>().map(|d| d.is_test()),
            Ok(true)
        );
    }

    #[test]
    fn device_id_displays_model_and_eight_digit_serial() {
        assert_eq!(device().to_string(), "SL0100001234");
        let big = DeviceId::new(*b"SL01", 123_456_789).expect("valid model");
        assert_eq!(big.to_string(), "SL01123456789");
        let max = DeviceId::new(*b"ZZ99", u32::MAX).expect("valid model");
        assert_eq!(max.to_string(), "ZZ994294967295");
    }

    #[test]
    fn device_id_parses_its_display_form_only() {
        assert_eq!("SL0100001234".parse::<DeviceId>(), Ok(device()));
        assert_eq!(
            "SL01123456789".parse::<DeviceId>().map(|d| d.serial()),
            Ok(123_456_789)
        );
        for bad in [
            "",
            "SL01",
            "SL011234",
            "SL01000001234",
            "sl0100001234",
            "SL-100001234",
            "SL01+0001234",
            "SL01 0001234",
            "SL010000123a",
            "SL014294967296",
            "SL01099999999",
            "ÉL0100001234",
        ] {
            assert_eq!(
                bad.parse::<DeviceId>(),
                Err(ItemError::BadDeviceId),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn device_id_rejects_lowercase_and_punctuation_in_the_model() {
        assert_eq!(DeviceId::new(*b"sl01", 1), Err(ItemError::BadDeviceId));
        assert_eq!(DeviceId::new(*b"SL 1", 1), Err(ItemError::BadDeviceId));
        assert_eq!(DeviceId::new([0xff; 4], 1), Err(ItemError::BadDeviceId));
    }

    #[test]
    fn device_id_bytes_are_model_then_big_endian_serial() {
        assert_eq!(device().to_bytes(), *b"SL01\x00\x00\x04\xd2");
        assert_eq!(DeviceId::from_bytes(device().to_bytes()), Ok(device()));
        assert_eq!(device().model(), *b"SL01");
        assert_eq!(device().model_str(), "SL01");
    }

    #[test]
    fn key_id_is_the_sha256_prefix_of_the_spki_and_shows_as_lowercase_hex() {
        // SHA-256("") = e3b0c442 98fc1c14 ...
        let id = KeyId::of_spki(b"");
        assert_eq!(id, KeyId([0xe3, 0xb0, 0xc4, 0x42]));
        assert_eq!(id.to_string(), "e3b0c442");
        assert_eq!("e3b0c442".parse::<KeyId>(), Ok(id));
        for bad in [
            "E3B0C442",
            "e3b0c44",
            "e3b0c4421",
            "e3b0c44g",
            "+3b0c442",
            "é3b0c44",
        ] {
            assert_eq!(bad.parse::<KeyId>(), Err(ItemError::BadKeyId), "{bad:?}");
        }
    }

    #[test]
    fn serial_displays_and_parses_device_id_dash_number() {
        let serial = Serial {
            device_id: device(),
            number: 42,
        };
        assert_eq!(serial.to_string(), "SL0100001234-42");
        assert_eq!("SL0100001234-42".parse::<Serial>(), Ok(serial));
        assert_eq!("SL0100001234-0".parse::<Serial>().map(|s| s.number), Ok(0));
        assert_eq!(
            "SL0100001234-18446744073709551615"
                .parse::<Serial>()
                .map(|s| s.number),
            Ok(u64::MAX)
        );
    }

    #[test]
    fn serial_parse_rejects_non_canonical_text() {
        for bad in [
            "",
            "SL0100001234",
            "SL0100001234-",
            "SL0100001234-042",
            "SL0100001234-00",
            "SL0100001234-+42",
            "SL0100001234--42",
            "SL0100001234-4-2",
            "SL0100001234-42 ",
            "SL011234-42",
            "SL0100001234-18446744073709551616",
        ] {
            assert_eq!(bad.parse::<Serial>(), Err(ItemError::BadSerial), "{bad:?}");
        }
    }
}
