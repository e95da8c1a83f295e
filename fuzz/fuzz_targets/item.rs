//! Printed item bytes (what a barcode or a raw file gives a verifier): parsed or refused, never a
//! panic; an item that parses encodes to bytes that parse to the same item.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stampline_items::Item;

fuzz_target!(|data: &[u8]| {
    if let Ok(item) = Item::parse(data) {
        let bytes = item.to_bytes().expect("a parsed item encodes");
        let again = Item::parse(&bytes).expect("an encoded item parses");
        assert_eq!(again, item, "an item changes through its bytes");
        // A signature check with a key that is no P-256 key fails, never panics.
        assert!(item.verify(&[0u8; 91]).is_err());
    }
});
