//! Terminal output made safe to store, log or show elsewhere.
//!
//! Whatever a pane printed may carry escape sequences that would recolour,
//! retitle, move the cursor of, or write the clipboard of whoever reads the
//! log later. This removes them all: CSI, OSC, DCS/SOS/PM/APC strings, other
//! escapes, and C0/C1 controls except `\n` and `\t`. A sequence cut off at the
//! end of the input is dropped whole, and no input makes it panic.

const ESC: char = '\u{1b}';
const BEL: char = '\u{7}';
const ST_C1: char = '\u{9c}';

/// The printable text of `bytes` (invalid UTF-8 becomes U+FFFD).
pub fn sanitize(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' | '\t' => out.push(c),
            ESC => match chars.next() {
                Some('[') => skip_csi(&mut chars),
                Some(']') => skip_string(&mut chars, true),
                Some('P' | 'X' | '^' | '_') => skip_string(&mut chars, false),
                Some(next) => skip_escape(next, &mut chars),
                None => {}
            },
            '\u{9b}' => skip_csi(&mut chars),
            '\u{9d}' => skip_string(&mut chars, true),
            '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}' => skip_string(&mut chars, false),
            c if is_control(c) => {}
            c => out.push(c),
        }
    }
    out
}

fn is_control(c: char) -> bool {
    c.is_control() // C0, DEL and C1
}

type Chars<'a> = std::iter::Peekable<std::str::Chars<'a>>;

/// Parameters and intermediates (0x20–0x3F), then one final (0x40–0x7E). A
/// character outside those ends the sequence without being eaten, so a
/// broken CSI cannot swallow the text after it.
fn skip_csi(chars: &mut Chars<'_>) {
    while let Some(&c) = chars.peek() {
        match c {
            '\u{20}'..='\u{3f}' => {
                chars.next();
            }
            '\u{40}'..='\u{7e}' => {
                chars.next();
                return;
            }
            _ => return,
        }
    }
}

/// An OSC (ended by BEL or ST) or a DCS/SOS/PM/APC string (ended by ST).
/// Everything up to the terminator is dropped, to the end if none comes.
fn skip_string(chars: &mut Chars<'_>, bel_ends: bool) {
    while let Some(c) = chars.next() {
        match c {
            BEL if bel_ends => return,
            ST_C1 => return,
            ESC => {
                if chars.peek() == Some(&'\\') {
                    chars.next();
                }
                return;
            }
            _ => {}
        }
    }
}

/// `ESC` followed by intermediates (0x20–0x2F) and one final (0x30–0x7E),
/// e.g. `ESC ( B` or `ESC 7`.
fn skip_escape(first: char, chars: &mut Chars<'_>) {
    if !('\u{20}'..='\u{2f}').contains(&first) {
        return;
    }
    while let Some(&c) = chars.peek() {
        match c {
            '\u{20}'..='\u{2f}' => {
                chars.next();
            }
            '\u{30}'..='\u{7e}' => {
                chars.next();
                return;
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sanitize;

    #[test]
    fn keeps_text_newlines_and_tabs() {
        assert_eq!(sanitize(b"a\tb\nc d"), "a\tb\nc d");
        assert_eq!(sanitize("héllo ✓".as_bytes()), "héllo ✓");
    }

    #[test]
    fn removes_csi_sequences() {
        assert_eq!(sanitize(b"\x1b[1;31mred\x1b[0m plain"), "red plain");
        assert_eq!(sanitize(b"\x1b[?2004hprompt\x1b[?2004l"), "prompt");
        assert_eq!(sanitize(b"a\x1b[2Jb\x1b[10;20Hc"), "abc");
    }

    #[test]
    fn removes_osc_ended_by_bel_or_st() {
        assert_eq!(sanitize(b"\x1b]0;title\x07text"), "text");
        assert_eq!(sanitize(b"\x1b]52;c;aGk=\x1b\\after"), "after");
        assert_eq!(sanitize(b"\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\"), "link");
    }

    #[test]
    fn removes_dcs_sos_pm_apc() {
        assert_eq!(sanitize(b"\x1bPq#0;2;0;0;0\x1b\\x"), "x");
        assert_eq!(sanitize(b"\x1b_Gf=100;AAAA\x1b\\y"), "y");
        assert_eq!(sanitize(b"\x1bXsos\x1b\\\x1b^pm\x1b\\z"), "z");
        // BEL does not end a DCS: the whole string up to ST goes.
        assert_eq!(sanitize(b"\x1bPa\x07b\x1b\\c"), "c");
    }

    #[test]
    fn removes_other_escapes_and_controls() {
        assert_eq!(sanitize(b"\x1b(Bab\x1b7c\x1b8"), "abc");
        assert_eq!(sanitize(b"a\rb\x08c\x00d\x7fe\x07"), "abcde");
        assert_eq!(sanitize("x\u{9b}31my\u{85}z".as_bytes()), "xyz");
        assert_eq!(sanitize("\u{9d}0;t\u{9c}w".as_bytes()), "w");
    }

    #[test]
    fn truncated_sequences_at_the_end_are_dropped() {
        assert_eq!(sanitize(b"ok\x1b"), "ok");
        assert_eq!(sanitize(b"ok\x1b["), "ok");
        assert_eq!(sanitize(b"ok\x1b[12;3"), "ok");
        assert_eq!(sanitize(b"ok\x1b]0;unterminated title"), "ok");
        assert_eq!(sanitize(b"ok\x1bP"), "ok");
        assert_eq!(sanitize(b"ok\x1b("), "ok");
    }

    #[test]
    fn a_broken_csi_does_not_swallow_following_text() {
        assert_eq!(sanitize(b"\x1b[12\nnext"), "\nnext");
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        assert_eq!(sanitize(b"a\xffb\xc3"), "a\u{fffd}b\u{fffd}");
    }

    #[test]
    fn never_panics_and_never_leaves_controls_on_any_short_input() {
        // Every sequence of up to three bytes from an alphabet of the bytes
        // that matter to the state machine.
        let alphabet: &[u8] = b"\x1b\x07\x9c\x9b\xc2[]P\\;0a\n\r\x80\xff(";
        let mut input = Vec::new();
        for &a in alphabet {
            for &b in alphabet {
                for &c in alphabet {
                    input.clear();
                    input.extend_from_slice(&[a, b, c]);
                    let out = sanitize(&input);
                    assert!(out.chars().all(|ch| ch == '\n' || ch == '\t' || !ch.is_control()), "{input:?} -> {out:?}");
                }
            }
        }
    }
}
