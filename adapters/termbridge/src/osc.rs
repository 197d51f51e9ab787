//! A streaming reader of the terminal sequences Bosun acts on, in a pane's
//! output: the shell's working directory (OSC 7, OSC 9;9), clipboard writes
//! (OSC 52) and bracketed-paste mode switches (CSI ?2004 h/l).
//!
//! Output arrives in chunks cut anywhere (tmux `%output` lines, socket
//! reads), so the parser keeps its state between [`OscParser::feed`] calls.
//! Only 7-bit introducers and terminators are recognised: a raw 0x9C byte is
//! a UTF-8 continuation byte far more often than an ST. A sequence longer
//! than the configured bound is dropped whole rather than buffered.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// 1 MiB: a generous OSC 52 payload; larger ones are dropped.
pub const DEFAULT_MAX_SEQUENCE: usize = 1 << 20;
/// CSI parameters never need more; a longer one is not one we act on.
const MAX_CSI: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum TerminalEvent {
    /// The shell reported its working directory.
    Cwd { host: Option<String>, path: String },
    /// A program wrote the clipboard (`selection` as sent, e.g. `c`, `p`).
    ClipboardWrite { selection: String, data: Vec<u8> },
    /// A program asked to read the clipboard (`?` payload).
    ClipboardQuery { selection: String },
    /// Bracketed paste switched on (`true`) or off.
    BracketedPaste(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ground,
    Escape,
    Csi,
    Osc,
    OscEscape,
    /// DCS, SOS, PM, APC: skipped up to ST.
    Ignored,
    IgnoredEscape,
    /// An over-long OSC, skipped to its terminator.
    Oversize,
    OversizeEscape,
}

#[derive(Debug)]
pub struct OscParser {
    state: State,
    buffer: Vec<u8>,
    max_sequence: usize,
}

impl Default for OscParser {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_SEQUENCE)
    }
}

impl OscParser {
    pub fn new(max_sequence: usize) -> Self {
        OscParser { state: State::Ground, buffer: Vec::new(), max_sequence }
    }

    /// Reads one chunk; returns the events completed in it.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<TerminalEvent> {
        let mut events = Vec::new();
        for &byte in chunk {
            self.step(byte, &mut events);
        }
        events
    }

    fn step(&mut self, byte: u8, events: &mut Vec<TerminalEvent>) {
        const ESC: u8 = 0x1b;
        const BEL: u8 = 0x07;
        self.state = match (self.state, byte) {
            (State::Ground, ESC) => State::Escape,
            (State::Ground, _) => State::Ground,
            (State::Escape, b'[') => {
                self.buffer.clear();
                State::Csi
            }
            (State::Escape, b']') => {
                self.buffer.clear();
                State::Osc
            }
            (State::Escape, b'P' | b'X' | b'^' | b'_') => State::Ignored,
            (State::Escape, ESC) => State::Escape,
            (State::Escape, _) => State::Ground,
            (State::Csi, 0x20..=0x3f) => {
                if self.buffer.len() < MAX_CSI {
                    self.buffer.push(byte);
                }
                State::Csi
            }
            (State::Csi, 0x40..=0x7e) => {
                if self.buffer.len() < MAX_CSI {
                    if let Some(event) = csi_event(&self.buffer, byte) {
                        events.push(event);
                    }
                }
                self.buffer.clear();
                State::Ground
            }
            (State::Csi, ESC) => State::Escape,
            (State::Csi, _) => State::Ground,
            (State::Osc, BEL) => {
                self.finish_osc(events);
                State::Ground
            }
            (State::Osc, ESC) => State::OscEscape,
            (State::Osc, _) => {
                if self.buffer.len() >= self.max_sequence {
                    self.buffer = Vec::new();
                    State::Oversize
                } else {
                    self.buffer.push(byte);
                    State::Osc
                }
            }
            (State::OscEscape, b'\\') => {
                self.finish_osc(events);
                State::Ground
            }
            // ESC then anything else: the OSC was cut short; start over on
            // that escape (xterm does the same).
            (State::OscEscape, _) => {
                self.buffer.clear();
                after_escape(byte)
            }
            (State::Ignored, ESC) => State::IgnoredEscape,
            (State::Ignored, _) => State::Ignored,
            (State::IgnoredEscape, b'\\') => State::Ground,
            (State::IgnoredEscape, ESC) => State::IgnoredEscape,
            (State::IgnoredEscape, _) => State::Ignored,
            (State::Oversize, BEL) => State::Ground,
            (State::Oversize, ESC) => State::OversizeEscape,
            (State::Oversize, _) => State::Oversize,
            (State::OversizeEscape, b'\\') => State::Ground,
            (State::OversizeEscape, ESC) => State::OversizeEscape,
            (State::OversizeEscape, _) => State::Oversize,
        };
    }

    fn finish_osc(&mut self, events: &mut Vec<TerminalEvent>) {
        let body = std::mem::take(&mut self.buffer);
        if let Some(event) = osc_event(&body) {
            events.push(event);
        }
    }
}

