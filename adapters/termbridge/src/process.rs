//! Checks on the processes behind panes, for terminals that report a pid
//! but not whether it still runs.

use crate::error::{Result, TermError};

pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    if pid <= 0 {
        return false;
    }
    // A zombie is not alive for us: its pane is closing.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next()) != Some("Z"),
        Err(_) => false,
    }
}

pub fn hang_up(pid: u32) -> Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| TermError::Ipc(format!("pid {pid} out of range")))?;
    if pid <= 0 {
        return Err(TermError::PaneGone);
    }
    // SAFETY: kill(2) only signals; a pid that is gone gives ESRCH.
    let rc = unsafe { libc::kill(pid, libc::SIGHUP) };
    if rc == 0 {
        Ok(())
    } else {
        Err(TermError::PaneGone)
    }
}
