//! Key derivations, MACs, the auth transcript and the sealed channel of the link protocol.

use std::num::NonZeroU32;

use aws_lc_rs::{aead, hkdf, hmac, pbkdf2, signature};
use unicode_normalization::UnicodeNormalization;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::WireError;
use crate::frame::{Frame, Hex};

/// PBKDF2-HMAC-SHA256 rounds for `K_user` (normative).
pub const PBKDF2_ROUNDS: u32 = 600_000;
/// The domain-separation prefix of the auth transcript.
pub const AUTH_CONTEXT: &[u8] = b"stampline/v1/auth";

/// `K_user`, the user's password-derived link key. Zeroed on drop, never printed.
pub type UserKey = Zeroizing<[u8; 32]>;
/// `K_s`, the per-session sealing key.
pub type SessionKey = Zeroizing<[u8; 32]>;

/// `lowercase(U)`: Unicode lower-casing of the NFC form.
pub fn normalize_user(user: &str) -> String {
    user.nfc().collect::<String>().to_lowercase()
}

/// `T = "stampline/v1/auth" 0x00 || U 0x00 || CN || SN || session`.
pub fn auth_transcript(user: &str, cn: &[u8; 8], sn: &[u8; 8], session: &Uuid) -> Vec<u8> {
    let mut t = Vec::with_capacity(AUTH_CONTEXT.len() + user.len() + 2 + 32);
    t.extend_from_slice(AUTH_CONTEXT);
    t.push(0);
    t.extend_from_slice(user.as_bytes());
    t.push(0);
    t.extend_from_slice(cn);
    t.extend_from_slice(sn);
    t.extend_from_slice(session.as_bytes());
    t
}

/// Verify the server's ECDSA P-256/SHA-256 signature (64-byte r||s) of the transcript with the
/// pinned auth public key (SubjectPublicKeyInfo DER).
pub fn verify_auth_signature(
    spki_der: &[u8],
    transcript: &[u8],
    sig: &[u8; 64],
) -> Result<(), WireError> {
    signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, spki_der)
        .verify(transcript, sig)
        .map_err(|_| WireError::BadSignature)
}

/// `K_user = PBKDF2-HMAC-SHA256(P, "stampline/v1/user" || lowercase(U), 600000, 32)`.
pub fn user_key(password: &str, user: &str) -> UserKey {
    let mut salt = b"stampline/v1/user".to_vec();
    salt.extend_from_slice(normalize_user(user).as_bytes());
    let mut out = Zeroizing::new([0u8; 32]);
    // PBKDF2_ROUNDS is a non-zero constant.
    let rounds = NonZeroU32::new(PBKDF2_ROUNDS).unwrap_or(NonZeroU32::MIN);
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        rounds,
        &salt,
        password.as_bytes(),
        &mut out[..],
    );
    out
}

/// `K_s = HKDF-SHA256(ikm = K_user, salt = CN || SN, info = "stampline/v1/session" || session)`.
pub fn session_key(
    k_user: &[u8; 32],
    cn: &[u8; 8],
    sn: &[u8; 8],
    session: &Uuid,
) -> Result<SessionKey, WireError> {
    let mut salt = [0u8; 16];
    salt[..8].copy_from_slice(cn);
    salt[8..].copy_from_slice(sn);
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &salt).extract(k_user);
    let info: [&[u8]; 2] = [b"stampline/v1/session", session.as_bytes()];
    let okm = prk
        .expand(&info, hkdf::HKDF_SHA256)
        .map_err(|_| WireError::Crypto)?;
    let mut out = Zeroizing::new([0u8; 32]);
    okm.fill(&mut out[..]).map_err(|_| WireError::Crypto)?;
    Ok(out)
}

