//! What the driver writes to its shell and how it finds, in the shell's
//! output, where each command ends.
//!
//! Each command is sent as one line:
//!
//! ```text
//! trap '<report "x$?" and $PWD, then the stderr marker>' EXIT; trap '' USR1;
//! __bosun_run() { trap 'return 130' USR1; command eval '<command>'; set -- "$?"; trap '' USR1; return "$1"; };
//! __bosun_run </dev/null && set -- 0 || set -- "$?"; trap '' USR1;
//! command printf … M "$1" "$PWD" M; command printf … M M >&2
//! ```
//!
//! where `M` is `__bosun_<nonce>__` with a fresh random nonce per command.
//! Why this shape:
//! - The command is one single-quoted word given to `eval`, so whatever it
//!   holds (an `if` without `fi`, an unterminated here-document, a trailing
//!   backslash) cannot swallow the lines that follow it. `command eval`
//!   rather than `eval`: a syntax error in a special built-in would end a
//!   non-interactive shell; behind `command` it only sets `$?` to 2.
//! - `eval` runs in the shell itself, so `cd`, `export`, functions persist.
//! - Its stdin is `/dev/null`: the shell's own stdin is this protocol.
//! - It runs inside a function whose SIGUSR1 trap is `return 130`: an
//!   interrupt signals the shell, then kills what runs below it, and once
//!   the foreground process is dead the trap ends the whole command, so
//!   nothing after it in the list or loop runs (a loop of builtins stops
//!   too). Outside the function SIGUSR1 is ignored, so a late signal cannot
//!   run `return` at the top level (which ends dash). Only the innermost
//!   function returns: a command calling its own function stops only that
//!   function's part. Checked with dash, bash `--posix` and busybox ash.
//! - The top level takes the status with `&& … ||`, which `set -e` leaves
//!   alone, and keeps it in `$1` (positional parameters of the top level
//!   are never visible to commands, which run inside the function).
//! - The end is reported on both pipes, so the command is over only once both
//!   its stdout and its stderr are drained. The stdout report is
//!   `M <status> ' ' <pwd> M`, the stderr one `M M`.
//! - The EXIT trap reports for a command that ends the shell (`exit 3`,
//!   `set -e` and a failure), with an `x` before the status.
//! - The marker is never written out whole in the line itself, only as three
//!   `printf` arguments, so `set -x` or `set -v` traces of the line (on
//!   stderr) do not contain it.
//! - `command printf`: a user's function named `printf` cannot hide ours
//!   (`trap`, `eval`, `set` and `return` are special built-ins, found before
//!   functions).

use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The constant parts of a marker around the nonce.
const MARKER_PREFIX: &str = "__bosun_";
const MARKER_SUFFIX: &str = "__";
/// Random bytes in a nonce (written as twice as many hex digits).
const NONCE_BYTES: usize = 16;
/// The longest report accepted between two markers: a status and a path.
const MAX_REPORT: usize = 64 * 1024;

/// A per-command secret: output cannot end a command early without it, and
/// it is drawn only once the command text is fixed.
#[derive(Clone, PartialEq, Eq)]
pub struct Nonce(String);

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Short enough not to leak into logs as a usable marker.
        write!(f, "Nonce({}…)", &self.0[..4.min(self.0.len())])
    }
}

impl Nonce {
    pub fn fresh() -> Result<Nonce, getrandom::Error> {
        let mut bytes = [0u8; NONCE_BYTES];
        getrandom::fill(&mut bytes)?;
        Ok(Nonce(bytes.iter().map(|b| format!("{b:02x}")).collect()))
    }

    /// The marker this nonce makes, as it appears in the output.
    pub fn marker(&self) -> Vec<u8> {
        format!("{MARKER_PREFIX}{}{MARKER_SUFFIX}", self.0).into_bytes()
    }

    /// The marker as three shell words (`printf '%s%s%s'` joins them).
    fn words(&self) -> String {
        format!("{MARKER_PREFIX} {} {MARKER_SUFFIX}", self.0)
    }
}

#[cfg(test)]
impl Nonce {
    pub(crate) fn fixed(hex: &str) -> Nonce {
        Nonce(hex.to_string())
    }
}

/// `text` as one single-quoted shell word.
pub fn quote(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 2);
    out.push(b'\'');
    for &b in text {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
}

/// The signal that ends the running command (see the module docs).
pub const ABORT_SIGNAL: libc::c_int = libc::SIGUSR1;

