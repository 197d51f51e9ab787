//! The processes below a shell, read from `/proc`, and how to kill them all
//! while the shell lives on.
//!
//! A persistent shell is not a process group the daemon made for one
//! command: everything it runs shares its group (and, in a jail, its pid
//! namespace), so an interrupt walks the parent links instead.

use std::collections::{BTreeSet, HashMap};

/// One process as `/proc/<pid>/stat` shows it.
#[derive(Debug, Clone, Copy)]
struct Entry {
    pid: u32,
    ppid: u32,
    zombie: bool,
}

fn read_entry(pid: u32) -> Option<Entry> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields resume after
    // the last ')'. Field 3 is the state, field 4 the parent.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some(Entry { pid, ppid, zombie: state == "Z" || state == "X" })
}

/// Every process's parent (zombies left out: they cannot be killed again,
/// and what they started has moved to another parent already).
fn children_map() -> HashMap<u32, Vec<u32>> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return children };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
        if let Some(entry) = read_entry(pid).filter(|e| !e.zombie) {
            children.entry(entry.ppid).or_default().push(entry.pid);
        }
    }
    children
}

/// The live processes below `root`, not `root` itself.
pub fn descendants(root: u32) -> BTreeSet<u32> {
    below(&children_map(), [root])
}

fn below(children: &HashMap<u32, Vec<u32>>, roots: impl IntoIterator<Item = u32>) -> BTreeSet<u32> {
    let mut found = BTreeSet::new();
    let mut stack: Vec<u32> = roots.into_iter().collect();
    while let Some(pid) = stack.pop() {
        for &child in children.get(&pid).into_iter().flatten() {
            if found.insert(child) {
                stack.push(child);
            }
        }
    }
    found
}

/// How many rounds of stopping new processes before giving up on a tree
/// that keeps growing (it cannot, once its parents are stopped).
const MAX_ROUNDS: usize = 50;

/// Kills every process below `root`, but not `root`: what a shell's command
/// started, in the foreground or in the background. Returns how many were
/// killed.
///
/// Killing a parent first would hand its children to init, out of reach of
/// this walk, so the tree is frozen first: each round stops (SIGSTOP) the
/// processes not seen yet, until a walk finds no new one (a stopped process
/// cannot fork), and only then is everything killed. A process that left
/// the tree before (`setsid` and its parent exiting) escapes; see the module
/// docs of [`crate::process`].
pub fn kill_descendants(root: u32) -> usize {
    let mut frozen: BTreeSet<u32> = BTreeSet::new();
    for _ in 0..MAX_ROUNDS {
        let children = children_map();
        let seen = below(&children, std::iter::once(root).chain(frozen.iter().copied()));
        let new: Vec<u32> = seen.difference(&frozen).copied().collect();
        if new.is_empty() {
            break;
        }
        for pid in new {
            signal(pid, libc::SIGSTOP);
            frozen.insert(pid);
        }
    }
    for &pid in &frozen {
        signal(pid, libc::SIGKILL);
    }
    frozen.len()
}

/// Sends `signal` to `pid`; a process already gone is not an error.
pub fn signal(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return };
    // Never 0, 1 or negative: those name groups or everyone.
    if pid <= 1 {
        return;
    }
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid, signal) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            tracing::warn!(pid, signal, error = %err, "could not signal a process below the shell");
        }
    }
}

/// Whether `pid` is a live process (not a zombie).
pub fn is_alive(pid: u32) -> bool {
    read_entry(pid).is_some_and(|e| !e.zombie)
}

/// `pid` as the innermost pid namespace it lives in sees it (the last field
/// of `NSpid`): what `$$` says inside a jail or container.
pub fn innermost_pid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
    line.split_whitespace().last()?.parse().ok()
}

/// `root` or the process below it that its own namespace calls `inner`: the
/// daemon-side pid of a jailed shell that reported `$$`. Without a pid
/// namespace in between, `$$` is the pid itself.
pub fn find_by_inner_pid(root: u32, inner: u32) -> Option<u32> {
    if innermost_pid(root) == Some(inner) {
        return Some(root);
    }
    descendants(root).into_iter().find(|&pid| innermost_pid(pid) == Some(inner))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn the_tree_below_a_shell_dies_and_the_shell_does_not() {
        // A shell with a foreground child that has a child of its own, and a
        // background job: three levels.
        let shell = Command::new("sh")
            .arg("-c")
            .arg("sleep 301 & sh -c 'sleep 302; true'; echo after")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let root = shell.id();
        wait_until("the tree", || descendants(root).len() >= 3);
        assert!(kill_descendants(root) >= 3);
        wait_until("the tree to die", || descendants(root).is_empty());
        // The shell carries on after its foreground job died.
        let out = shell.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout), "after\n");
    }

    #[test]
    fn pids_and_liveness() {
        let me = std::process::id();
        assert!(is_alive(me));
        assert_eq!(find_by_inner_pid(me, innermost_pid(me).unwrap()), Some(me));
        assert!(!is_alive(u32::MAX - 1));
    }
}
