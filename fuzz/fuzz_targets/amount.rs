//! Dollar amounts as every command and form takes them: parsed or refused, never a panic; an
//! amount that parses prints as dollars that parse back to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stampline_money::Amount;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(amount) = Amount::parse_dollars(text) {
        let shown = amount.to_string();
        let again = Amount::parse_dollars(shown.trim_start_matches('$')).expect("shown parses");
        assert_eq!(again, amount, "{text:?} → {shown}");
        let _ = amount.check_words();
        let _ = amount.with_separators();
    }
});
