//! The bubblewrap jail a session created with `"sandbox":"bwrap"` runs in.
//!
//! A [`Jail`] turns "run `program` in `cwd`" into "run `bwrap <mounts> --
//! program` in `cwd`": the host read-only, the session's cwd (and, for an
//! agent, its state dirs) read-write, a private `/tmp`, the daemon's data dir
//! (bare clones, other sessions' worktrees, the store) covered by an empty
//! tmpfs, and every namespace unshared, the network's too unless the session
//! asks for it. Resource limits are set with `setrlimit` between fork and
//! exec, so bwrap and everything it starts inherit them.
//!
//! Known limits: a worktree's `.git` file points into the hidden data dir,
//! so `git` inside the jail does not work (the daemon's file API diffs and
//! commits from outside); memory is capped by address space per process,
//! not by a cgroup.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use tokio::process::Command;

/// The name of the package that provides `bwrap`, for error messages.
pub const BWRAP_PACKAGE: &str = "bubblewrap";

/// Resource limits applied to everything in a jail. `None` leaves a limit as
/// the daemon has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// CPU seconds (RLIMIT_CPU): a runaway loop is killed with SIGXCPU/SIGKILL.
    pub cpu_seconds: Option<u64>,
    /// Address space in bytes (RLIMIT_AS).
    pub address_space: Option<u64>,
    /// Processes of the jail's user (RLIMIT_NPROC): stops fork bombs.
    pub processes: Option<u64>,
}

impl Limits {
    /// For one command the demo agent runs: it should not need more.
    pub const COMMAND: Limits = Limits { cpu_seconds: Some(600), address_space: Some(8 << 30), processes: Some(4096) };
    /// For a session's long-lived `sh` (the `shell` provider): the caps of a
    /// command, since every command it forks inherits them and each process
    /// counts its own CPU time and address space. The shell's own CPU time
    /// (builtins only) adds up over the session; a shell that spends it all
    /// is killed and the next command starts a new one.
    pub const SHELL: Limits = Limits::COMMAND;
    /// For a long-lived agent process: it lives for many turns, so CPU time
    /// adds up, and JavaScript runtimes reserve large address ranges up front;
    /// only the process cap applies.
    pub const AGENT: Limits = Limits { cpu_seconds: None, address_space: None, processes: Some(4096) };
}

/// How a session's processes are confined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jail {
    /// The daemon's data dir, hidden inside the jail.
    data_dir: PathBuf,
    bwrap: PathBuf,
    /// Whether the jail shares the host's network namespace.
    network: bool,
    /// Host paths the jail may write besides its cwd: the agent's own state
    /// (`~/.codex`...), which it cannot run without.
    writable: Vec<PathBuf>,
    /// Host paths bound read-only over the private `/tmp`: the agent's own
    /// program, wherever it is installed (see [`program_dir`]).
    readable: Vec<PathBuf>,
    /// Variables of the daemon's environment no jailed process may see (the
    /// push token's), even an agent that otherwise inherits the daemon's.
    withheld: Vec<String>,
}

/// What a jailed process gets of the daemon's environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JailEnv {
    /// A command or a shell: only [`BASIC_ENV`], nothing the daemon was
    /// started with for itself.
    Basic,
    /// An agent: the daemon's environment (where its API key may be) minus
    /// what the jail withholds.
    Agent,
}

/// The variables a jailed command or shell keeps (and any `LC_*`).
pub const BASIC_ENV: &[&str] = &["PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TERM", "TZ"];

impl Jail {
    /// A bubblewrap jail hiding `data_dir`, or `None` when `bwrap` is not on
    /// `PATH`.
    pub fn bwrap(data_dir: &Path) -> Option<Jail> {
        let bwrap = bwrap_path()?;
        Some(Jail {
            data_dir: data_dir.to_path_buf(),
            bwrap,
            network: false,
            writable: Vec::new(),
            readable: Vec::new(),
            withheld: Vec::new(),
        })
    }

    /// The same jail with the host's network (`true`) or none at all.
    pub fn with_network(self, network: bool) -> Jail {
        Jail { network, ..self }
    }

    pub fn network(&self) -> bool {
        self.network
    }

    /// The same jail, also able to write `paths` (which must exist: bwrap
    /// binds them). Paths inside the data dir stay hidden.
    pub fn with_writable(self, paths: Vec<PathBuf>) -> Jail {
        Jail { writable: paths, ..self }
    }

