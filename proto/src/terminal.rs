//! Terminals on the wire (docs/TERMINALS.md): the capability map, bindings
//! (a link from a session, or nothing, to one terminal window or pane; the
//! daemon's own PTY terminals are bindings of the terminal `pty`), their
//! requests and events, and the binary frames of `GET /ws/terminal/{id}`.

use crate::ids::SessionId;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

wire_enum!(
    /// A kind of terminal the daemon can drive.
    TerminalKind {
        /// The daemon's own pseudo-terminals, shown in the browser.
        Pty => "pty",
        Tmux => "tmux",
        Kitty => "kitty",
        Wezterm => "wezterm",
        Konsole => "konsole",
        Tilix => "tilix",
        Alacritty => "alacritty",
    }
);

/// What a terminal lets the daemon do. The UI offers only these.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TerminalCapabilities {
    pub spawn: bool,
    pub split: bool,
    pub focus: bool,
    pub send_text: bool,
    pub read_text: bool,
    pub clipboard_read: bool,
    pub clipboard_write: bool,
    /// The binding's cwd follows OSC 7 (and 9;9) in the terminal's output.
    pub cwd_sync: bool,
    pub bracketed_paste: bool,
    pub max_clipboard_kb: u32,
}

/// One entry of the capability map (`GET /api/v1/terminals`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TerminalView {
    pub terminal: TerminalKind,
    /// Its program is on the daemon's PATH.
    pub installed: bool,
    /// An instance is running that the daemon can find.
    pub running: bool,
    /// Its control socket or bus answered.
    pub reachable: bool,
    pub version: Option<String>,
    pub capabilities: TerminalCapabilities,
    /// It cannot be controlled until a user grants consent.
    pub requires_opt_in: bool,
    pub consent_granted_at: Option<String>,
    pub notes: Vec<String>,
    pub risk_flags: Vec<String>,
    pub discovered_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TerminalList {
    pub terminals: Vec<TerminalView>,
}

wire_enum!(
    BindingState {
        /// Its window or pane (or PTY child) is there and may be acted on.
        Open => "open",
        /// Its process ended; for `pty`, with its exit status, after every
        /// byte it wrote.
        Exited => "exited",
        /// Its pane is gone, or could not be proven the same one (after a
        /// restart of the daemon, a `pty` child is gone with it).
        Lost => "lost",
        /// Closed through the API.
        Closed => "closed",
    }
);

/// How a process ended: its exit code, or the signal that ended it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ExitView {
    pub code: Option<i32>,
    pub signal: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TerminalSize {
    pub cols: u16,
    pub rows: u16,
}

/// A `pty` terminal's output, as byte offsets in its stream: `start` is the
/// oldest byte still kept in the scrollback, `end` the next to come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OutputRange {
    pub start: u64,
    pub end: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BindingView {
    /// `b_` and 12 hex digits.
    pub binding_id: String,
    pub terminal: TerminalKind,
    pub session_id: Option<SessionId>,
    /// Where it is: `pty://b_…`, `tmux://%3`, `kitty://window/7`.
    pub ipc_endpoint: String,
    pub pid: Option<u32>,
    pub labels: BTreeMap<String, String>,
    /// What was started in it (empty: the user's shell).
    pub command: Vec<String>,
    pub cwd: String,
    pub state: BindingState,
    /// Set once it has `exited`.
    pub exit: Option<ExitView>,
    /// Why it is `lost` or `closed`.
    pub reason: Option<String>,
    /// Whether it runs inside its session's jail.
    pub jailed: bool,
    /// `pty` only.
    pub size: Option<TerminalSize>,
    /// `pty` only.
    pub output: Option<OutputRange>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BindingList {
    pub bindings: Vec<BindingView>,
}

wire_enum!(
    Placement {
        Window => "window",
        Tab => "tab",
        Split => "split",
    }
);

/// `POST /api/v1/terminals/bindings`: start something in a terminal and
/// bind it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpawnTerminalRequest {
    pub terminal: Option<TerminalKind>,
    /// Bind it to this session: it starts in the session's cwd (and jail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<SessionId>,
    /// Absolute; defaults to the session's cwd, or the daemon's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Program and arguments; empty starts the user's shell.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    /// For `placement: split`: the binding whose pane is split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_of: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `pty` only: the size it starts at (80x24 when not given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cols: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u16>,
}

