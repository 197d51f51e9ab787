//! The driver against the real `codex app-server`, talking to the scripted
//! model server (`examples/mock_model.rs`). Opt-in, as it needs both:
//!
//! ```text
//! cargo run -q --example mock_model -- --codex-home /tmp/cx-home &
//! BOSUN_CODEX_BIN=$PWD/tests/agents/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex \
//! BOSUN_CODEX_HOME=/tmp/cx-home cargo test -p bosun-codex tests::e2e -- --ignored --nocapture
//! ```

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Setup {
    bin: String,
    home: PathBuf,
    base_url: String,
}

fn setup() -> Setup {
    let (Ok(bin), Ok(home)) = (std::env::var("BOSUN_CODEX_BIN"), std::env::var("BOSUN_CODEX_HOME")) else {
        panic!("{NEEDS_CODEX}");
    };
    let home = PathBuf::from(home);
    let config = std::fs::read_to_string(home.join("config.toml")).expect("BOSUN_CODEX_HOME has no config.toml");
    let base_url = config
        .lines()
        .find_map(|line| line.trim().strip_prefix("base_url = "))
        .map(|v| v.trim_matches('"').to_string())
        .expect("no base_url in config.toml");
    Setup { bin, home, base_url }
}

impl Setup {
    fn driver(&self, cwd: &Path, binding: Option<Value>) -> (CodexDriver, mpsc::UnboundedReceiver<DriverNotice>) {
        let mut spec = ProviderSpec::new("codex", "codex-app-server", Some(&self.bin), &["app-server"]);
        spec.env.insert("CODEX_HOME".into(), self.home.to_string_lossy().into_owned());
        let (notices, notices_rx) = mpsc::unbounded_channel();
        let init = DriverInit {
            session_id: "s".into(),
            cwd: cwd.to_path_buf(),
            binding,
            notices,
            isolation: bosun_isolation::Isolation::Host,
            network: false,
        };
        (CodexDriver::new(spec, init), notices_rx)
    }

    /// Every request body the model server received so far.
    async fn model_requests(&self) -> Vec<Value> {
        let rest = self.base_url.strip_prefix("http://").expect("an http base_url");
        let (authority, _) = rest.split_once('/').unwrap_or((rest, ""));
        let mut stream = tokio::net::TcpStream::connect(authority).await.unwrap();
        let request = format!("GET /v1/requests HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        let response = String::from_utf8_lossy(&response);
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            unchunk(body)
        } else {
            body.to_string()
        };
        serde_json::from_str(&body).unwrap()
    }
}

fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

async fn next_event(rx: &mut mpsc::UnboundedReceiver<AgentEvent>) -> AgentEvent {
    tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.expect("no event in 30 s").expect("events closed")
}

/// Runs a turn to its end, answering every approval with `decision`.
async fn turn(driver: &mut CodexDriver, text: &str, decision: bosun_proto::Decision) -> Vec<AgentEvent> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = driver.start_turn(input(text), tx).unwrap();
    let mut events = Vec::new();
    loop {
        let event = next_event(&mut rx).await;
        if let AgentEvent::ApprovalRequest { request_id, .. } = &event {
            handle.send(TurnControl::Decision { request_id: request_id.clone(), decision });
        }
        let done = matches!(event, AgentEvent::Finished(_));
        events.push(event);
        if done {
            return events;
        }
    }
}

fn input_in(text: &str, cwd: &Path) -> TurnInput {
    TurnInput { cwd: cwd.to_path_buf(), ..input(text) }
}

fn text_of(events: &[AgentEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Chunk { kind: ChunkKind::Text, text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

fn last_usage(events: &[AgentEvent]) -> Option<Usage> {
    events.iter().rev().find_map(|e| match e {
        AgentEvent::Usage(usage) => Some(*usage),
        _ => None,
    })
}

fn outcome_of(events: &[AgentEvent]) -> &TurnOutcome {
    match events.last() {
        Some(AgentEvent::Finished(outcome)) => outcome,
        other => panic!("the turn did not finish: {other:?}"),
    }
}

fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(format!("{}: {cmdline}", entry.file_name().to_string_lossy()));
            }
        }
    }
    found
}