/// Where an ESC followed by `byte` leads, as from `State::Escape`.
fn after_escape(byte: u8) -> State {
    {
        match byte {
            b'[' => State::Csi,
            b']' => State::Osc,
            b'P' | b'X' | b'^' | b'_' => State::Ignored,
            0x1b => State::Escape,
            _ => State::Ground,
        }
    }
}

fn csi_event(params: &[u8], final_byte: u8) -> Option<TerminalEvent> {
    let enable = match final_byte {
        b'h' => true,
        b'l' => false,
        _ => return None,
    };
    let private = params.strip_prefix(b"?")?;
    private.split(|&b| b == b';').any(|p| p == b"2004").then_some(TerminalEvent::BracketedPaste(enable))
}

fn osc_event(body: &[u8]) -> Option<TerminalEvent> {
    let (code, rest) = split_once(body, b';')?;
    match code {
        b"7" => parse_osc7(rest),
        b"9" => {
            let path = rest.strip_prefix(b"9;")?;
            let text = String::from_utf8_lossy(path);
            let path = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(&text);
            cwd_event(None, path.to_string())
        }
        b"52" => {
            let (selection, payload) = split_once(rest, b';')?;
            let selection = String::from_utf8_lossy(selection).into_owned();
            if payload == b"?" {
                return Some(TerminalEvent::ClipboardQuery { selection });
            }
            let data = base64::engine::general_purpose::STANDARD.decode(payload).ok()?;
            Some(TerminalEvent::ClipboardWrite { selection, data })
        }
        _ => None,
    }
}

/// `file://host/path`; the path is percent-decoded. An empty host (as in
/// `file:///tmp`) is `None`.
fn parse_osc7(uri: &[u8]) -> Option<TerminalEvent> {
    let rest = uri.strip_prefix(b"file://")?;
    let slash = rest.iter().position(|&b| b == b'/')?;
    let (host, path) = rest.split_at(slash);
    let host = (!host.is_empty()).then(|| String::from_utf8_lossy(host).into_owned());
    let path = percent_encoding::percent_decode(path).decode_utf8_lossy().into_owned();
    cwd_event(host, path)
}

/// A reported cwd, unless it is empty or holds a control character (raw,
/// or percent-encoded in OSC 7): such a path would carry escapes into
/// whatever shows it, and no shell reports one. Found by the `osc` fuzz
/// target (a SUB byte inside an OSC 9;9 path).
fn cwd_event(host: Option<String>, path: String) -> Option<TerminalEvent> {
    let control = |s: &str| s.chars().any(char::is_control);
    if path.is_empty() || control(&path) || host.as_deref().is_some_and(control) {
        return None;
    }
    Some(TerminalEvent::Cwd { host, path })
}

fn split_once(bytes: &[u8], separator: u8) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().position(|&b| b == separator)?;
    Some((&bytes[..at], &bytes[at + 1..]))
}

#[cfg(test)]
mod tests {
    use super::TerminalEvent::*;
    use super::*;

    fn cwd(host: Option<&str>, path: &str) -> TerminalEvent {
        Cwd { host: host.map(str::to_string), path: path.to_string() }
    }

    #[test]
    fn a_cwd_holding_a_control_character_is_dropped() {
        // The fuzz target's crash, kept: SUB inside an OSC 9;9 path.
        let input = b"\x1bb\x1b\\\x1b]9;9;\"\x1a/srv\"\x07\x1b\x01\x00\xff~]52;]52;cile://\xe80h";
        let events = OscParser::default().feed(input);
        assert!(!events.iter().any(|e| matches!(e, Cwd { .. })), "{events:?}");
        assert!(OscParser::default().feed(b"\x1b]7;file://h/tmp/a%0Ab\x07").is_empty());
        assert_eq!(OscParser::default().feed(b"\x1b]9;9;\"/srv\"\x07"), vec![cwd(None, "/srv")]);
    }