/// `POST /api/v1/terminals/bindings/{id}/send`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendTextRequest {
    pub text: String,
    /// Send it as a paste (bracketed where the app enabled it).
    #[serde(default)]
    pub paste: bool,
    /// Press Enter after it.
    #[serde(default)]
    pub enter: bool,
}

/// `POST /api/v1/terminals/bindings/{id}/resize` (`pty` only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResizeRequest {
    pub cols: u16,
    pub rows: u16,
}

/// `GET /api/v1/terminals/bindings/{id}/text`: what the terminal shows, or
/// for `pty` its whole retained scrollback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TerminalText {
    pub binding_id: String,
    /// As UTF-8, invalid bytes replaced.
    pub text: String,
    /// `pty` only: the offsets the text covers.
    pub output: Option<OutputRange>,
}

/// `POST /api/v1/terminals/bindings/{id}/cwd`: the binding's working
/// directory, as a shell hook would report it (absolute, at most 4096
/// bytes, no control characters).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CwdRequest {
    pub path: String,
}

/// `POST /api/v1/terminals/clipboard`: text for the clipboard, through the
/// OS clipboard (`wl-copy`, `xclip`, `pbcopy`) or, with `binding_id`,
/// through that binding's terminal: OSC 52 to the screens showing a `pty`
/// terminal, tmux's paste buffer and OSC 52 to the clients attached to a
/// tmux pane's session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClipboardWrite {
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding_id: Option<String>,
}

/// The clipboard's text (`GET /api/v1/terminals/clipboard`), or what was
/// written to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ClipboardContent {
    pub text: String,
    /// `wl-copy`, `xclip`, `pbcopy`; for a binding `osc52` (a `pty`
    /// terminal's screens) or `tmux` (its paste buffer).
    pub via: String,
    /// How many OSC 52 sequences carried it (payloads over 75 KB are cut).
    pub sequences: Option<usize>,
    /// For a binding: how many screens it was sent to (the sockets open on a
    /// `pty` terminal, the terminals attached to a tmux session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screens: Option<usize>,
}

/// `GET /api/v1/terminals/clipboard`: the OS clipboard, or with
/// `binding_id` the one that binding's terminal keeps (tmux's paste buffer).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClipboardQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding_id: Option<String>,
}

/// `GET /api/v1/terminals/bindings`: absent filters match everything.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BindingsQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<BindingState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal: Option<TerminalKind>,
}

/// What `POST /api/v1/terminals/bindings` came to: 201 with the binding,
/// or 202 with the approval it waits for (a command in a plan-only
/// session); once the approval is accepted, the binding is made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SpawnOutcome {
    /// `bound` or `awaiting_approval`.
    pub outcome: String,
    pub binding: Option<BindingView>,
    pub approval: Option<crate::ApprovalView>,
}

/// What an action on a binding came to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ActionDone {
    pub binding: BindingView,
    /// `done`, or `awaiting_approval` with the approval that waits.
    pub outcome: String,
    pub approval_id: Option<String>,
}

// ---- events: on the topic of the binding's session, or `system` ----

/// `termbridge:binding`: a binding was made, or its state changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TerminalBinding {
    pub binding: BindingView,
}

/// `termbridge:binding_lost`: its pane is gone, or is not provably the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BindingLost {
    pub binding_id: String,
    pub terminal: TerminalKind,
    pub session_id: Option<SessionId>,
    pub reason: String,
}

/// `termbridge:action`: an action carried out on a binding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TerminalAction {
    pub binding_id: String,
    pub terminal: TerminalKind,
    pub session_id: Option<SessionId>,
    /// `spawn`, `send_text`, `read_text`, `focus`, `resize`, `close`, …
    pub action: String,
    /// What allowed it: `allowed` (nothing to ask), `approved`, `full-access`.
    pub decision: String,
    pub latency_ms: f64,
    /// Sanitized: no escape sequence reaches the log.
    pub detail: String,
}

