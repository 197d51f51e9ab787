//! The paste guard on any text: it never panics, and what it reveals holds
//! nothing it would itself flag as invisible or an escape.
#![no_main]

use bosun_termbridge::paste_guard::{classify, reveal, PasteRisk};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = classify(text);
    let shown = reveal(text);
    let risks = classify(&shown);
    assert!(!risks.contains(&PasteRisk::Invisible), "{shown:?} still hides characters");
    assert!(!risks.contains(&PasteRisk::EscapeSequence), "{shown:?} still holds controls");
});
