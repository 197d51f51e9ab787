//! The OSC parser on any output, fed in two pieces cut anywhere: it never
//! panics, and a cut changes nothing it finds.
#![no_main]

use bosun_termbridge::osc::OscParser;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let cut = data[0] as usize % data.len();
    let body = &data[1..];
    let whole = OscParser::new(4096).feed(body);
    let mut parser = OscParser::new(4096);
    let cut = cut.min(body.len());
    let mut pieces = parser.feed(&body[..cut]);
    pieces.extend(parser.feed(&body[cut..]));
    assert_eq!(whole, pieces);
    for event in whole {
        if let bosun_termbridge::osc::TerminalEvent::Cwd { path, .. } = event {
            assert!(!path.chars().any(char::is_control), "a control character in a cwd: {path:?}");
        }
    }
});