/// `termbridge:denied`: an action refused, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TerminalDenied {
    pub binding_id: Option<String>,
    pub terminal: TerminalKind,
    pub session_id: Option<SessionId>,
    pub action: String,
    pub reason: String,
}

/// `termbridge:capability_update`: a terminal's entry in the map changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CapabilityUpdate {
    pub terminal: TerminalView,
}

// ---- GET /ws/terminal/{id}: binary frames ----

/// The first frame on a terminal socket (JSON, after [`frame::HELLO`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TerminalHello {
    pub binding_id: String,
    /// The offset the replay starts at: the `from` asked for, or the oldest
    /// byte kept if that is later (then `start > from` tells what was lost).
    pub from: u64,
    pub output: OutputRange,
    pub state: BindingState,
    pub size: Option<TerminalSize>,
}

/// The last frame before the close (JSON, after [`frame::EXIT`]): every
/// byte before `end` has been sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TerminalExit {
    pub state: BindingState,
    pub exit: Option<ExitView>,
    pub end: u64,
    pub reason: Option<String>,
}

/// The frames of `GET /ws/terminal/{id}`: one type byte, then its body.
pub mod frame {
    /// Server → client: a big-endian u64 offset, then the bytes from it.
    pub const OUTPUT: u8 = 0x01;
    /// Server → client: a [`super::TerminalHello`] as JSON.
    pub const HELLO: u8 = 0x02;
    /// Server → client: a [`super::TerminalExit`] as JSON; the close follows.
    pub const EXIT: u8 = 0x03;
    /// Server → client: OSC 52 sequences (`ESC ] 52 ; c ; base64 ESC \`,
    /// one or more; text over 75 KB is cut into several, to be joined) for
    /// the client to put on its own clipboard. Live only: never stored in
    /// the scrollback, never replayed, and not counted in the offsets.
    pub const CLIPBOARD: u8 = 0x04;
    /// Client → server: bytes for the terminal's input.
    pub const INPUT: u8 = 0x10;
    /// Client → server: big-endian u16 cols, then u16 rows.
    pub const RESIZE: u8 = 0x11;
    /// Client → server: a big-endian u64, the offset rendered so far.
    pub const ACK: u8 = 0x12;
}

/// A frame a client sends on a terminal socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminalClientFrame {
    Input(Vec<u8>),
    Resize { cols: u16, rows: u16 },
    Ack(u64),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("an empty frame")]
    Empty,
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
    #[error("a frame of type 0x{kind:02x} must have a {expected}-byte body, got {got}")]
    BadLength { kind: u8, expected: usize, got: usize },
}

impl TerminalClientFrame {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            TerminalClientFrame::Input(bytes) => {
                let mut out = Vec::with_capacity(bytes.len() + 1);
                out.push(frame::INPUT);
                out.extend_from_slice(bytes);
                out
            }
            TerminalClientFrame::Resize { cols, rows } => {
                let mut out = vec![frame::RESIZE];
                out.extend_from_slice(&cols.to_be_bytes());
                out.extend_from_slice(&rows.to_be_bytes());
                out
            }
            TerminalClientFrame::Ack(offset) => {
                let mut out = vec![frame::ACK];
                out.extend_from_slice(&offset.to_be_bytes());
                out
            }
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<TerminalClientFrame, FrameError> {
        let (&kind, body) = bytes.split_first().ok_or(FrameError::Empty)?;
        let exact = |n: usize| {
            if body.len() == n {
                Ok(())
            } else {
                Err(FrameError::BadLength { kind, expected: n, got: body.len() })
            }
        };
        match kind {
            frame::INPUT => Ok(TerminalClientFrame::Input(body.to_vec())),
            frame::RESIZE => {
                exact(4)?;
                Ok(TerminalClientFrame::Resize {
                    cols: u16::from_be_bytes([body[0], body[1]]),
                    rows: u16::from_be_bytes([body[2], body[3]]),
                })
            }
            frame::ACK => {
                exact(8)?;
                let mut n = [0u8; 8];
                n.copy_from_slice(body);
                Ok(TerminalClientFrame::Ack(u64::from_be_bytes(n)))
            }
            other => Err(FrameError::UnknownType(other)),
        }
    }
}

