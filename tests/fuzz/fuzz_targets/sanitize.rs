//! The ANSI sanitizer on any bytes: it never panics, and what it returns
//! holds no escape sequence or control character but `\n` and `\t`, and is
//! already clean (sanitizing it again changes nothing).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let clean = bosun_termbridge::sanitize::sanitize(data);
    for c in clean.chars() {
        assert!(!c.is_control() || c == '\n' || c == '\t', "control {c:?} left in {clean:?}");
    }
    assert_eq!(bosun_termbridge::sanitize::sanitize(clean.as_bytes()), clean);
});