/// The line that runs `command` in the shell and reports its end.
pub fn command_frame(command: &str, nonce: &Nonce) -> Vec<u8> {
    let m = nonce.words();
    let mut line = format!(
        "trap 'command printf \"%s%s%sx%s %s%s%s%s\" {m} \"$?\" \"$PWD\" {m}; \
         command printf \"%s%s%s%s%s%s\" {m} {m} >&2' EXIT; trap '' USR1; \
         __bosun_run() {{ trap 'return 130' USR1; command eval "
    )
    .into_bytes();
    line.extend_from_slice(&quote(command.as_bytes()));
    line.extend_from_slice(
        format!(
            "; set -- \"$?\"; trap '' USR1; return \"$1\"; }}; \
             __bosun_run </dev/null && set -- 0 || set -- \"$?\"; trap '' USR1; \
             command printf '%s%s%s%s %s%s%s%s' {m} \"$1\" \"$PWD\" {m}; \
             command printf '%s%s%s%s%s%s' {m} {m} >&2\n"
        )
        .as_bytes(),
    );
    line
}

/// The first line a new shell gets: back to `restore` if it can, then a
/// report of its pid (`$$`, in its own pid namespace) and directory.
pub fn hello_frame(nonce: &Nonce, restore: Option<&Path>) -> Vec<u8> {
    let m = nonce.words();
    let mut line = b"trap '' USR1; ".to_vec();
    if let Some(dir) = restore {
        line.extend_from_slice(b"cd -- ");
        line.extend_from_slice(&quote(dir.as_os_str().as_bytes()));
        line.extend_from_slice(b" 2>/dev/null; ");
    }
    line.extend_from_slice(
        format!(
            "command printf '%s%s%s%s %s%s%s%s' {m} \"$$\" \"$PWD\" {m}; \
             command printf '%s%s%s%s%s%s' {m} {m} >&2\n"
        )
        .as_bytes(),
    );
    line
}

/// What a stdout report says: `[x]<number> <pwd>`. The number is the
/// command's status (or, for the hello, the shell's pid); `exited` when the
/// EXIT trap sent it, so the shell is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub exited: bool,
    pub number: i64,
    pub pwd: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("the shell's end-of-command report is longer than {MAX_REPORT} bytes")]
    ReportTooLong,
    #[error("the shell's end-of-command report is not understood: {0:?}")]
    BadReport(String),
}

pub fn parse_report(bytes: &[u8]) -> Result<Report, ProtocolError> {
    let bad = || ProtocolError::BadReport(String::from_utf8_lossy(bytes).into_owned());
    let (exited, rest) = match bytes.split_first() {
        Some((b'x', rest)) => (true, rest),
        _ => (false, bytes),
    };
    let space = rest.iter().position(|&b| b == b' ').ok_or_else(bad)?;
    let number = std::str::from_utf8(&rest[..space]).ok().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    Ok(Report { exited, number, pwd: rest[space + 1..].to_vec() })
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ScanState {
    /// Output of the command; the marker is looked for.
    Output,
    /// The first marker was seen: the report runs to the next one.
    Report,
    /// The report is in; whatever follows belongs to the next command.
    Done,
}

/// What one [`SentinelScanner::push`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scanned {
    /// Command output that cannot be part of a marker: safe to pass on.
    pub output: Vec<u8>,
    /// The report between the two markers, once they are both in.
    pub report: Option<Vec<u8>>,
}

/// Splits one pipe's byte stream into command output and the end report.
///
/// The marker may come anywhere (after output without a final newline), in
/// pieces split across reads; a tail of output that could be the start of
/// the marker is held back until the next bytes decide.
#[derive(Debug)]
pub struct SentinelScanner {
    marker: Vec<u8>,
    buf: Vec<u8>,
    state: ScanState,
}

impl SentinelScanner {
    /// A scanner between commands: it finds nothing until
    /// [`SentinelScanner::arm`]ed, and keeps what it is given.
    pub fn idle() -> SentinelScanner {
        SentinelScanner { marker: Vec::new(), buf: Vec::new(), state: ScanState::Done }
    }

    /// Starts looking for `marker`. Bytes kept from before (what followed the
    /// last report) are output of this command: they come out of the next
    /// `push`.
    pub fn arm(&mut self, marker: Vec<u8>) {
        self.marker = marker;
        self.state = ScanState::Output;
    }

    #[cfg(test)]
    pub fn is_done(&self) -> bool {
        self.state == ScanState::Done
    }

