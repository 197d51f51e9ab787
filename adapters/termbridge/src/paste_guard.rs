//! What a user should see before text is typed into their terminal.
//!
//! Text pasted into a shell can run commands the user did not read: a second
//! line runs as soon as it lands, invisible characters hide what a line
//! really says, and control characters can leave bracketed paste or drive the
//! terminal. `classify` names each of those; `reveal` shows the text with
//! them made visible, for a confirmation prompt.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PasteRisk {
    /// More than one line (one trailing line break does not count).
    MultiLine,
    /// Zero-width, bidi or other invisible formatting characters.
    Invisible,
    /// ESC or another C0/C1 control other than `\n`, `\t` and CR.
    EscapeSequence,
}

/// The risks in `text`, each at most once, in the order of [`PasteRisk`].
pub fn classify(text: &str) -> Vec<PasteRisk> {
    let mut risks = Vec::new();
    if is_multi_line(text) {
        risks.push(PasteRisk::MultiLine);
    }
    if text.chars().any(is_invisible) {
        risks.push(PasteRisk::Invisible);
    }
    if text.chars().any(is_escape_control) {
        risks.push(PasteRisk::EscapeSequence);
    }
    risks
}

fn is_line_break(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{2028}' | '\u{2029}')
}

fn is_multi_line(text: &str) -> bool {
    let body = text.strip_suffix("\r\n").or_else(|| text.strip_suffix(is_line_break)).unwrap_or(text);
    body.chars().any(is_line_break)
}

/// Characters that render as nothing (or reorder what is around them).
pub fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00ad}'                // soft hyphen
        | '\u{034f}'              // combining grapheme joiner
        | '\u{061c}'              // Arabic letter mark
        | '\u{115f}' | '\u{1160}' // Hangul fillers
        | '\u{17b4}' | '\u{17b5}'
        | '\u{180e}'              // Mongolian vowel separator
        | '\u{200b}'..='\u{200f}' // zero-width space/joiners, LRM, RLM
        | '\u{202a}'..='\u{202e}' // bidi embeddings and overrides
        | '\u{2060}'..='\u{2064}' // word joiner, invisible operators
        | '\u{2066}'..='\u{2069}' // bidi isolates
        | '\u{206a}'..='\u{206f}'
        | '\u{3164}'              // Hangul filler
        | '\u{feff}'              // BOM / zero-width no-break space
        | '\u{ffa0}'
        | '\u{fff9}'..='\u{fffb}' // interlinear annotations
        | '\u{e0000}'..='\u{e007f}' // tag characters
    )
}

fn is_escape_control(c: char) -> bool {
    c.is_control() && !matches!(c, '\n' | '\t' | '\r')
}

/// `text` with every risky character shown: `␛` for ESC, control pictures
/// for the other C0 controls, `⏎` before each line break, `⟨U+XXXX⟩` for
/// invisible characters and C1 controls. Line breaks are kept so the layout
/// still reads.
pub fn reveal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("⏎\n"),
            '\r' => out.push('␍'),
            '\t' => out.push('\t'),
            '\u{1b}' => out.push('␛'),
            '\u{7f}' => out.push('␡'),
            '\u{0}'..='\u{1f}' => {
                // U+2400 is the control picture of NUL, the others follow in order.
                out.push(char::from_u32(0x2400 + c as u32).unwrap_or('\u{fffd}'));
            }
            '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("⟨U+{:04X}⟩⏎\n", c as u32));
            }
            c if is_invisible(c) || c.is_control() => out.push_str(&format!("⟨U+{:04X}⟩", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::PasteRisk::*;
    use super::*;

    #[test]
    fn a_plain_line_is_safe_even_with_one_trailing_newline() {
        assert!(classify("ls -la").is_empty());
        assert!(classify("ls -la\n").is_empty());
        assert!(classify("ls -la\r\n").is_empty());
        assert!(classify("echo\tx\r").is_empty());
        assert!(classify("").is_empty());
    }

    #[test]
    fn more_than_one_line_is_multi_line() {
        assert_eq!(classify("a\nb"), vec![MultiLine]);
        assert_eq!(classify("a\n\n"), vec![MultiLine]);
        assert_eq!(classify("a\rrm -rf ~"), vec![MultiLine]);
        assert_eq!(classify("a\u{2028}b"), vec![MultiLine]);
    }

    #[test]
    fn zero_width_and_bidi_characters_are_invisible() {
        for c in
            ['\u{200b}', '\u{200f}', '\u{202a}', '\u{202e}', '\u{2060}', '\u{2064}', '\u{2066}', '\u{2069}', '\u{feff}']
        {
            assert_eq!(classify(&format!("ls{c}x")), vec![Invisible], "{:04X}", c as u32);
        }
        assert!(classify("\u{2065}").is_empty(), "U+2065 is unassigned, not a listed format character");
    }

    #[test]
    fn escape_and_other_controls_are_escape_sequences() {
        assert_eq!(classify("\x1b[201~rm -rf /"), vec![EscapeSequence]);
        assert_eq!(classify("a\x08b"), vec![EscapeSequence]);
        assert_eq!(classify("a\u{9b}b"), vec![EscapeSequence]);
        assert_eq!(classify("x\x00"), vec![EscapeSequence]);
    }

    #[test]
    fn several_risks_are_all_reported() {
        assert_eq!(classify("a\u{200b}\nb\x1b"), vec![MultiLine, Invisible, EscapeSequence]);
    }

    #[test]
    fn reveal_makes_every_risky_character_visible() {
        assert_eq!(reveal("rm\u{200b} -rf\n"), "rm⟨U+200B⟩ -rf⏎\n");
        assert_eq!(reveal("\x1b[201~x"), "␛[201~x");
        assert_eq!(reveal("a\rb\x00\x07\x7f"), "a␍b␀␇␡");
        assert_eq!(reveal("\u{202e}txt.exe"), "⟨U+202E⟩txt.exe");
        assert_eq!(reveal("c\u{85}d"), "c⟨U+0085⟩d");
        assert_eq!(reveal("plain\ttext"), "plain\ttext");
    }
}