    /// The same jail, also able to read `paths` where the jail would hide
    /// them (under `/tmp`). Paths inside the data dir stay hidden.
    pub fn with_readable(self, paths: Vec<PathBuf>) -> Jail {
        Jail { readable: paths, ..self }
    }

    /// The same jail, keeping `vars` of the daemon's environment from every
    /// process in it.
    pub fn withholding(self, vars: Vec<String>) -> Jail {
        Jail { withheld: vars, ..self }
    }

    /// A command that runs `program` inside the jail, with `cwd` its only
    /// writable directory (besides a private `/tmp`). Arguments for `program`
    /// are added by the caller after this returns.
    pub fn command(&self, program: impl AsRef<OsStr>, cwd: &Path, limits: Limits, env: JailEnv) -> Command {
        let mut cmd = Command::new(&self.bwrap);
        cmd.args(self.args(cwd)).arg("--").arg(program).current_dir(cwd);
        match env {
            JailEnv::Basic => {
                cmd.env_clear();
                let kept = std::env::vars_os().filter(|(name, _)| {
                    let name = name.to_string_lossy();
                    BASIC_ENV.contains(&name.as_ref()) || name.starts_with("LC_")
                });
                cmd.envs(kept);
            }
            JailEnv::Agent => {}
        }
        for name in &self.withheld {
            cmd.env_remove(name);
        }
        // SAFETY: the closure only calls setrlimit, which is async-signal-safe,
        // and touches no memory shared with the parent.
        unsafe {
            cmd.pre_exec(move || apply_limits(limits));
        }
        cmd
    }

    /// The command line that runs `program` inside the jail on a terminal
    /// of its own (a PTY terminal of the session): bwrap, its options, `--`,
    /// the program. Unlike [`Jail::command`] it keeps the terminal as the
    /// jailed tree's controlling terminal (no `--new-session`): the PTY is
    /// the jail's own, so a keystroke pushed into it (TIOCSTI) lands where
    /// its own output goes, nowhere else, and job control keeps working.
    /// The environment is the caller's to set ([`BASIC_ENV`] is what a
    /// shell in the jail should see); rlimits are not applied.
    pub fn terminal_command(&self, program: impl AsRef<OsStr>, cwd: &Path) -> Vec<std::ffi::OsString> {
        let mut argv: Vec<std::ffi::OsString> = vec![self.bwrap.clone().into_os_string()];
        argv.extend(self.args(cwd).into_iter().filter(|a| *a != OsStr::new("--new-session")).map(OsStr::to_os_string));
        argv.push("--".into());
        argv.push(program.as_ref().to_os_string());
        argv
    }

    /// The environment a jailed shell is given ([`JailEnv::Basic`]).
    pub fn basic_env() -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
        std::env::vars_os()
            .filter(|(name, _)| {
                let name = name.to_string_lossy();
                BASIC_ENV.contains(&name.as_ref()) || name.starts_with("LC_")
            })
            .collect()
    }

    /// The bwrap options, in mount order: later mounts cover earlier ones.
    fn args<'a>(&'a self, cwd: &'a Path) -> Vec<&'a OsStr> {
        let mut args: Vec<&'a OsStr> = Vec::new();
        let mut push = |parts: &[&'a OsStr]| args.extend_from_slice(parts);
        let s = |s: &'static str| OsStr::new(s);
        push(&[s("--ro-bind"), s("/"), s("/"), s("--dev"), s("/dev"), s("--proc"), s("/proc")]);
        push(&[s("--tmpfs"), s("/tmp")]);
        // Before the cwd, so a program dir that holds the cwd does not make
        // it read-only again.
        for path in &self.readable {
            push(&[s("--ro-bind"), path.as_os_str(), path.as_os_str()]);
        }
        push(&[s("--bind"), cwd.as_os_str(), cwd.as_os_str()]);
        for path in &self.writable {
            push(&[s("--bind"), path.as_os_str(), path.as_os_str()]);
        }
        // After the cwd, so a cwd that contains the data dir does not expose
        // it again; the worktrees dir is inside the data dir, so one tmpfs
        // hides the store and every session's worktree.
        push(&[s("--tmpfs"), self.data_dir.as_os_str()]);
        if cwd.starts_with(&self.data_dir) {
            // The session's own worktree lives under the data dir: bring it
            // back over the tmpfs.
            push(&[s("--bind"), cwd.as_os_str(), cwd.as_os_str()]);
        }
        push(&[s("--chdir"), cwd.as_os_str()]);
        // No network: `--unshare-all` includes the network namespace, where
        // only a loopback that is down exists.
        push(&[s("--unshare-all"), s("--die-with-parent")]);
        if self.network {
            // The session's policy opens the network: keep every other
            // namespace private, share the host's network one.
            push(&[s("--share-net")]);
        }
        // A new session keeps a jailed process from pushing keystrokes into
        // the daemon's terminal (TIOCSTI). It also moves the jailed tree out
        // of our process group, but killing the group still kills bwrap, and
        // with it the whole pid namespace (`--die-with-parent` and pid 1's
        // death), so interrupts still reach every jailed process.
        push(&[s("--new-session")]);
        args
    }
}

