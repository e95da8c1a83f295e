//! The outer frames: one JSON object per WebSocket text frame, tagged by `"type"`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::{MAX_FRAME_BYTES, WireError};

/// A byte string of exactly `N` bytes, written as `2N` lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hex<const N: usize>(pub [u8; N]);

impl<const N: usize> std::fmt::Debug for Hex<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl<const N: usize> Serialize for Hex<N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de, const N: usize> Deserialize<'de> for Hex<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        if text.len() != 2 * N || text.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(serde::de::Error::custom(format!(
                "expected {} lowercase hex characters",
                2 * N
            )));
        }
        let mut out = [0u8; N];
        hex::decode_to_slice(text.as_bytes(), &mut out).map_err(serde::de::Error::custom)?;
        Ok(Hex(out))
    }
}

/// A string that must never be printed: `Debug` shows `"<redacted>"`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// Standard base64 with padding, as a JSON string.
mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

/// Every frame of protocol v1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Frame {
    Hello {
        version: u32,
        user: String,
        password: Secret,
        client_nonce: Hex<8>,
        client: String,
        /// The client's operating system and architecture ("linux-x86_64"), for the operators'
        /// view of live links; absent from older clients.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        platform: Option<String>,
    },
    Welcome {
        session: Uuid,
        server_nonce: Hex<8>,
        key_id: String,
        signature: Hex<64>,
        beat_interval_ms: u64,
        beat_timeout_ms: u64,
    },
    Beat {
        seq: u64,
        challenge: Hex<8>,
        mac: Hex<32>,
    },
    BeatAck {
        seq: u64,
        mac: Hex<32>,
    },
    Sealed {
        seq: u64,
        nonce: Hex<12>,
        #[serde(with = "b64")]
        ct: Vec<u8>,
    },
    Error {
        code: String,
        message: String,
    },
}

impl Frame {
    /// A short name of the frame type, for logs (never the contents).
    pub fn type_name(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "hello",
            Frame::Welcome { .. } => "welcome",
            Frame::Beat { .. } => "beat",
            Frame::BeatAck { .. } => "beat_ack",
            Frame::Sealed { .. } => "sealed",
            Frame::Error { .. } => "error",
        }
    }
}

/// Parse one text frame, refusing anything over [`MAX_FRAME_BYTES`] before parsing it.
pub fn decode_frame(text: &str) -> Result<Frame, WireError> {
    if text.len() > MAX_FRAME_BYTES {
        return Err(WireError::FrameTooLarge);
    }
    serde_json::from_str(text).map_err(|e| WireError::Malformed(e.to_string()))
}

/// Serialise one frame to its JSON text.
pub fn encode_frame(frame: &Frame) -> String {
    // Serialising these plain structs (strings, integers, hex) cannot fail.
    serde_json::to_string(frame).unwrap_or_else(|_| String::from("{}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips_and_debug_hides_the_password() {
        let frame = Frame::Hello {
            version: 1,
            user: "ann".into(),
            password: Secret("correct horse battery".into()),
            client_nonce: Hex([1, 2, 3, 4, 5, 6, 7, 8]),
            client: "stampline/0.1".into(),
            platform: None,
        };
        let text = encode_frame(&frame);
        assert!(text.contains(r#""type":"hello""#));
        assert!(text.contains(r#""client_nonce":"0102030405060708""#));
        assert_eq!(decode_frame(&text).unwrap(), frame);
        assert!(!format!("{frame:?}").contains("horse"));
    }

    #[test]
    fn hex_fields_must_have_exact_length_and_lowercase() {
        let short = r#"{"type":"beat_ack","seq":1,"mac":"00"}"#;
        assert!(matches!(decode_frame(short), Err(WireError::Malformed(_))));
        let upper = format!(
            r#"{{"type":"beat_ack","seq":1,"mac":"{}"}}"#,
            "AB".repeat(32)
        );
        assert!(decode_frame(&upper).is_err());
        let ok = format!(
            r#"{{"type":"beat_ack","seq":1,"mac":"{}"}}"#,
            "ab".repeat(32)
        );
        assert!(decode_frame(&ok).is_ok());
    }

    #[test]
    fn oversized_frames_are_refused_before_parsing() {
        let text = "x".repeat(MAX_FRAME_BYTES + 1);
        assert_eq!(decode_frame(&text), Err(WireError::FrameTooLarge));
    }

    #[test]
    fn sealed_ct_is_standard_base64_with_padding() {
        let frame = Frame::Sealed {
            seq: 1,
            nonce: Hex([0; 12]),
            ct: vec![0xff, 0xfe],
        };
        let text = encode_frame(&frame);
        assert!(text.contains(r#""ct":"//4=""#), "{text}");
        assert_eq!(decode_frame(&text).unwrap(), frame);
    }

    #[test]
    fn unknown_frame_types_are_malformed() {
        assert!(matches!(
            decode_frame(r#"{"type":"shout"}"#),
            Err(WireError::Malformed(_))
        ));
    }
}
