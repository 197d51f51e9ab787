//! The shell and its driver, on the host (and in a bubblewrap jail where
//! `bwrap` is installed).

use super::*;
use bosun_isolation::{tree, Jail, ShellHost};
use std::path::Path;

const WAIT: Duration = Duration::from_secs(10);
const START: Duration = Duration::from_secs(10);

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

async fn host_shell(cwd: &Path) -> Shell {
    let spec = ShellSpec { session_id: "s1", cwd, network: false };
    Shell::start(&bosun_isolation::HostShells, spec, None, START).await.expect("start")
}

/// Whether a live process has exactly this command line.
fn running(cmdline: &str) -> bool {
    let wanted: Vec<u8> = cmdline.split(' ').flat_map(|w| w.bytes().chain([0])).collect();
    std::fs::read_dir("/proc").expect("/proc").flatten().any(|e| {
        std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == wanted)
            && std::fs::read_to_string(e.path().join("stat")).is_ok_and(|s| !s.contains(") Z "))
    })
}

async fn gone_within(cmdline: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while running(cmdline) {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// A sleep argument no other test uses, to find it in /proc.
fn unique(n: u32) -> String {
    format!("{n}.{}", std::process::id())
}

/// Skips the running command's output (the shell's "Killed") to its end.
async fn finish(shell: &mut Shell) -> Finished {
    loop {
        match tokio::time::timeout(WAIT, shell.next()).await.expect("in time").expect("event") {
            ShellEvent::Output { .. } => {}
            ShellEvent::Finished(finished) => return finished,
        }
    }
}

#[tokio::test]
async fn shell_commands_report_status_output_and_keep_their_state() {
    let dir = tmp();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let mut shell = host_shell(dir.path()).await;
    assert_eq!(shell.cwd(), dir.path());

    let out = shell.run("echo out; echo err >&2; exit_code() { return 3; }; exit_code").await.unwrap();
    assert_eq!((out.stdout.as_str(), out.stderr.as_str()), ("out\n", "err\n"));
    assert_eq!(out.finished, Finished { status: 3, shell_exited: false });

    let out = shell.run("cd sub && export GREETING=hi && printf 'no newline'").await.unwrap();
    assert_eq!(out.stdout, "no newline");
    assert_eq!(shell.cwd(), dir.path().join("sub"));
    let out = shell.run("echo \"$GREETING $(pwd)\"; exit_code").await.unwrap();
    assert_eq!(out.stdout, format!("hi {}\n", dir.path().join("sub").display()));
    assert_eq!(out.finished.status, 3, "functions persist too");
}

#[tokio::test]
async fn shell_commands_that_do_not_parse_cannot_desync_it() {
    let dir = tmp();
    let mut shell = host_shell(dir.path()).await;
    // (command, whether the shell calls it an error): an unterminated
    // here-document or a trailing backslash simply end with the text.
    let broken = [
        ("if true; then echo", true),
        ("echo 'unclosed", true),
        ("}", true),
        ("fi; )", true),
        ("cat <<EOF\nno end", false),
        ("echo trailing \\", false),
    ];
    for (broken, fails) in broken {
        let out = shell.run(broken).await.unwrap();
        assert_eq!(out.finished.status != 0, fails, "{broken:?}: {out:?}");
        let out = shell.run("echo fine").await.unwrap();
        assert_eq!((out.stdout.as_str(), out.finished.status), ("fine\n", 0), "after {broken:?}");
    }
    let out = shell.run("echo \"it's\" 'a '\\''quote'\\'").await.unwrap();
    assert_eq!(out.stdout, "it's a 'quote'\n");
    let out = shell.run("cat <<'EOF'\nline $HOME\nEOF").await.unwrap();
    assert_eq!(out.stdout, "line $HOME\n");
}

#[tokio::test]
async fn shell_output_imitating_the_sentinel_does_not_end_a_command() {
    let dir = tmp();
    let mut shell = host_shell(dir.path()).await;
    let fake = "__bosun_0123456789abcdef0123456789abcdef__";
    let command = format!(
        "printf '%s0 /tmp%s' {fake} {fake}; printf '%s%s' {fake} {fake} >&2; printf '__bosun_%s__' x; \
         printf '%s%s%s%s %s%s%s%s' __bosun_ abc __ 0 / __bosun_ abc __; sleep 0.3; echo end"
    );
    let out = shell.run(&command).await.unwrap();
    assert!(out.stdout.ends_with("end\n"), "ended early: {out:?}");
    assert!(out.stdout.starts_with(&format!("{fake}0 /tmp{fake}")), "{out:?}");
    assert_eq!(out.stderr, format!("{fake}{fake}"));
    // Tracing shows the protocol's own line on stderr: still not a marker.
    let out = shell.run("set -x; echo traced").await.unwrap();
    assert_eq!(out.stdout, "traced\n");
    let out = shell.run("set +x; echo after").await.unwrap();
    assert_eq!(out.stdout, "after\n", "{out:?}");
}

#[tokio::test]
async fn shell_non_utf8_output_is_replaced_not_lost() {
    let dir = tmp();
    let mut shell = host_shell(dir.path()).await;
    let out = shell.run(r"printf 'a\377b\303\251'").await.unwrap();
    assert_eq!(out.stdout, "a\u{fffd}bé");
}

#[tokio::test]
async fn shell_exit_ends_it_with_the_code() {
    let dir = tmp();
    let mut shell = host_shell(dir.path()).await;
    let out = shell.run("cd / && exit 7").await.unwrap();
    assert_eq!(out.finished, Finished { status: 7, shell_exited: true });
    assert_eq!(shell.cwd(), Path::new("/"));
    assert!(matches!(shell.send("true").await, Err(ShellError::Gone)));
}

#[tokio::test]
async fn shell_abort_kills_the_tree_skips_the_rest_and_keeps_the_shell() {
    let dir = tmp();
    let mut shell = host_shell(dir.path()).await;
    let (a, b) = (unique(401), unique(402));
    shell
        .send(&format!("cd /; sleep {a} & sleep {b}; echo never; touch {}/never", dir.path().display()))
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while !(running(&format!("sleep {a}")) && running(&format!("sleep {b}"))) {
        assert!(Instant::now() < deadline, "the sleeps never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(shell.abort_command().await.unwrap() >= 2);
    assert_eq!(finish(&mut shell).await, Finished { status: 130, shell_exited: false });
    assert!(!dir.path().join("never").exists(), "the rest of the command ran");
    assert!(gone_within(&format!("sleep {a}"), WAIT).await);
    assert!(gone_within(&format!("sleep {b}"), WAIT).await);
    assert_eq!(shell.run("pwd").await.unwrap().stdout, "/\n");
}

#[tokio::test]
async fn shell_in_a_jail_is_found_by_its_own_pid() {
    let dir = tmp();
    let jail = Jail::bwrap(&dir.path().join("data"))
        .expect("bwrap is not installed: tests/run installs it (apt-get install bubblewrap)");
    let cwd = dir.path().join("work");
    std::fs::create_dir_all(&cwd).unwrap();
    let spec = ShellSpec { session_id: "s1", cwd: &cwd, network: false };
    let mut shell = Shell::start(&jail, spec, None, START).await.expect("start");
    assert_ne!(shell.pid(), shell.leader_pid(), "bwrap is not the shell");
    let inner: u32 = shell.run("echo $$").await.unwrap().stdout.trim().parse().unwrap();
    assert_eq!(tree::innermost_pid(shell.pid()), Some(inner));
    let outside = PathBuf::from(format!("/var/tmp/bosun-shell-test-{}", std::process::id()));
    let out = shell.run(&format!("touch {}", outside.display())).await.unwrap();
    assert_ne!(out.finished.status, 0);
    assert_eq!(shell.run("touch made").await.unwrap().finished.status, 0);
    assert!(!outside.exists() && cwd.join("made").exists());
    // The kill walk reaches into the jail.
    let marker = unique(403);
    shell.send(&format!("sleep {marker}")).await.unwrap();
    let deadline = Instant::now() + WAIT;
    while !running(&format!("sleep {marker}")) {
        assert!(Instant::now() < deadline, "the sleep never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(shell.abort_command().await, Some(1));
    assert_eq!(finish(&mut shell).await, Finished { status: 130, shell_exited: false });
    let leader = shell.leader_pid();
    drop(shell);
    let deadline = Instant::now() + WAIT;
    while tree::is_alive(leader) {
        assert!(Instant::now() < deadline, "bwrap outlived the shell's guard");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- the driver ----

struct Run {
    handle: TurnHandle,
    events: mpsc::UnboundedReceiver<AgentEvent>,
}

impl Run {
    async fn next(&mut self) -> AgentEvent {
        match tokio::time::timeout(WAIT, self.events.recv()).await {
            Ok(Some(event)) => event,
            Ok(None) => panic!("the turn ended without Finished"),
            Err(_) => panic!("no event within {WAIT:?}"),
        }
    }

    async fn rest(&mut self) -> Vec<AgentEvent> {
        let mut all = Vec::new();
        loop {
            let event = self.next().await;
            let last = matches!(event, AgentEvent::Finished(_));
            all.push(event);
            if last {
                return all;
            }
        }
    }

    async fn approval(&mut self) -> (String, Action) {
        loop {
            match self.next().await {
                AgentEvent::ApprovalRequest { request_id, action, .. } => return (request_id, action),
                AgentEvent::Finished(outcome) => panic!("finished ({outcome:?}) without asking"),
                _ => {}
            }
        }
    }

    fn decide(&self, request_id: &str, decision: Decision) {
        assert!(self.handle.send(TurnControl::Decision { request_id: request_id.into(), decision }));
    }

    /// Approves the command and returns everything up to `Finished`.
    async fn approved(&mut self) -> Vec<AgentEvent> {
        let (id, _) = self.approval().await;
        self.decide(&id, Decision::Accept);
        self.rest().await
    }
}

struct Driver {
    driver: ShellDriver,
    notices: mpsc::UnboundedReceiver<DriverNotice>,
    cwd: PathBuf,
    turns: u32,
}

impl Driver {
    fn new(cwd: &Path, timeout_secs: Option<u64>) -> Driver {
        let (tx, notices) = mpsc::unbounded_channel();
        let init = DriverInit {
            session_id: "s1".into(),
            cwd: cwd.to_path_buf(),
            binding: None,
            notices: tx,
            isolation: Isolation::Host,
            network: false,
        };
        let mut spec = ProviderSpec::new("shell", "shell", None, &[]);
        spec.command_timeout_secs = timeout_secs;
        Driver { driver: ShellDriver::new(spec, init), notices, cwd: cwd.to_path_buf(), turns: 0 }
    }

    fn start(&mut self, text: &str) -> Run {
        self.turns += 1;
        let input = TurnInput {
            session_id: "s1".into(),
            turn_id: format!("t{}", self.turns),
            text: text.into(),
            cwd: self.cwd.clone(),
            policy: bosun_proto::Policy::PlanOnly,
            resume: None,
        };
        let (tx, events) = mpsc::unbounded_channel();
        let handle = self.driver.start_turn(input, tx).expect("start_turn");
        Run { handle, events }
    }

    async fn run(&mut self, text: &str) -> Vec<AgentEvent> {
        self.start(text).approved().await
    }
}

fn chunks(events: &[AgentEvent], kind: ChunkKind) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Chunk { kind: k, text, .. } if *k == kind => Some(text.clone()),
            _ => None,
        })
        .collect()
}

fn result(events: &[AgentEvent]) -> CommandResult {
    events
        .iter()
        .find_map(|e| match e {
            AgentEvent::Result(r) => Some(r.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no result in {events:?}"))
}

fn audit(events: &[AgentEvent]) -> CommandRun {
    events
        .iter()
        .find_map(|e| match e {
            AgentEvent::CommandRan { run, .. } => Some(run.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no command:ran in {events:?}"))
}

#[tokio::test]
async fn shell_driver_runs_an_approved_command_and_reports_it() {
    let dir = tmp();
    let mut d = Driver::new(dir.path(), None);
    assert_eq!(d.driver.kind(), "shell");
    assert!(!d.driver.capabilities().steer && d.driver.capabilities().interrupt);
    let mut run = d.start("echo out; echo err >&2; exit 4");
    let (id, action) = run.approval().await;
    assert_eq!(
        action,
        Action::Command { command: "echo out; echo err >&2; exit 4".into(), cwd: dir.path().to_string_lossy().into() }
    );
    run.decide(&id, Decision::Accept);
    let events = run.rest().await;
    let n = events.len();
    assert_eq!(events[n - 1], AgentEvent::Finished(TurnOutcome::Completed), "{events:?}");
    assert!(matches!(events[n - 2], AgentEvent::Result(_)));
    assert!(matches!(events[n - 3], AgentEvent::CommandRan { .. }));
    let r = result(&events);
    assert_eq!((r.exit_code, r.stdout.as_str(), r.stderr.as_str(), r.truncated), (Some(4), "out\n", "err\n", false));
    let a = audit(&events);
    assert_eq!((a.exit_code, a.ended_by, a.stdout_bytes, a.stderr_bytes), (Some(4), None, 4, 4));
    let mut output = chunks(&events, ChunkKind::CommandOutput);
    output.sort();
    assert_eq!(output, ["err\n", "out\n"]);
    // `exit 4` in a script... is the shell's exit: it ends, and says so.
    assert_eq!(chunks(&events, ChunkKind::Notice).len(), 1, "{events:?}");
    let notice = d.notices.try_recv().expect("a Running notice");
    assert!(matches!(notice, DriverNotice::Running { pid: Some(_), agent: Some(ref a), version: None } if a == "sh"));

    // The next turn starts a new shell and says so.
    let events = d.run("echo again").await;
    assert_eq!(result(&events).stdout, "again\n");
    let notices = chunks(&events, ChunkKind::Notice);
    assert!(
        notices.iter().any(|n| n.contains("started a new shell") && n.contains("exited with code 4")),
        "{notices:?}"
    );
}

#[tokio::test]
async fn shell_driver_keeps_cd_and_exports_between_turns() {
    let dir = tmp();
    let sub = dir.path().join("x");
    std::fs::create_dir(&sub).unwrap();
    let mut d = Driver::new(dir.path(), None);
    let events = d.run("cd x && export A=1").await;
    assert_eq!(result(&events).exit_code, Some(0));
    let mut run = d.start("echo $A; pwd");
    let (id, action) = run.approval().await;
    assert_eq!(action, Action::Command { command: "echo $A; pwd".into(), cwd: sub.to_string_lossy().into() });
    run.decide(&id, Decision::AcceptForSession);
    let events = run.rest().await;
    assert_eq!(result(&events).stdout, format!("1\n{}\n", sub.display()));
    assert!(chunks(&events, ChunkKind::Notice).is_empty(), "{events:?}");
}

#[tokio::test]
async fn shell_driver_declined_and_cancelled_commands_do_not_run() {
    let dir = tmp();
    let mut d = Driver::new(dir.path(), None);
    let mut run = d.start("touch made");
    let (id, _) = run.approval().await;
    run.decide("someone-else", Decision::Accept);
    run.decide(&id, Decision::Decline);
    let events = run.rest().await;
    assert_eq!(chunks(&events, ChunkKind::Notice), ["declined: `touch made` was not run"]);
    assert!(!events.iter().any(|e| matches!(e, AgentEvent::Result(_) | AgentEvent::CommandRan { .. })));
    assert!(events.iter().any(|e| matches!(e, AgentEvent::Log { level: LogLevel::Warn, .. })));
    assert_eq!(events.last(), Some(&AgentEvent::Finished(TurnOutcome::Completed)));

    let mut run = d.start("touch made");
    let (id, _) = run.approval().await;
    run.decide(&id, Decision::Cancel);
    assert_eq!(run.rest().await.last(), Some(&AgentEvent::Finished(TurnOutcome::Interrupted)));
    assert!(!dir.path().join("made").exists());
}

#[tokio::test]
async fn shell_driver_streams_output_before_the_end() {
    let dir = tmp();
    let mut d = Driver::new(dir.path(), None);
    let mut run = d.start("echo first; sleep 1; echo second");
    let (id, _) = run.approval().await;
    run.decide(&id, Decision::Accept);
    let started = Instant::now();
    loop {
        match run.next().await {
            AgentEvent::Chunk { kind: ChunkKind::CommandOutput, text, .. } => {
                assert_eq!(text, "first\n");
                break;
            }
            other => assert!(!matches!(other, AgentEvent::Finished(_)), "{other:?}"),
        }
    }
    assert!(started.elapsed() < Duration::from_millis(800), "the first line waited for the end");
    let events = run.rest().await;
    assert_eq!(chunks(&events, ChunkKind::CommandOutput), ["second\n"]);
}

#[tokio::test]
async fn shell_driver_interrupt_kills_the_command_and_keeps_the_shell() {
    let dir = tmp();
    let mut d = Driver::new(dir.path(), None);
    d.run("cd / && export KEPT=yes").await;
    let (a, b) = (unique(411), unique(412));
    let mut run = d.start(&format!("sleep {a} & sleep {b}; echo never"));
    let (id, _) = run.approval().await;
    run.decide(&id, Decision::Accept);
    let deadline = Instant::now() + WAIT;
    while !(running(&format!("sleep {a}")) && running(&format!("sleep {b}"))) {
        assert!(Instant::now() < deadline, "the sleeps never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let asked = Instant::now();
    assert!(run.handle.send(TurnControl::Interrupt));
    let events = run.rest().await;
    assert!(asked.elapsed() < Duration::from_secs(1), "{:?}", asked.elapsed());
    assert_eq!(events.last(), Some(&AgentEvent::Finished(TurnOutcome::Interrupted)));
    assert_eq!(audit(&events).ended_by, Some(bosun_proto::EndedBy::Interrupted));
    assert_eq!(result(&events).exit_code, None);
    assert!(gone_within(&format!("sleep {a}"), WAIT).await);
    assert!(gone_within(&format!("sleep {b}"), WAIT).await);
    let events = d.run("echo $KEPT; pwd").await;
    assert_eq!(result(&events).stdout, "yes\n/\n");
    assert!(chunks(&events, ChunkKind::Notice).is_empty(), "the shell was restarted: {events:?}");
}

#[tokio::test]
async fn shell_driver_timeout_fails_the_turn_and_keeps_the_shell() {
    let dir = tmp();
    let mut d = Driver::new(dir.path(), Some(1));
    let marker = unique(421);
    let started = Instant::now();
    let events = d.run(&format!("cd /; echo before; sleep {marker}")).await;
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(
        events.last(),
        Some(&AgentEvent::Finished(TurnOutcome::Failed("the command timed out after 1 s".into())))
    );
    assert_eq!(audit(&events).ended_by, Some(bosun_proto::EndedBy::TimedOut));
    assert_eq!(result(&events).stdout, "before\n");
    assert!(gone_within(&format!("sleep {marker}"), WAIT).await);
    assert_eq!(result(&d.run("pwd").await).stdout, "/\n");
}

#[tokio::test]
async fn shell_driver_stops_a_builtin_loop_and_restarts_a_shell_that_ignores_the_abort() {
    let dir = tmp();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let mut d = Driver::new(dir.path(), None);
    d.run("cd sub; X=1").await;
    let mut run = d.start("while :; do :; done; touch never");
    let (id, _) = run.approval().await;
    run.decide(&id, Decision::Accept);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(run.handle.send(TurnControl::Interrupt));
    let events = run.rest().await;
    assert_eq!(events.last(), Some(&AgentEvent::Finished(TurnOutcome::Interrupted)));
    assert!(chunks(&events, ChunkKind::Notice).is_empty(), "{events:?}");
    assert!(!sub.join("never").exists());
    assert_eq!(result(&d.run("echo $X").await).stdout, "1\n");

    let mut run = d.start("trap '' USR1; while :; do :; done");
    let (id, _) = run.approval().await;
    run.decide(&id, Decision::Accept);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(run.handle.send(TurnControl::Interrupt));
    let events = run.rest().await;
    assert_eq!(events.last(), Some(&AgentEvent::Finished(TurnOutcome::Interrupted)));
    assert!(chunks(&events, ChunkKind::Notice).iter().any(|n| n.contains("did not come back")), "{events:?}");
    let events = d.run("echo \"[$X]\"; pwd").await;
    assert_eq!(result(&events).stdout, format!("[]\n{}\n", sub.display()), "the directory is restored, not the rest");
    assert!(chunks(&events, ChunkKind::Notice).iter().any(|n| n.contains("started a new shell")), "{events:?}");
}

#[tokio::test]
async fn shell_driver_a_shell_killed_from_outside_fails_the_turn_only() {
    let dir = tmp();
    let mut d = Driver::new(dir.path(), None);
    d.run("true").await;
    let Some(DriverNotice::Running { pid: Some(pid), .. }) = d.notices.try_recv().ok() else { panic!("no pid") };
    let mut run = d.start("sleep 5");
    let (id, _) = run.approval().await;
    run.decide(&id, Decision::Accept);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // SAFETY: kill only sends a signal, to the shell this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let events = run.rest().await;
    assert!(
        matches!(events.last(), Some(AgentEvent::Finished(TurnOutcome::Failed(r))) if r.contains("shell died")),
        "{events:?}"
    );
    assert_eq!(audit(&events).ended_by, Some(bosun_proto::EndedBy::Killed));
    let events = d.run("echo back").await;
    assert_eq!(result(&events).stdout, "back\n");
}

#[tokio::test]
async fn shell_driver_output_limit_kills_the_command() {
    let dir = tmp();
    let mut d = Driver::new(dir.path(), None);
    let events = d.run("yes 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde; echo never").await;
    let a = audit(&events);
    assert_eq!(a.ended_by, Some(bosun_proto::EndedBy::OutputLimit));
    assert!(a.stdout_bytes > STREAM_LIMIT, "{}", a.stdout_bytes);
    let r = result(&events);
    assert!(r.truncated && r.stdout.len() <= RESULT_LIMIT && r.stdout.len() > RESULT_LIMIT - 64);
    let streamed: usize = chunks(&events, ChunkKind::CommandOutput).iter().map(String::len).sum();
    assert!(streamed as u64 <= STREAM_LIMIT);
    assert!(matches!(events.last(), Some(AgentEvent::Finished(TurnOutcome::Failed(_)))));
    assert_eq!(result(&d.run("echo ok").await).stdout, "ok\n");
}

#[tokio::test]
async fn shell_driver_dropped_kills_its_shell() {
    let dir = tmp();
    let mut d = Driver::new(dir.path(), None);
    d.run("true").await;
    let Some(DriverNotice::Running { pid: Some(pid), .. }) = d.notices.try_recv().ok() else { panic!("no pid") };
    let marker = unique(431);
    let mut run = d.start(&format!("sleep {marker} & echo started"));
    assert_eq!(result(&run.approved().await).stdout, "started\n");
    assert!(tree::is_alive(pid));
    drop(d);
    let deadline = Instant::now() + WAIT;
    while tree::is_alive(pid) {
        assert!(Instant::now() < deadline, "the shell outlived its driver");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone_within(&format!("sleep {marker}"), WAIT).await, "a background job outlived the driver");
}

/// A container host stand-in: a local `sh` below another process, whose pid
/// it hands back, as a container runtime's pid may be a parent of the shell.
#[derive(Debug)]
struct NestedHost;

impl ShellHost for NestedHost {
    fn name(&self) -> &'static str {
        "nested"
    }

    fn start_shell<'a>(
        &'a self,
        spec: ShellSpec<'a>,
    ) -> futures::future::BoxFuture<'a, Result<bosun_isolation::ShellProcess, bosun_isolation::IsolationError>> {
        Box::pin(async move {
            let no_env: [(&str, &str); 0] = [];
            let child =
                bosun_isolation::process::spawn_piped_in_group("sh", ["-c", "sh; true"], no_env, spec.cwd, None)
                    .map_err(|e| bosun_isolation::IsolationError::Start(e.to_string()))?;
            let pid = child.child.id().expect("pid");
            Ok(bosun_isolation::ShellProcess {
                stdin: Box::pin(child.stdin),
                stdout: Box::pin(child.stdout),
                stderr: Box::pin(child.stderr),
                pid,
                leader_pid: pid,
                guard: Box::new((child.child, child.group)),
            })
        })
    }
}

#[tokio::test]
async fn shell_driver_runs_in_a_container_host_and_finds_the_shell_below_its_pid() {
    let dir = tmp();
    let (tx, mut notices) = mpsc::unbounded_channel();
    let init = DriverInit {
        session_id: "s1".into(),
        cwd: dir.path().to_path_buf(),
        binding: None,
        notices: tx,
        isolation: Isolation::Container(Arc::new(NestedHost)),
        network: false,
    };
    let mut d = Driver {
        driver: ShellDriver::new(ProviderSpec::new("shell", "shell", None, &[]), init),
        notices: mpsc::unbounded_channel().1,
        cwd: dir.path().to_path_buf(),
        turns: 0,
    };
    let events = d.run("cd / && echo $$").await;
    let inner: u32 = result(&events).stdout.trim().parse().unwrap();
    let Ok(DriverNotice::Running { pid: Some(outer), .. }) = notices.try_recv() else { panic!("no Running notice") };
    assert_ne!(inner, outer, "the host's pid is the shell's parent");
    // Interrupts reach below the real shell, and the shell stays.
    let marker = unique(441);
    let mut run = d.start(&format!("sleep {marker}; touch {}/never", dir.path().display()));
    let (id, _) = run.approval().await;
    run.decide(&id, Decision::Accept);
    let deadline = Instant::now() + WAIT;
    while !running(&format!("sleep {marker}")) {
        assert!(Instant::now() < deadline, "the sleep never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(run.handle.send(TurnControl::Interrupt));
    assert_eq!(run.rest().await.last(), Some(&AgentEvent::Finished(TurnOutcome::Interrupted)));
    assert!(!dir.path().join("never").exists());
    assert_eq!(result(&d.run("pwd").await).stdout, "/\n");
}