/// What an agent's jail must show of the host for `program` to run: the
/// directory it is in or, for a program inside an npm install, the whole
/// outermost `node_modules` (a native binary's helpers and a script's
/// dependencies sit beside it there). Symlinks are resolved first, since
/// bwrap binds what they point to. Only paths the jail hides are returned:
/// everything outside `/tmp` is visible (read-only) already.
pub fn program_dir(program: &Path) -> Option<PathBuf> {
    let real = std::fs::canonicalize(program).ok()?;
    let node_modules = real.ancestors().filter(|a| a.file_name() == Some(OsStr::new("node_modules"))).last();
    let dir = node_modules.or_else(|| real.parent())?;
    (dir.starts_with("/tmp") && dir != Path::new("/tmp")).then(|| dir.to_path_buf())
}

fn apply_limits(limits: Limits) -> std::io::Result<()> {
    let pairs = [
        (libc::RLIMIT_CPU, limits.cpu_seconds),
        (libc::RLIMIT_AS, limits.address_space),
        (libc::RLIMIT_NPROC, limits.processes),
    ];
    for (resource, value) in pairs {
        let Some(value) = value else { continue };
        let limit = libc::rlimit { rlim_cur: value as libc::rlim_t, rlim_max: value as libc::rlim_t };
        // SAFETY: setrlimit reads the struct we pass and nothing else.
        if unsafe { libc::setrlimit(resource, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Where `bwrap` is on `PATH`, if anywhere.
pub fn bwrap_path() -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("bwrap")).find(|candidate| {
        std::fs::metadata(candidate).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tests/run installs bubblewrap: a missing one fails these tests.
    fn jail(data_dir: &Path) -> Jail {
        Jail::bwrap(data_dir).expect("bwrap is not installed: tests/run installs it (apt-get install bubblewrap)")
    }

    async fn run(jail: &Jail, cwd: &Path, script: &str) -> std::process::Output {
        let mut cmd = jail.command("sh", cwd, Limits::COMMAND, JailEnv::Basic);
        cmd.arg("-c").arg(script);
        cmd.output().await.expect("bwrap runs")
    }

    #[tokio::test]
    async fn cwd_is_writable_and_the_rest_is_not() {
        let outside = tempfile::tempdir().expect("tempdir");
        let data = tempfile::tempdir().expect("tempdir");
        let cwd = data.path().join("worktrees").join("s_1");
        std::fs::create_dir_all(&cwd).expect("mkdir");
        std::fs::write(data.path().join("secret"), "x").expect("write");
        let jail = jail(data.path());
        let out = run(&jail, &cwd, "touch inside && pwd").await;
        assert!(out.status.success(), "{out:?}");
        assert!(cwd.join("inside").exists());
        let out = run(&jail, &cwd, &format!("touch {}/x", outside.path().display())).await;
        assert!(!out.status.success());
        assert!(!outside.path().join("x").exists());
        let out = run(&jail, &cwd, &format!("ls -A {}", data.path().display())).await;
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "worktrees", "{out:?}");
    }

    #[tokio::test]
    async fn limits_reach_jailed_processes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let jail = jail(dir.path());
        let out = run(&jail, dir.path(), "grep -E '^Max (cpu time|processes)' /proc/self/limits").await;
        let text = String::from_utf8_lossy(&out.stdout);
        let soft: Vec<&str> = text.lines().filter_map(|l| l.split_whitespace().nth(3)).collect();
        assert_eq!(soft, ["600", "4096"], "{out:?}");
    }

    #[tokio::test]
    async fn an_agent_started_in_the_jail_talks_over_its_pipes_and_dies_with_its_group() {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let dir = tempfile::tempdir().expect("tempdir");
        let jail = jail(dir.path());
        let no_env: [(&str, &str); 0] = [];
        // A sleep with an argument unique to this test, to find it in /proc:
        // jailed processes run in a session (and group) of their own.
        let marker = format!("296.{}", std::process::id());
        let script = format!("read line; echo \"$line\"; exec sleep {marker}");
        let mut agent = crate::process::spawn_piped_in_group("sh", ["-c", &script], no_env, dir.path(), Some(&jail))
            .expect("spawn jailed sh");
        agent.stdin.write_all(b"hello\n").await.expect("write");
        let mut line = String::new();
        BufReader::new(&mut agent.stdout).read_line(&mut line).await.expect("read");
        assert_eq!(line, "hello\n");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !sleep_is_live(&marker) {
            assert!(std::time::Instant::now() < deadline, "the jailed sleep never started");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        drop(agent.group);
        let status = agent.child.wait().await.expect("wait");
        assert!(!status.success());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while sleep_is_live(&marker) {
            assert!(std::time::Instant::now() < deadline, "the jailed sleep outlived its group");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn program_dir_is_what_the_jail_would_hide() {
        let dir = tempfile::Builder::new().prefix("bosun-program").tempdir_in("/tmp").expect("tempdir");
        let native = dir.path().join("agents/node_modules/@x/agent-linux/bin/agent");
        let plain = dir.path().join("bin/tool");
        for program in [&native, &plain] {
            std::fs::create_dir_all(program.parent().expect("parent")).expect("mkdir");
            std::fs::write(program, "").expect("write");
        }
        let link = dir.path().join("agents/node_modules/.bin/agent");
        std::fs::create_dir_all(link.parent().expect("parent")).expect("mkdir");
        std::os::unix::fs::symlink(&native, &link).expect("symlink");
        let real = std::fs::canonicalize(dir.path()).expect("canonicalize");
        assert_eq!(program_dir(&native), Some(real.join("agents/node_modules")));
        assert_eq!(program_dir(&link), Some(real.join("agents/node_modules")));
        assert_eq!(program_dir(&plain), Some(real.join("bin")));
        // Visible anyway, or not there at all: nothing to bind.
        assert_eq!(program_dir(Path::new("/bin/sh")), None);
        assert_eq!(program_dir(&dir.path().join("missing")), None);
    }

    #[tokio::test]
    async fn a_program_under_tmp_runs_in_the_jail_read_only() {
        let dir = tempfile::Builder::new().prefix("bosun-program").tempdir_in("/tmp").expect("tempdir");
        let program = dir.path().join("bin/hello");
        std::fs::create_dir_all(program.parent().expect("parent")).expect("mkdir");
        std::fs::write(&program, "#!/bin/sh\necho hello from $0\n").expect("write");
        std::fs::set_permissions(&program, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        // Inside the readable dir: the cwd must stay writable all the same.
        let cwd = dir.path().join("bin/work");
        std::fs::create_dir_all(&cwd).expect("mkdir");
        let data = tempfile::tempdir().expect("tempdir");
        let jail = jail(data.path());
        // Hidden by the private /tmp...
        let out = jail.command(&program, &cwd, Limits::AGENT, JailEnv::Basic).output().await.expect("bwrap runs");
        assert!(!out.status.success(), "{out:?}");
        // ...unless the jail is told to show it, read-only.
        let jail = jail.with_readable(program_dir(&program).into_iter().collect());
        let out = jail.command(&program, &cwd, Limits::AGENT, JailEnv::Basic).output().await.expect("bwrap runs");
        assert!(out.status.success(), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("hello from"), "{out:?}");
        let bin = program.parent().expect("parent").display().to_string();
        let out = run(&jail, &cwd, &format!("touch {bin}/x || echo refused; touch made")).await;
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "refused", "{out:?}");
        assert!(cwd.join("made").exists(), "the cwd is not writable under a readable dir");
    }

    /// Whether a live (non-zombie) `sleep <marker>` exists.
    fn sleep_is_live(marker: &str) -> bool {
        let needle = format!("sleep\0{marker}");
        std::fs::read_dir("/proc").expect("/proc").flatten().any(|entry| {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let live = std::fs::read_to_string(entry.path().join("stat")).is_ok_and(|s| !s.contains(") Z "));
            live && String::from_utf8_lossy(&cmdline).starts_with(&needle)
        })
    }
}