const NEEDS_CODEX: &str = "needs BOSUN_CODEX_BIN and BOSUN_CODEX_HOME (served by examples/mock_model)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs BOSUN_CODEX_BIN and BOSUN_CODEX_HOME (served by examples/mock_model)"]
async fn e2e_real_codex() {
    let setup = setup();
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path();
    let (mut driver, mut notices) = setup.driver(cwd, None);
    let decide = bosun_proto::Decision::Accept;

    // A text turn.
    let events = turn(&mut driver, "hello there", decide).await;
    assert_eq!(outcome_of(&events), &TurnOutcome::Completed, "{events:?}");
    assert_eq!(text_of(&events), "echo: hello there");
    assert_eq!(last_usage(&events), Some(Usage::new(100, 7)));
    let first: Vec<_> = drain(&mut notices).into_iter().filter(|n| !matches!(n, DriverNotice::Log { .. })).collect();
    let pid = match &first[..] {
        [DriverNotice::Running { pid: Some(pid), agent: Some(agent), version: Some(version) }, DriverNotice::Bound(binding), ..] =>
        {
            assert_eq!((agent.as_str(), version.as_str()), ("codex", "0.169.0"));
            assert!(binding["thread_id"].is_string());
            *pid
        }
        other => panic!("{other:?}"),
    };
    eprintln!("text turn ok; codex pid {pid}");

    // RUN: accepted, then declined.
    let events = turn(&mut driver, "RUN: echo from-codex > ran.txt; echo done", decide).await;
    assert_eq!(outcome_of(&events), &TurnOutcome::Completed, "{events:?}");
    let asked = events.iter().find_map(|e| match e {
        AgentEvent::ApprovalRequest { action: Action::Command { command, cwd }, request_id, .. } => {
            Some((command, cwd, request_id))
        }
        _ => None,
    });
    let (command, asked_cwd, request_id) = asked.expect("no approval asked");
    assert!(command.contains("echo from-codex > ran.txt"), "{command}");
    assert_eq!(Path::new(asked_cwd), cwd);
    assert!(request_id.starts_with("codex-"));
    let update = events.iter().find_map(|e| match e {
        AgentEvent::ToolUpdate(update) => Some(update),
        _ => None,
    });
    let update = update.expect("no tool update");
    assert_eq!((update.status, update.output.as_deref()), (Some(ToolStatus::Completed), Some("done\n")));
    assert!(events
        .iter()
        .any(|e| matches!(e, AgentEvent::ToolCall(call) if call.kind == bosun_proto::ToolKind::Execute)));
    assert_eq!(std::fs::read_to_string(cwd.join("ran.txt")).unwrap(), "from-codex\n");
    assert!(text_of(&events).starts_with("tool said:"));
    // Two model responses in this turn, and only this turn's.
    assert_eq!(last_usage(&events), Some(Usage::new(200, 14)));

    let events = turn(&mut driver, "RUN: touch declined.txt", bosun_proto::Decision::Decline).await;
    assert_eq!(outcome_of(&events), &TurnOutcome::Completed, "{events:?}");
    assert!(!cwd.join("declined.txt").exists());
    assert!(events.iter().any(|e| matches!(e, AgentEvent::ToolUpdate(u) if u.status == Some(ToolStatus::Failed) && u.detail["declined"] == true)));
    eprintln!("RUN accept/decline ok");

    // PATCH: a file change approval names the file.
    let events = turn(&mut driver, "PATCH: patched.txt patched text", decide).await;
    assert_eq!(outcome_of(&events), &TurnOutcome::Completed, "{events:?}");
    assert!(events.iter().any(|e| matches!(e,
        AgentEvent::ApprovalRequest { action: Action::FileChange { path, summary }, .. }
            if path.ends_with("patched.txt") && summary.starts_with("add "))));
    assert!(events.iter().any(|e| matches!(e, AgentEvent::ToolCall(call) if call.kind == bosun_proto::ToolKind::Edit)));
    assert_eq!(std::fs::read_to_string(cwd.join("patched.txt")).unwrap().trim(), "patched text");
    eprintln!("PATCH ok");

    // Interrupt a long command (a shell that forks it: codex itself would
    // leave it running).
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = driver.start_turn(input_in("RUN: sh -c 'sleep 30.123; echo not-interrupted'", cwd), tx).unwrap();
    // Codex announces the command (ToolCall), then asks.
    loop {
        match next_event(&mut rx).await {
            AgentEvent::ApprovalRequest { request_id, .. } => {
                handle.send(TurnControl::Decision { request_id, decision: decide });
                break;
            }
            AgentEvent::Finished(outcome) => panic!("ended early: {outcome:?}"),
            _ => {}
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while processes_with("sleep 30.123").is_empty() {
        assert!(Instant::now() < deadline, "the command never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let asked = Instant::now();
    handle.send(TurnControl::Interrupt);
    let outcome = loop {
        if let AgentEvent::Finished(outcome) = next_event(&mut rx).await {
            break outcome;
        }
    };
    assert_eq!(outcome, TurnOutcome::Interrupted);
    eprintln!("interrupt took {:?}", asked.elapsed());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(processes_with("sleep 30.123"), Vec::<String>::new(), "the command outlived the interrupt");

    // Steer a slow answer.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = driver.start_turn(input_in("SLOW", cwd), tx).unwrap();
    let mut events = Vec::new();
    let mut steered = false;
    loop {
        let event = next_event(&mut rx).await;
        if !steered && matches!(event, AgentEvent::Chunk { kind: ChunkKind::Text, .. }) {
            steered = true;
            handle.send(TurnControl::Steer("steered now".into()));
        }
        let done = matches!(event, AgentEvent::Finished(_));
        events.push(event);
        if done {
            break;
        }
    }
    assert_eq!(outcome_of(&events), &TurnOutcome::Completed, "{events:?}");
    let text = text_of(&events);
    assert!(text.starts_with("slow 1/50") && text.ends_with("echo: steered now"), "{text}");
    assert!(!text.contains("slow 50/50"), "the steer did not cut the slow answer: {text}");
    eprintln!("steer ok");

    // A turn whose handle is dropped mid-way is stopped in codex too, and
    // the next turn is a turn of its own, not a steer of the old one.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = driver.start_turn(input_in("SLOW", cwd), tx).unwrap();
    loop {
        if let AgentEvent::Chunk { .. } = next_event(&mut rx).await {
            break;
        }
    }
    drop(handle);
    let events = turn(&mut driver, "after abandoning", decide).await;
    assert_eq!(outcome_of(&events), &TurnOutcome::Completed, "{events:?}");
    assert_eq!(text_of(&events), "echo: after abandoning");
    eprintln!("abandon ok");

    // kill -9 of codex mid-turn.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _handle = driver.start_turn(input_in("SLOW", cwd), tx).unwrap();
    loop {
        if let AgentEvent::Chunk { .. } = next_event(&mut rx).await {
            break;
        }
    }
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let reason = "the agent process exited: killed by signal 9".to_string();
    let outcome = loop {
        if let AgentEvent::Finished(outcome) = next_event(&mut rx).await {
            break outcome;
        }
    };
    assert_eq!(outcome, TurnOutcome::Failed(reason.clone()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(drain(&mut notices).contains(&DriverNotice::Exited { reason: reason.clone() }));
    let events = turn(&mut driver, "hello again", decide).await;
    assert_eq!(outcome_of(&events), &TurnOutcome::Failed(reason));
    drop(driver);
    eprintln!("kill -9 ok");

    // A new driver resumes the thread it is given...
    let (mut first, mut first_notices) = setup.driver(cwd, None);
    let events = turn(&mut first, "remember the word albatross", decide).await;
    assert_eq!(outcome_of(&events), &TurnOutcome::Completed);
    let binding = drain(&mut first_notices)
        .into_iter()
        .find_map(|n| match n {
            DriverNotice::Bound(binding) => Some(binding),
            _ => None,
        })
        .expect("no binding");
    drop(first);
    let (mut second, mut second_notices) = setup.driver(cwd, Some(binding.clone()));
    let events = turn(&mut second, "which word was it?", decide).await;
    assert_eq!(outcome_of(&events), &TurnOutcome::Completed, "{events:?}");
    assert_eq!(last_usage(&events), Some(Usage::new(100, 7)));
    assert!(drain(&mut second_notices).contains(&DriverNotice::Bound(binding.clone())));
    let requests = setup.model_requests().await;
    let last = serde_json::to_string(&requests.last().unwrap()["input"]).unwrap();
    assert!(last.contains("remember the word albatross") && last.contains("which word was it?"), "{last}");
    drop(second);
    eprintln!("resume ok");

    // ...and starts afresh, with a warning, when that thread is unknown.
    let bogus = json!({"thread_id": "01a20101-0000-7000-8000-000000000000"});
    let (mut third, mut third_notices) = setup.driver(cwd, Some(bogus.clone()));
    let events = turn(&mut third, "fresh start", decide).await;
    assert_eq!(outcome_of(&events), &TurnOutcome::Completed);
    assert!(events.iter().any(
        |e| matches!(e, AgentEvent::Log { level: LogLevel::Warn, message } if message.contains("could not resume"))
    ));
    let notices = drain(&mut third_notices);
    assert!(notices.iter().any(|n| matches!(n, DriverNotice::Bound(b) if b != &bogus && b["thread_id"].is_string())));
    eprintln!("failed resume ok");
}
