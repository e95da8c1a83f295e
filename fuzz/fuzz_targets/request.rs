//! The plaintext of a sealed request (what a logged-in client sends): parsed or refused with a
//! code, never a panic; a request that parses, written back as JSON, parses to the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stampline_wire::parse_request;

fuzz_target!(|data: &[u8]| {
    if let Ok((request, _canonical)) = parse_request(data) {
        let (again, _) = parse_request(&request.to_json()).expect("a written request parses");
        assert_eq!(again, request, "a request changes through JSON");
    }
});