fn beat_message(context: &[u8], session: &Uuid, seq: u64, challenge: &[u8; 8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(context.len() + 32);
    m.extend_from_slice(context);
    m.extend_from_slice(session.as_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(challenge);
    m
}

const BEAT: &[u8] = b"stampline/v1/beat";
const BEAT_ACK: &[u8] = b"stampline/v1/beat-ack";

/// `M = HMAC-SHA256(K_user, "stampline/v1/beat" || session || n || C)`.
pub fn beat_mac(k_user: &[u8; 32], session: &Uuid, seq: u64, challenge: &[u8; 8]) -> [u8; 32] {
    mac(k_user, &beat_message(BEAT, session, seq, challenge))
}

/// The ack's MAC: `HMAC-SHA256(K_user, "stampline/v1/beat-ack" || session || n || C)`.
pub fn beat_ack_mac(k_user: &[u8; 32], session: &Uuid, seq: u64, challenge: &[u8; 8]) -> [u8; 32] {
    mac(k_user, &beat_message(BEAT_ACK, session, seq, challenge))
}

/// Constant-time check of a beat's MAC.
pub fn verify_beat_mac(
    k_user: &[u8; 32],
    session: &Uuid,
    seq: u64,
    challenge: &[u8; 8],
    tag: &[u8; 32],
) -> Result<(), WireError> {
    verify_mac(k_user, &beat_message(BEAT, session, seq, challenge), tag)
}

/// Constant-time check of an ack's MAC.
pub fn verify_beat_ack_mac(
    k_user: &[u8; 32],
    session: &Uuid,
    seq: u64,
    challenge: &[u8; 8],
    tag: &[u8; 32],
) -> Result<(), WireError> {
    verify_mac(
        k_user,
        &beat_message(BEAT_ACK, session, seq, challenge),
        tag,
    )
}

/// Constant-time check of an HMAC-SHA256 tag over `message`.
fn verify_mac(key: &[u8; 32], message: &[u8], tag: &[u8; 32]) -> Result<(), WireError> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::verify(&key, message, tag).map_err(|_| WireError::BadMac)
}

fn mac(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let tag = hmac::sign(&key, message);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// The idempotency fingerprint of a request: `HMAC-SHA256(K_user, "stampline/v1/request" ||
/// canonical JSON)`. Keyed so that a stored fingerprint reveals nothing of the request (a fund
/// request carries card data).
pub fn request_fingerprint(k_user: &[u8; 32], canonical_request: &[u8]) -> [u8; 32] {
    let mut m = b"stampline/v1/request".to_vec();
    m.extend_from_slice(canonical_request);
    mac(k_user, &m)
}

/// Which way a sealed frame travels; enters the AAD and our nonce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    ClientToServer,
    ServerToClient,
}

impl Direction {
    fn aad_label(self) -> &'static [u8] {
        match self {
            Direction::ClientToServer => b"stampline/v1/c2s",
            Direction::ServerToClient => b"stampline/v1/s2c",
        }
    }

    fn nonce_tag(self) -> u8 {
        match self {
            Direction::ClientToServer => 1,
            Direction::ServerToClient => 2,
        }
    }

    fn reverse(self) -> Direction {
        match self {
            Direction::ClientToServer => Direction::ServerToClient,
            Direction::ServerToClient => Direction::ClientToServer,
        }
    }
}

/// One side's sealed channel: seals what it sends (seq 1, 2, …) and opens what it receives,
/// refusing a repeated, skipped or unopenable frame. After any error the caller must end the link.
pub struct Channel {
    key: aead::LessSafeKey,
    session: Uuid,
    send: Direction,
    next_send: u64,
    next_recv: u64,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("session", &self.session)
            .field("send", &self.send)
            .field("next_send", &self.next_send)
            .field("next_recv", &self.next_recv)
            .finish_non_exhaustive()
    }
}

impl Channel {
    /// `send` is the direction this side writes: the client sends `ClientToServer`.
    pub fn new(k_s: &[u8; 32], session: Uuid, send: Direction) -> Result<Channel, WireError> {
        let key = aead::UnboundKey::new(&aead::AES_256_GCM, k_s).map_err(|_| WireError::Crypto)?;
        Ok(Channel {
            key: aead::LessSafeKey::new(key),
            session,
            send,
            next_send: 1,
            next_recv: 1,
        })
    }

    fn aad(&self, dir: Direction, seq: u64) -> Vec<u8> {
        let mut aad = dir.aad_label().to_vec();
        aad.extend_from_slice(self.session.as_bytes());
        aad.extend_from_slice(&seq.to_be_bytes());
        aad
    }