    pub fn push(&mut self, data: &[u8]) -> Result<Scanned, ProtocolError> {
        self.buf.extend_from_slice(data);
        let mut scanned = Scanned::default();
        loop {
            match self.state {
                ScanState::Done => return Ok(scanned),
                ScanState::Output => match find(&self.buf, &self.marker) {
                    Some(at) => {
                        scanned.output.extend_from_slice(&self.buf[..at]);
                        self.buf.drain(..at + self.marker.len());
                        self.state = ScanState::Report;
                    }
                    None => {
                        let keep = partial_marker_at_end(&self.buf, &self.marker);
                        let emit = self.buf.len() - keep;
                        scanned.output.extend(self.buf.drain(..emit));
                        return Ok(scanned);
                    }
                },
                ScanState::Report => match find(&self.buf, &self.marker) {
                    Some(at) => {
                        scanned.report = Some(self.buf[..at].to_vec());
                        self.buf.drain(..at + self.marker.len());
                        self.state = ScanState::Done;
                    }
                    None if self.buf.len() > MAX_REPORT => return Err(ProtocolError::ReportTooLong),
                    None => return Ok(scanned),
                },
            }
        }
    }

    /// Bytes held back because they might start a marker, given up on at the
    /// end of the stream.
    pub fn take_held(&mut self) -> Vec<u8> {
        if self.state == ScanState::Output {
            std::mem::take(&mut self.buf)
        } else {
            Vec::new()
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, _) = needle.split_first()?;
    let last_start = haystack.len().checked_sub(needle.len())?;
    (0..=last_start).find(|&i| haystack[i] == first && haystack[i..].starts_with(needle))
}

/// How many bytes at the end of `buf` are a proper prefix of `marker`.
fn partial_marker_at_end(buf: &[u8], marker: &[u8]) -> usize {
    let longest = marker.len().saturating_sub(1).min(buf.len());
    (1..=longest).rev().find(|&k| buf.ends_with(&marker[..k])).unwrap_or(0)
}

/// Turns a byte stream into text as it comes, without cutting a UTF-8
/// sequence in two between pieces; invalid bytes become U+FFFD.
#[derive(Debug, Default)]
pub struct Utf8Decoder {
    carry: Vec<u8>,
}

impl Utf8Decoder {
    pub fn decode(&mut self, bytes: &[u8]) -> String {
        let mut input = std::mem::take(&mut self.carry);
        input.extend_from_slice(bytes);
        let mut out = String::with_capacity(input.len());
        let mut rest = &input[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    out.push_str(text);
                    return out;
                }
                Err(err) => {
                    let (valid, after) = rest.split_at(err.valid_up_to());
                    // Valid by the definition of `valid_up_to`.
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match err.error_len() {
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[bad..];
                        }
                        None => {
                            // A sequence cut at the end: wait for the rest.
                            self.carry = after.to_vec();
                            return out;
                        }
                    }
                }
            }
        }
    }

    /// What is left at the end of the stream (an unfinished sequence).
    pub fn finish(&mut self) -> String {
        let carry = std::mem::take(&mut self.carry);
        String::from_utf8_lossy(&carry).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef";

    fn marker() -> Vec<u8> {
        Nonce::fixed(HEX).marker()
    }

    fn armed() -> SentinelScanner {
        let mut s = SentinelScanner::idle();
        s.arm(marker());
        s
    }

    /// Feeds `pieces` one after the other; all output, and the report.
    fn scan(pieces: &[&[u8]]) -> (Vec<u8>, Option<Vec<u8>>) {
        let mut s = armed();
        let mut out = Vec::new();
        let mut report = None;
        for piece in pieces {
            let scanned = s.push(piece).unwrap();
            out.extend(scanned.output);
            if scanned.report.is_some() {
                assert!(report.is_none(), "two reports");
                report = scanned.report;
            }
        }
        (out, report)
    }

    fn with_marker(before: &str, report: &str, after: &str) -> Vec<u8> {
        let m = String::from_utf8(marker()).unwrap();
        format!("{before}{m}{report}{m}{after}").into_bytes()
    }

    #[test]
    fn nonces_are_fresh_and_markers_carry_them() {
        let a = Nonce::fresh().unwrap();
        let b = Nonce::fresh().unwrap();
        assert_ne!(a, b);
        let m = String::from_utf8(a.marker()).unwrap();
        assert!(m.starts_with("__bosun_") && m.ends_with("__") && m.len() == 8 + 32 + 2, "{m}");
        assert!(!format!("{a:?}").contains(&a.0), "the debug form shows the whole nonce");
    }

    #[test]
    fn output_without_a_newline_then_the_marker() {
        let (out, report) = scan(&[&with_marker("no newline", "0 /tmp", "")]);
        assert_eq!(out, b"no newline");
        assert_eq!(report.unwrap(), b"0 /tmp");
    }

    #[test]
    fn a_marker_split_across_reads_at_every_point() {
        let whole = with_marker("before\n", "3 /a b", "");
        for cut1 in 0..whole.len() {
            for cut2 in [cut1, (cut1 + 7).min(whole.len()), whole.len()] {
                let (out, report) = scan(&[&whole[..cut1], &whole[cut1..cut2], &whole[cut2..]]);
                assert_eq!(out, b"before\n", "cuts {cut1}/{cut2}");
                assert_eq!(report.as_deref(), Some(&b"3 /a b"[..]), "cuts {cut1}/{cut2}");
            }
        }
    }

    #[test]
    fn a_partial_marker_is_held_back_then_released_when_it_is_not_one() {
        let mut s = armed();
        let m = marker();
        let scanned = s.push(&[b"out ", &m[..10]].concat()).unwrap();
        assert_eq!(scanned.output, b"out ", "a possible marker start went out");
        let scanned = s.push(b"not it").unwrap();
        assert_eq!(scanned.output, [&m[..10], b"not it"].concat());
        assert_eq!(scanned.report, None);
    }

    #[test]
    fn markers_with_other_nonces_are_output() {
        let fake = Nonce::fixed("ffffffffffffffffffffffffffffffff").marker();
        let fake = String::from_utf8(fake).unwrap();
        let printed = format!("{fake}0 /tmp{fake}\n__bosun_{}__ __bosun___ %s%s%s", &HEX[..31]);
        let (out, report) = scan(&[printed.as_bytes(), &with_marker("", "0 /", "")]);
        assert_eq!(out, printed.as_bytes());
        assert_eq!(report.unwrap(), b"0 /");
    }

    #[test]
    fn what_follows_the_report_stays_for_the_next_command() {
        let mut s = armed();
        let scanned = s.push(&with_marker("a", "0 /", "late output")).unwrap();
        assert_eq!((scanned.output, scanned.report), (b"a".to_vec(), Some(b"0 /".to_vec())));
        assert!(s.is_done());
        assert_eq!(s.push(b" more").unwrap(), Scanned::default());
        s.arm(Nonce::fixed(&HEX.replace('0', "9")).marker());
        assert_eq!(s.push(b"").unwrap().output, b"late output more");
    }

    #[test]
    fn an_endless_report_is_an_error() {
        let mut s = armed();
        s.push(&marker()).unwrap();
        assert_eq!(s.push(&vec![b'a'; MAX_REPORT + 1]), Err(ProtocolError::ReportTooLong));
    }

    #[test]
    fn held_bytes_are_given_up_at_the_end() {
        let mut s = armed();
        let m = marker();
        assert_eq!(s.push(&m[..5]).unwrap().output, b"");
        assert_eq!(s.take_held(), &m[..5]);
    }

    #[test]
    fn non_utf8_output_passes_through_the_scanner_untouched() {
        let (out, report) = scan(&[b"\xff\xfe", &with_marker("\u{e9}", "0 /", "")]);
        assert_eq!(out, b"\xff\xfe\xc3\xa9");
        assert!(report.is_some());
    }

    #[test]
    fn reports_parse() {
        assert_eq!(
            parse_report(b"0 /tmp/a b").unwrap(),
            Report { exited: false, number: 0, pwd: b"/tmp/a b".to_vec() }
        );
        assert_eq!(parse_report(b"x3 /").unwrap(), Report { exited: true, number: 3, pwd: b"/".to_vec() });
        assert_eq!(parse_report(b"42 ").unwrap().pwd, b"");
        assert!(parse_report(b"zz /").is_err());
        assert!(parse_report(b"0").is_err());
    }

    #[test]
    fn decoder_keeps_characters_whole_across_pieces() {
        let text = "aé€😀z".as_bytes();
        for cut in 0..text.len() {
            let mut d = Utf8Decoder::default();
            let mut out = d.decode(&text[..cut]);
            out.push_str(&d.decode(&text[cut..]));
            out.push_str(&d.finish());
            assert_eq!(out, "aé€😀z", "cut at {cut}");
        }
    }

    #[test]
    fn decoder_replaces_invalid_bytes_and_an_unfinished_tail() {
        let mut d = Utf8Decoder::default();
        assert_eq!(d.decode(b"a\xffb\xe2\x82"), "a\u{fffd}b");
        assert_eq!(d.finish(), "\u{fffd}");
        assert_eq!(d.decode(b"\x80\x80ok"), "\u{fffd}\u{fffd}ok");
    }

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(quote(b"it's"), b"'it'\\''s'");
        assert_eq!(quote(b""), b"''");
    }

    #[test]
    fn the_frame_never_spells_the_marker_out() {
        let nonce = Nonce::fixed(HEX);
        let m = marker();
        let frame = command_frame("echo hi", &nonce);
        assert!(find(&frame, &m).is_none());
        assert!(find(&hello_frame(&nonce, Some(Path::new("/tmp/x"))), &m).is_none());
        assert!(frame.ends_with(b"\n"));
    }
}
