//! Sealed frames under a known session key: whatever sequence number, nonce and ciphertext
//! arrive, opening them fails cleanly (they were not sealed with the key) or, for frames this
//! side sealed, gives back exactly the plaintext.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stampline_wire::{Channel, Direction, Frame};
use uuid::Uuid;

const KEY: [u8; 32] = [7; 32];

fuzz_target!(|data: &[u8]| {
    let session = Uuid::from_bytes([9; 16]);
    let mut server = Channel::new(&KEY, session, Direction::ServerToClient).expect("channel");
    // Arbitrary frames: seq (8 bytes), nonce (12 bytes), then the ciphertext.
    if data.len() >= 20 {
        let seq = u64::from_be_bytes(data[..8].try_into().expect("8 bytes"));
        let nonce: [u8; 12] = data[8..20].try_into().expect("12 bytes");
        assert!(
            server.open(seq, &nonce, &data[20..]).is_err(),
            "a forged frame opened"
        );
    }
    // Frames the client sealed open to their plaintext, in order.
    let mut client = Channel::new(&KEY, session, Direction::ClientToServer).expect("channel");
    let mut server = Channel::new(&KEY, session, Direction::ServerToClient).expect("channel");
    for chunk in data.chunks(97) {
        let Ok(Frame::Sealed { seq, nonce, ct }) = client.seal(chunk) else {
            panic!("sealing failed");
        };
        let plain = server
            .open(seq, &nonce.0, &ct)
            .expect("a sealed frame opens");
        assert_eq!(plain, chunk);
    }
});
