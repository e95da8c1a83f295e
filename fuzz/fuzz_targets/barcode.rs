//! A grayscale image as `verify` decodes it (from a PNG or a PDF page): the DataMatrix reader
//! finds a symbol or says there is none, never panics (the decoder below it has panicked on
//! crafted symbols; docs/FUZZING.md). The first two bytes give the size (1 to 96 each way).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [w, h, rest @ ..] = data else {
        return;
    };
    let (w, h) = (u32::from(*w % 96) + 1, u32::from(*h % 96) + 1);
    let pixels = usize::try_from(w * h).expect("small");
    let mut luma = rest.to_vec();
    luma.resize(pixels, 255);
    let _ = stampline_label::decode_luma(w, h, &luma);
});