    #[test]
    fn osc7_with_bel_or_st_is_percent_decoded() {
        let mut parser = OscParser::default();
        assert_eq!(parser.feed(b"x\x1b]7;file://box/tmp/my%20dir\x07y"), vec![cwd(Some("box"), "/tmp/my dir")]);
        assert_eq!(parser.feed(b"\x1b]7;file:///h%C3%A9\x1b\\"), vec![cwd(None, "/hé")]);
    }

    #[test]
    fn osc_9_9_with_or_without_quotes() {
        let mut parser = OscParser::default();
        assert_eq!(parser.feed(b"\x1b]9;9;\"C:\\Users\\me\"\x1b\\"), vec![cwd(None, "C:\\Users\\me")]);
        assert_eq!(parser.feed(b"\x1b]9;9;/srv\x07"), vec![cwd(None, "/srv")]);
        assert!(parser.feed(b"\x1b]9;notify me\x07").is_empty());
    }

    #[test]
    fn state_survives_any_chunk_boundary() {
        let stream: &[u8] = b"ab\x1b]7;file://h/a%2Fb\x1b\\\x1b[?2004h\x1b]52;c;aGVsbG8=\x07\x1b[?2004l";
        let expected = vec![
            cwd(Some("h"), "/a/b"),
            BracketedPaste(true),
            ClipboardWrite { selection: "c".into(), data: b"hello".to_vec() },
            BracketedPaste(false),
        ];
        for cut in 0..stream.len() {
            let mut parser = OscParser::default();
            let mut events = parser.feed(&stream[..cut]);
            events.extend(parser.feed(&stream[cut..]));
            assert_eq!(events, expected, "cut at {cut}");
        }
        // And one byte at a time.
        let mut parser = OscParser::default();
        let events: Vec<_> = stream.iter().flat_map(|b| parser.feed(&[*b])).collect();
        assert_eq!(events, expected);
    }

    #[test]
    fn osc52_query_and_bad_base64() {
        let mut parser = OscParser::default();
        assert_eq!(parser.feed(b"\x1b]52;p;?\x07"), vec![ClipboardQuery { selection: "p".into() }]);
        assert!(parser.feed(b"\x1b]52;c;!!notbase64\x07").is_empty());
    }

    #[test]
    fn bracketed_paste_among_other_private_modes() {
        let mut parser = OscParser::default();
        assert_eq!(parser.feed(b"\x1b[?1049;2004h"), vec![BracketedPaste(true)]);
        assert!(parser.feed(b"\x1b[2004h\x1b[?20041h\x1b[?2004m").is_empty());
    }

    #[test]
    fn oversize_sequences_are_dropped_and_parsing_resumes() {
        let mut parser = OscParser::new(16);
        let mut input = b"\x1b]52;c;".to_vec();
        input.extend(std::iter::repeat_n(b'A', 100));
        input.extend_from_slice(b"\x07\x1b]7;file:///ok\x07");
        assert_eq!(parser.feed(&input), vec![cwd(None, "/ok")]);
    }

    #[test]
    fn dcs_strings_hide_what_looks_like_osc_inside() {
        let mut parser = OscParser::default();
        assert_eq!(
            parser.feed(b"\x1bP\x1b]7;file:///no\x07 still dcs\x1b\\\x1b]7;file:///yes\x07"),
            vec![cwd(None, "/yes")]
        );
    }

    #[test]
    fn an_interrupted_osc_restarts_on_the_new_escape() {
        let mut parser = OscParser::default();
        assert_eq!(parser.feed(b"\x1b]7;file:///cut\x1b]7;file:///whole\x07"), vec![cwd(None, "/whole")]);
        assert_eq!(parser.feed(b"\x1b]7;file:///cut\x1b[?2004h"), vec![BracketedPaste(true)]);
    }

    #[test]
    fn never_panics_on_short_inputs() {
        let alphabet: &[u8] = b"\x1b\x07\\[]P;79?2h5c\x9c";
        for &a in alphabet {
            for &b in alphabet {
                for &c in alphabet {
                    for &d in alphabet {
                        let mut parser = OscParser::new(4);
                        parser.feed(&[a, b]);
                        parser.feed(&[c, d]);
                    }
                }
            }
        }
    }
}