/// A frame the daemon sends on a terminal socket.
#[derive(Debug, Clone, PartialEq)]
pub enum TerminalServerFrame {
    Output {
        offset: u64,
        bytes: Vec<u8>,
    },
    Hello(TerminalHello),
    Exit(TerminalExit),
    /// OSC 52 sequences for the client's clipboard ([`frame::CLIPBOARD`]).
    Clipboard(Vec<u8>),
}

impl TerminalServerFrame {
    /// An output frame without copying the bytes twice.
    pub fn output(offset: u64, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len() + 9);
        out.push(frame::OUTPUT);
        out.extend_from_slice(&offset.to_be_bytes());
        out.extend_from_slice(bytes);
        out
    }

    pub fn encode(&self) -> Vec<u8> {
        fn json(kind: u8, value: &impl Serialize) -> Vec<u8> {
            let mut out = vec![kind];
            // Serializing these plain structs cannot fail.
            out.extend_from_slice(&serde_json::to_vec(value).unwrap_or_default());
            out
        }
        match self {
            TerminalServerFrame::Output { offset, bytes } => TerminalServerFrame::output(*offset, bytes),
            TerminalServerFrame::Hello(h) => json(frame::HELLO, h),
            TerminalServerFrame::Exit(e) => json(frame::EXIT, e),
            TerminalServerFrame::Clipboard(sequences) => {
                let mut out = Vec::with_capacity(sequences.len() + 1);
                out.push(frame::CLIPBOARD);
                out.extend_from_slice(sequences);
                out
            }
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<TerminalServerFrame, FrameError> {
        let (&kind, body) = bytes.split_first().ok_or(FrameError::Empty)?;
        let bad_json = |_| FrameError::BadLength { kind, expected: 0, got: body.len() };
        match kind {
            frame::OUTPUT => {
                if body.len() < 8 {
                    return Err(FrameError::BadLength { kind, expected: 8, got: body.len() });
                }
                let mut n = [0u8; 8];
                n.copy_from_slice(&body[..8]);
                Ok(TerminalServerFrame::Output { offset: u64::from_be_bytes(n), bytes: body[8..].to_vec() })
            }
            frame::HELLO => serde_json::from_slice(body).map(TerminalServerFrame::Hello).map_err(bad_json),
            frame::EXIT => serde_json::from_slice(body).map(TerminalServerFrame::Exit).map_err(bad_json),
            frame::CLIPBOARD => Ok(TerminalServerFrame::Clipboard(body.to_vec())),
            other => Err(FrameError::UnknownType(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_frames_round_trip_and_bad_ones_are_named() {
        for f in [
            TerminalClientFrame::Input(b"ls\r".to_vec()),
            TerminalClientFrame::Resize { cols: 132, rows: 43 },
            TerminalClientFrame::Ack(1 << 40),
        ] {
            assert_eq!(TerminalClientFrame::decode(&f.encode()), Ok(f));
        }
        assert_eq!(TerminalClientFrame::decode(&[]), Err(FrameError::Empty));
        assert_eq!(TerminalClientFrame::decode(&[0x7f]), Err(FrameError::UnknownType(0x7f)));
        assert_eq!(
            TerminalClientFrame::decode(&[frame::RESIZE, 0, 80]),
            Err(FrameError::BadLength { kind: frame::RESIZE, expected: 4, got: 2 })
        );
    }

    #[test]
    fn server_frames_round_trip() {
        let out = TerminalServerFrame::Output { offset: 7, bytes: b"\x1b[1mhi".to_vec() };
        assert_eq!(TerminalServerFrame::decode(&out.encode()), Ok(out));
        let exit = TerminalServerFrame::Exit(TerminalExit {
            state: BindingState::Exited,
            exit: Some(ExitView { code: Some(0), signal: None }),
            end: 9,
            reason: None,
        });
        assert_eq!(TerminalServerFrame::decode(&exit.encode()), Ok(exit));
        let clip = TerminalServerFrame::Clipboard(b"\x1b]52;c;aGk=\x1b\\".to_vec());
        assert_eq!(TerminalServerFrame::decode(&clip.encode()), Ok(clip));
    }
}
