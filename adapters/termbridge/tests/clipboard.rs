//! The OS clipboard through xclip on a private X server.

mod common;

use std::process::Command;
use std::time::Duration;

use bosun_termbridge::clipboard::{ClipboardTool, OsClipboard};
use bosun_termbridge::runner::IpcConfig;
use bosun_termbridge::TermError;
use common::{require, Xvfb};

#[tokio::test]
async fn write_then_read_back_through_xclip_and_refuse_oversize() {
    require("xclip");
    let xvfb = Xvfb::start();
    let ipc = IpcConfig { timeout: Duration::from_secs(5), retries: 0 };
    let clipboard = OsClipboard::detect(ipc, 64 * 1024, Some(xvfb.display.clone())).unwrap();
    assert_eq!(clipboard.tool(), ClipboardTool::Xclip);
    let text = "copied by bosun ✓\nsecond line";
    clipboard.write(text.as_bytes()).await.unwrap();
    // Read back by xclip itself, not only through the adapter.
    let out =
        Command::new("xclip").args(["-o", "-selection", "clipboard"]).env("DISPLAY", &xvfb.display).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), text);
    assert_eq!(clipboard.read().await.unwrap(), text.as_bytes());

    let big = vec![b'x'; 64 * 1024 + 1];
    assert!(matches!(clipboard.write(&big).await, Err(TermError::Invalid(_))));
    // What someone else put there that is too big is refused on read.
    let small = OsClipboard::detect(ipc, 4, Some(xvfb.display.clone())).unwrap();
    assert!(matches!(small.read().await, Err(TermError::Invalid(_))));
}