    /// Seal one plaintext into the next `sealed` frame.
    ///
    /// Nonces are deterministic and unique per key: one byte of direction, three zero bytes and the
    /// 8-byte sequence number. Both directions share `K_s`, so the direction byte keeps their
    /// nonces apart; a sequence number is never reused within a direction.
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<Frame, WireError> {
        let seq = self.next_send;
        let mut nonce = [0u8; 12];
        nonce[0] = self.send.nonce_tag();
        nonce[4..].copy_from_slice(&seq.to_be_bytes());
        let aad = self.aad(self.send, seq);
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(&aad[..]),
                &mut buf,
            )
            .map_err(|_| WireError::Crypto)?;
        self.next_send = seq.checked_add(1).ok_or(WireError::Crypto)?;
        Ok(Frame::Sealed {
            seq,
            nonce: Hex(nonce),
            ct: buf,
        })
    }

    /// Open the next received `sealed` frame's contents; `seq` must be exactly the next one.
    pub fn open(&mut self, seq: u64, nonce: &[u8; 12], ct: &[u8]) -> Result<Vec<u8>, WireError> {
        if seq != self.next_recv {
            return Err(WireError::Sequence {
                expected: self.next_recv,
                got: seq,
            });
        }
        let aad = self.aad(self.send.reverse(), seq);
        let mut buf = ct.to_vec();
        let plain = self
            .key
            .open_in_place(
                aead::Nonce::assume_unique_for_key(*nonce),
                aead::Aad::from(&aad[..]),
                &mut buf,
            )
            .map_err(|_| WireError::Unopenable)?;
        let len = plain.len();
        buf.truncate(len);
        self.next_recv = seq.checked_add(1).ok_or(WireError::Crypto)?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Channel, Channel) {
        let k = [7u8; 32];
        let s = Uuid::from_bytes([9; 16]);
        (
            Channel::new(&k, s, Direction::ClientToServer).unwrap(),
            Channel::new(&k, s, Direction::ServerToClient).unwrap(),
        )
    }

    fn parts(frame: Frame) -> (u64, [u8; 12], Vec<u8>) {
        match frame {
            Frame::Sealed { seq, nonce, ct } => (seq, nonce.0, ct),
            other => panic!("not sealed: {other:?}"),
        }
    }

    #[test]
    fn sealed_frames_open_in_order_on_the_other_side() {
        let (mut client, mut server) = pair();
        for i in 1..=3u64 {
            let (seq, nonce, ct) = parts(client.seal(format!("req {i}").as_bytes()).unwrap());
            assert_eq!(seq, i);
            assert_eq!(
                server.open(seq, &nonce, &ct).unwrap(),
                format!("req {i}").as_bytes()
            );
        }
        let (seq, nonce, ct) = parts(server.seal(b"resp").unwrap());
        assert_eq!(seq, 1);
        assert_eq!(client.open(seq, &nonce, &ct).unwrap(), b"resp");
    }

    #[test]
    fn a_replayed_frame_is_refused() {
        let (mut client, mut server) = pair();
        let (seq, nonce, ct) = parts(client.seal(b"once").unwrap());
        server.open(seq, &nonce, &ct).unwrap();
        assert_eq!(
            server.open(seq, &nonce, &ct),
            Err(WireError::Sequence {
                expected: 2,
                got: 1
            })
        );
    }

    #[test]
    fn a_skipped_frame_is_refused() {
        let (mut client, mut server) = pair();
        let _ = client.seal(b"lost").unwrap();
        let (seq, nonce, ct) = parts(client.seal(b"second").unwrap());
        assert!(matches!(
            server.open(seq, &nonce, &ct),
            Err(WireError::Sequence { .. })
        ));
    }

    #[test]
    fn a_tampered_frame_is_unopenable() {
        let (mut client, mut server) = pair();
        let (seq, nonce, mut ct) = parts(client.seal(b"pay $5").unwrap());
        ct[0] ^= 1;
        assert_eq!(server.open(seq, &nonce, &ct), Err(WireError::Unopenable));
    }

    #[test]
    fn a_frame_reflected_back_to_its_sender_is_unopenable() {
        let (mut client, _server) = pair();
        let (_, nonce, ct) = parts(client.seal(b"hello").unwrap());
        // The client's own frame, sent back to it with the sequence it expects.
        assert_eq!(client.open(1, &nonce, &ct), Err(WireError::Unopenable));
    }

    #[test]
    fn beat_macs_verify_and_differ_from_acks() {
        let k = [3u8; 32];
        let s = Uuid::from_bytes([1; 16]);
        let c = [5u8; 8];
        let m = beat_mac(&k, &s, 1, &c);
        verify_beat_mac(&k, &s, 1, &c, &m).unwrap();
        assert_eq!(verify_beat_mac(&k, &s, 2, &c, &m), Err(WireError::BadMac));
        let a = beat_ack_mac(&k, &s, 1, &c);
        assert_ne!(m, a);
        verify_beat_ack_mac(&k, &s, 1, &c, &a).unwrap();
        assert_eq!(
            verify_beat_ack_mac(&[4u8; 32], &s, 1, &c, &a),
            Err(WireError::BadMac)
        );
    }

    #[test]
    fn user_names_are_lowercased_after_nfc() {
        // "É" written as E + combining acute accent normalises to the precomposed é.
        assert_eq!(normalize_user("Ann\u{0045}\u{0301}"), "ann\u{00e9}");
    }

    #[test]
    fn transcript_layout_matches_the_design() {
        let s = Uuid::from_bytes([0xaa; 16]);
        let t = auth_transcript("Ann", &[1; 8], &[2; 8], &s);
        let mut want = b"stampline/v1/auth\0Ann\0".to_vec();
        want.extend_from_slice(&[1; 8]);
        want.extend_from_slice(&[2; 8]);
        want.extend_from_slice(&[0xaa; 16]);
        assert_eq!(t, want);
    }

    #[test]
    fn user_key_matches_an_independent_pbkdf2_and_session_keys_depend_on_nonces() {
        let k = user_key("correct horse battery", "Ann");
        let mut want = [0u8; 32];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            NonZeroU32::new(600_000).unwrap(),
            b"stampline/v1/userann",
            b"correct horse battery",
            &mut want,
        );
        assert_eq!(*k, want);
        let s = Uuid::from_bytes([1; 16]);
        let a = session_key(&k, &[1; 8], &[2; 8], &s).unwrap();
        let b = session_key(&k, &[1; 8], &[3; 8], &s).unwrap();
        assert_ne!(*a, *b);
    }
}
