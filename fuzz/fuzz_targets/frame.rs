//! A link frame as the server and the client read it (before and after login): any text either
//! parses or is refused, never a panic; what parses encodes and parses back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stampline_wire::{decode_frame, encode_frame};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(frame) = decode_frame(text) {
        let again = decode_frame(&encode_frame(&frame)).expect("an encoded frame parses");
        assert_eq!(
            encode_frame(&again),
            encode_frame(&frame),
            "a frame changes through encode and decode"
        );
    }
});
