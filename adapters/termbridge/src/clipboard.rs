//! The clipboard, two ways: OSC 52 sequences for a terminal to carry to its
//! own clipboard, and the OS clipboard through its usual command-line tools.

use std::path::PathBuf;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TermError};
use crate::runner::{find_on_path, CommandRunner, Invocation, IpcConfig};

/// The largest base64 payload put in one OSC 52 sequence: several terminals
/// (and tmux) drop longer ones.
pub const OSC52_MAX_PAYLOAD: usize = 75 * 1024;
/// The most data one OSC 52 sequence carries (its base64 is
/// [`OSC52_MAX_PAYLOAD`]).
pub const OSC52_MAX_RAW: usize = OSC52_MAX_PAYLOAD / 4 * 3;

/// OSC 52 sequences that set `selection` (`c` clipboard, `p` primary) to
/// `data`. Data whose base64 is over [`OSC52_MAX_PAYLOAD`] is cut into
/// several sequences; each chunk is whole base64 (cut at a multiple of 3
/// bytes), so a terminal that appends consecutive writes gets the whole
/// text and one that replaces keeps a valid last chunk. kitty 0.26 replaces
/// (tests/kitty.rs): callers should keep to one sequence, i.e. at most
/// [`OSC52_MAX_RAW`] bytes, for it. Selection characters other than
/// `cpqs0-7` are dropped, so `selection` cannot end the sequence early.
pub fn osc52_sequences(selection: &str, data: &[u8]) -> Vec<Vec<u8>> {
    let selection: String = selection.chars().filter(|c| matches!(c, 'c' | 'p' | 'q' | 's' | '0'..='7')).collect();
    let selection = if selection.is_empty() { "c".to_string() } else { selection };
    let encode = |chunk: &[u8]| {
        let mut sequence = format!("\x1b]52;{selection};").into_bytes();
        sequence.extend(base64::engine::general_purpose::STANDARD.encode(chunk).into_bytes());
        sequence.extend_from_slice(b"\x1b\\");
        sequence
    };
    if data.is_empty() {
        return vec![encode(data)];
    }
    data.chunks(OSC52_MAX_RAW).map(encode).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClipboardTool {
    /// `wl-copy` / `wl-paste` (Wayland).
    WlClipboard,
    /// `xclip -selection clipboard` (X11).
    Xclip,
    /// `pbcopy` / `pbpaste` (macOS).
    Pasteboard,
}

impl ClipboardTool {
    fn programs(self) -> (&'static str, &'static str) {
        match self {
            ClipboardTool::WlClipboard => ("wl-copy", "wl-paste"),
            ClipboardTool::Xclip => ("xclip", "xclip"),
            ClipboardTool::Pasteboard => ("pbcopy", "pbpaste"),
        }
    }
}

/// 1 MiB: more than anyone pastes on purpose.
pub const DEFAULT_CLIPBOARD_LIMIT: usize = 1 << 20;

/// The OS clipboard, through the tool found for this session.
#[derive(Debug, Clone)]
pub struct OsClipboard {
    tool: ClipboardTool,
    copy: PathBuf,
    paste: PathBuf,
    runner: CommandRunner,
    max_bytes: usize,
    display: Option<String>,
}

impl OsClipboard {
    /// The tool that fits this session: Wayland's when `WAYLAND_DISPLAY` is
    /// set, xclip when `DISPLAY` is (or `display` is given), the pasteboard on
    /// macOS; `NotSupported` when none is installed.
    pub fn detect(ipc: IpcConfig, max_bytes: usize, display: Option<String>) -> Result<Self> {
        let mut candidates = Vec::new();
        if std::env::var_os("WAYLAND_DISPLAY").is_some() {
            candidates.push(ClipboardTool::WlClipboard);
        }
        if display.is_some() || std::env::var_os("DISPLAY").is_some() {
            candidates.push(ClipboardTool::Xclip);
        }
        if cfg!(target_os = "macos") {
            candidates.push(ClipboardTool::Pasteboard);
        }
        for tool in candidates {
            if let Ok(clipboard) = Self::with_tool(tool, ipc, max_bytes, display.clone()) {
                return Ok(clipboard);
            }
        }
        Err(TermError::not_supported("clipboard", "the OS clipboard (no wl-copy, xclip or pbcopy for this session)"))
    }

    pub fn with_tool(tool: ClipboardTool, ipc: IpcConfig, max_bytes: usize, display: Option<String>) -> Result<Self> {
        let (copy, paste) = tool.programs();
        let missing = |p: &str| TermError::not_supported("clipboard", format!("{p} (not on PATH)"));
        let copy = find_on_path(copy).ok_or_else(|| missing(copy))?;
        let paste = find_on_path(paste).ok_or_else(|| missing(paste))?;
        Ok(OsClipboard { tool, copy, paste, runner: CommandRunner::new("clipboard", ipc), max_bytes, display })
    }

    pub fn tool(&self) -> ClipboardTool {
        self.tool
    }

    pub async fn write(&self, data: &[u8]) -> Result<()> {
        if data.len() > self.max_bytes {
            return Err(TermError::Invalid(format!(
                "{} bytes for the clipboard; at most {} are allowed",
                data.len(),
                self.max_bytes
            )));
        }
        let invocation = match self.tool {
            ClipboardTool::Xclip => Invocation::new(&self.copy).args(["-selection", "clipboard", "-in"]),
            ClipboardTool::WlClipboard | ClipboardTool::Pasteboard => Invocation::new(&self.copy),
        };
        // The copy tools fork a server holding the selection, which would
        // keep captured pipes open.
        let invocation = self.with_display(invocation).stdin(data.to_vec()).discard_output();
        self.runner.run_checked(&invocation).await.map(drop)
    }

    /// The clipboard's text, refused if over the size limit.
    pub async fn read(&self) -> Result<Vec<u8>> {
        let invocation = match self.tool {
            ClipboardTool::Xclip => Invocation::new(&self.paste).args(["-selection", "clipboard", "-out"]),
            ClipboardTool::WlClipboard => Invocation::new(&self.paste).arg("--no-newline"),
            ClipboardTool::Pasteboard => Invocation::new(&self.paste),
        };
        let output = self.runner.run_checked(&self.with_display(invocation)).await?;
        if output.stdout.len() > self.max_bytes {
            return Err(TermError::Invalid(format!("the clipboard holds more than {} bytes", self.max_bytes)));
        }
        Ok(output.stdout)
    }

    fn with_display(&self, invocation: Invocation) -> Invocation {
        match (&self.display, self.tool) {
            (Some(display), ClipboardTool::Xclip) => invocation.env("DISPLAY", display),
            _ => invocation,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::osc::{OscParser, TerminalEvent};

    #[test]
    fn small_payloads_are_one_sequence() {
        assert_eq!(osc52_sequences("c", b"hello"), vec![b"\x1b]52;c;aGVsbG8=\x1b\\".to_vec()]);
        assert_eq!(osc52_sequences("", b""), vec![b"\x1b]52;c;\x1b\\".to_vec()]);
    }

    #[test]
    fn the_selection_cannot_break_out_of_the_sequence() {
        assert_eq!(osc52_sequences("p\x07;\x1b", b"x"), vec![b"\x1b]52;p;eA==\x1b\\".to_vec()]);
    }

    #[test]
    fn large_payloads_are_batched_and_decode_back_to_the_whole() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let sequences = osc52_sequences("c", &data);
        // 57 600 raw bytes (76 800 of base64) a sequence.
        assert_eq!(sequences.len(), 4);
        let mut parser = OscParser::default();
        let mut decoded = Vec::new();
        for sequence in &sequences {
            // Each payload stays within the bound terminals accept.
            assert!(sequence.len() <= OSC52_MAX_PAYLOAD + 10, "{}", sequence.len());
            for event in parser.feed(sequence) {
                match event {
                    TerminalEvent::ClipboardWrite { selection, data } => {
                        assert_eq!(selection, "c");
                        decoded.extend(data);
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        assert_eq!(decoded, data);
    }
}
