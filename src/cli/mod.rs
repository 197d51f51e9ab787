//! The command-line client: `bosun session|send|approve|interrupt|events|status|term`.
//!
//! Each subcommand is one function that talks to the daemon at `--server`
//! (or `BOSUN_URL`) through the typed `bosun-client`: its endpoint calls, and
//! for live output its WebSocket `Follower`. With `--json` the answer is
//! printed as JSON, one document per line for streams (a live event as the
//! frame the daemon sent).
//!
//! Exit codes: 0 success; 1 an error (the daemon's or ours, printed as
//! `error: ...` on stderr); 2 a usage error (clap); for `send --wait` the end
//! of the turn: 0 completed, 1 failed, 130 interrupted (or Ctrl-C); a
//! completed turn that ran one command (the `shell` provider) exits with the
//! command's exit code, as `ssh` does.

mod devices;
mod module;
mod render;
mod secrets;
mod term;
mod workflow;

use anyhow::{bail, Context as _};
use bosun_client::{Follower, FollowerConfig};
use bosun_proto::*;
use render::{color_stderr, color_stdout, dim};
use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const DEFAULT_URL: &str = "http://127.0.0.1:7878";
const CLIENT_NAME: &str = concat!("bosun-cli/", env!("CARGO_PKG_VERSION"));
/// Events asked for per `GET /api/v1/events` page.
const EVENTS_PAGE: usize = 1000;
/// After `session:closed`, how long `send --wait` still waits for the
/// `turn:completed` that the deletion causes.
const CLOSED_GRACE: Duration = Duration::from_secs(3);

/// `println!` that returns an error instead of panicking when stdout is gone
/// (`bosun events | head`).
macro_rules! outln {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*).context("writing to stdout")
    };
}

/// Options every client subcommand takes. They are flattened into each
/// subcommand (the top-level parser is not ours), and global so they may
/// also follow a nested subcommand: `bosun session ls --json`.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// The daemon's URL.
    #[arg(long, value_name = "URL", env = "BOSUN_URL", default_value = DEFAULT_URL, global = true)]
    server: String,
    /// Print the answers as JSON, one document per line (a live event as the daemon sent it).
    #[arg(long, global = true)]
    json: bool,
    /// The daemon's data dir, whose admin.token (readable only by its owner)
    /// is sent as the admin credential (default: the one `bosun serve` uses).
    #[arg(long, value_name = "DIR", env = "BOSUN_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// A device token to send instead of the admin credential.
    #[arg(long, value_name = "TOKEN", env = "BOSUN_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum ClientCommand {
    /// Create, list, show, change and delete sessions.
    Session(SessionArgs),
    /// Send a message to a session: starts a turn (prints its id, or with --wait the reply).
    Send(SendArgs),
    /// Accept or decline an action an agent asked for.
    Approve(ApproveArgs),
    /// Interrupt the active turn of a session.
    Interrupt(InterruptArgs),
    /// Print the event log; with --follow, keep printing live events.
    Events(EventsArgs),
    /// Show the daemon's health.
    Status(StatusArgs),
    /// List the agent providers sessions can run on, with where each stands.
    Providers(StatusArgs),
    /// Check the setup as the daemon sees it, in its own environment: its
    /// data dir, each provider's program and credentials, bwrap, the
    /// container engine, tmux and the terminals, the service file, and
    /// whether it is exposed. One line a check, with a fix; exit 1 on a failure.
    Doctor(StatusArgs),
    /// Make a one-time pairing code for a new device: prints its URL and a QR code.
    Pair(devices::PairArgs),
    /// List or revoke paired devices.
    Devices(devices::DevicesArgs),
    /// Turn the TOTP second factor for pairing on or off.
    Totp(devices::TotpArgs),
    /// Run workflows (docs/WORKFLOWS.md): start, list, show, cancel, resume, decide.
    Workflow(workflow::WorkflowArgs),
    /// Terminals: list, spawn, send to, read, close, and attach to the daemon's PTYs.
    Term(term::TermArgs),
    /// Secrets for providers' env (`KEY = "secret:NAME"`), encrypted at rest:
    /// set (the value from stdin), ls (masked), rm. Works on --data-dir's
    /// files, with or without a daemon running there.
    Secrets(secrets::SecretsArgs),
    /// Signed provider modules: keygen, pack, install, rollback, ls (docs/MODULES.md).
    Module(module::ModuleArgs),
}

#[derive(Debug, clap::Args)]
pub struct SessionArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: SessionCommand,
}

#[derive(Debug, clap::Subcommand)]
enum SessionCommand {
    /// Create a session; prints its id.
    New(NewSessionArgs),
    /// List sessions, newest first.
    #[command(visible_alias = "list")]
    Ls,
    /// Show a session with its turns and pending approvals.
    Show {
        #[arg(value_parser = id_arg)]
        id: String,
    },
    /// Change a session's title, policy or archived flag.
    Set(SetSessionArgs),
    /// Delete a session: its active turn is interrupted, its pending approvals cancelled,
    /// and a workspace's worktree and branch bosun/<id> removed.
    #[command(visible_alias = "delete")]
    Rm {
        #[arg(value_parser = id_arg)]
        id: String,
        /// Leave the session's worktree and its branch on disk.
        #[arg(long)]
        keep_worktree: bool,
    },
}

#[derive(Debug, clap::Args)]
struct NewSessionArgs {
    /// The agent provider.
    #[arg(long, default_value = "demo")]
    provider: String,
    /// The agent's working directory (default: the current directory).
    #[arg(long, value_name = "DIR")]
    cwd: Option<PathBuf>,
    #[arg(long)]
    title: Option<String>,
    /// Who accepts the agent's actions (the daemon's default: plan-only).
    #[arg(long, value_enum)]
    policy: Option<PolicyArg>,
    /// Work in a git worktree of this repository (a local path or a URL) on a
    /// new branch `bosun/<session>`, instead of --cwd.
    #[arg(long, value_name = "PATH_OR_URL", conflicts_with = "cwd")]
    repo: Option<String>,
    /// The branch the worktree starts from (with --repo).
    #[arg(long, default_value = "main", requires = "repo")]
    branch: String,
    /// Where the session's agent and commands run.
    #[arg(long, value_enum, default_value = "none")]
    sandbox: SandboxArg,
    /// Let the jail or container use the network.
    #[arg(long)]
    network: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SandboxArg {
    /// On the host, as the daemon's user.
    None,
    /// In a bubblewrap jail.
    Bwrap,
    /// In a container of the daemon's configured engine.
    Docker,
}

impl From<SandboxArg> for bosun_proto::Sandbox {
    fn from(s: SandboxArg) -> bosun_proto::Sandbox {
        match s {
            SandboxArg::None => bosun_proto::Sandbox::None,
            SandboxArg::Bwrap => bosun_proto::Sandbox::Bwrap,
            SandboxArg::Docker => bosun_proto::Sandbox::Docker,
        }
    }
}

#[derive(Debug, clap::Args)]
struct SetSessionArgs {
    #[arg(value_parser = id_arg)]
    id: String,
    #[command(flatten)]
    changes: SessionChanges,
}

#[derive(Debug, clap::Args)]
#[group(required = true, multiple = true)]
struct SessionChanges {
    #[arg(long)]
    title: Option<String>,
    #[arg(long, value_enum)]
    policy: Option<PolicyArg>,
    #[arg(long, conflicts_with = "unarchive")]
    archive: bool,
    #[arg(long)]
    unarchive: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PolicyArg {
    /// Every action waits for `bosun approve`.
    PlanOnly,
    /// The daemon accepts every action itself (and records it).
    FullAccess,
}

impl From<PolicyArg> for Policy {
    fn from(p: PolicyArg) -> Policy {
        match p {
            PolicyArg::PlanOnly => Policy::PlanOnly,
            PolicyArg::FullAccess => Policy::FullAccess,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct SendArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The session.
    #[arg(value_parser = id_arg)]
    session: String,
    /// The message; several words are joined with spaces; `-` reads it from stdin.
    #[arg(required = true, num_args = 1.., value_name = "TEXT")]
    text: Vec<String>,
    /// Print the reply live and exit when the turn ends: 0 completed, 1 failed, 130 interrupted.
    #[arg(long)]
    wait: bool,
}

#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The approval (`a_...`), as `send --wait` or `session show` print it.
    #[arg(value_parser = id_arg)]
    approval: String,
    #[arg(value_enum)]
    decision: DecisionArg,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum DecisionArg {
    /// Let the agent do it, this once.
    Accept,
    /// Let the agent do it, and the like for the rest of the session (where the agent supports it).
    AcceptForSession,
    /// Refuse; the agent carries on without it.
    Decline,
    /// Refuse and stop the turn.
    Cancel,
}

impl From<DecisionArg> for Decision {
    fn from(d: DecisionArg) -> Decision {
        match d {
            DecisionArg::Accept => Decision::Accept,
            DecisionArg::AcceptForSession => Decision::AcceptForSession,
            DecisionArg::Decline => Decision::Decline,
            DecisionArg::Cancel => Decision::Cancel,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct InterruptArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The session whose active turn to interrupt.
    #[arg(value_parser = id_arg)]
    session: String,
}

#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Only the events of this session.
    #[arg(long, value_name = "ID")]
    session: Option<String>,
    /// Only the events of this topic (`system`, `session:<id>`).
    #[arg(long, conflicts_with = "session")]
    topic: Option<String>,
    /// Start after this seq.
    #[arg(long, value_name = "N", default_value_t = 0)]
    since: u64,
    /// After the backlog, keep printing live events until Ctrl-C.
    #[arg(long, short)]
    follow: bool,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    common: CommonArgs,
}

/// Refuses ids that could not name anything and that URL path handling
/// would silently drop (`.`, `..`).
fn id_arg(s: &str) -> Result<String, String> {
    match s {
        "" | "." | ".." => Err(format!("{s:?} is not an id")),
        _ => Ok(s.to_string()),
    }
}

pub async fn run(cmd: ClientCommand) -> anyhow::Result<i32> {
    match dispatch(cmd).await {
        Ok(code) => Ok(code),
        // A reader that went away (`| head`) is not worth an error message;
        // exit as a process killed by SIGPIPE would.
        Err(err) if is_broken_pipe(&err) => Ok(141),
        Err(err) => {
            // `{:#}` shows the context chain on one line; an API error shows
            // as `<message> (<code>)`.
            eprintln!("error: {err:#}");
            Ok(1)
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|e| e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

async fn dispatch(cmd: ClientCommand) -> anyhow::Result<i32> {
    match cmd {
        ClientCommand::Session(args) => {
            let client = Client::new(&args.common)?;
            match args.command {
                SessionCommand::New(new) => session_new(&client, new).await,
                SessionCommand::Ls => session_ls(&client).await,
                SessionCommand::Show { id } => session_show(&client, &id).await,
                SessionCommand::Set(set) => session_set(&client, set).await,
                SessionCommand::Rm { id, keep_worktree } => session_rm(&client, &id, keep_worktree).await,
            }
        }
        ClientCommand::Send(args) => send(&Client::new(&args.common)?, args).await,
        ClientCommand::Approve(args) => {
            approve(&Client::new(&args.common)?, &args.approval, args.decision.into()).await
        }
        ClientCommand::Interrupt(args) => interrupt(&Client::new(&args.common)?, &args.session).await,
        ClientCommand::Events(args) => events(&Client::new(&args.common)?, args).await,
        ClientCommand::Status(args) => status(&Client::new(&args.common)?).await,
        ClientCommand::Providers(args) => providers(&Client::new(&args.common)?).await,
        ClientCommand::Doctor(args) => doctor(&Client::new(&args.common)?).await,
        ClientCommand::Pair(args) => devices::pair(&Client::admin(&args.common)?, args).await,
        ClientCommand::Devices(args) => devices::devices(&Client::admin(&args.common)?, args).await,
        ClientCommand::Totp(args) => devices::totp(&Client::admin(&args.common)?, args).await,
        ClientCommand::Workflow(args) => workflow::workflow(args).await,
        ClientCommand::Term(args) => term::term(args).await,
        ClientCommand::Secrets(args) => secrets::secrets(args),
        ClientCommand::Module(args) => module::module(args).await,
    }
}

/// What every subcommand needs: the daemon and the output mode.
struct Client {
    api: bosun_client::Client,
    json: bool,
    /// Appended to the commands we suggest (`bosun approve ...`), so they
    /// reach the same daemon when it is not the default one.
    server_hint: String,
}

impl Client {
    fn new(common: &CommonArgs) -> anyhow::Result<Client> {
        // Sent when there is one, so the CLI keeps working where the daemon
        // asks every client for a token (`[auth] require = "always"`).
        let token = match &common.token {
            Some(token) => Some(token.clone()),
            None => devices::read_admin_token(common)?.map(|(token, _)| token),
        };
        Client::with_token(common, token)
    }

    /// A client for the admin endpoints: the admin credential is required.
    fn admin(common: &CommonArgs) -> anyhow::Result<Client> {
        let token = match devices::read_admin_token(common)? {
            Some((token, _)) => token,
            None => bail!(
                "no admin credential at {}: run this as the daemon's user on its machine, with --data-dir set to the daemon's data dir (the daemon writes admin.token when it starts)",
                devices::admin_token_path(common).display()
            ),
        };
        Client::with_token(common, Some(token))
    }

    fn with_token(common: &CommonArgs, token: Option<String>) -> anyhow::Result<Client> {
        let api = bosun_client::Client::new(&common.server, CLIENT_NAME)?.with_token(token);
        let from_env = std::env::var("BOSUN_URL").ok();
        let server_hint = if common.server == DEFAULT_URL || from_env.as_deref() == Some(common.server.as_str()) {
            String::new()
        } else {
            format!(" --server {}", common.server)
        };
        Ok(Client { api, json: common.json, server_hint })
    }

    /// Prints an answer as one line of JSON (`--json`).
    fn print_json<T: serde::Serialize>(&self, answer: &T) -> anyhow::Result<()> {
        outln!("{}", serde_json::to_string(answer).context("encoding the answer as JSON")?)
    }

    /// Follows `topics` from `since`; the follower's notices (reconnecting,
    /// a frame from a newer daemon) go to stderr.
    async fn follow(&self, topics: Vec<String>, since: u64) -> anyhow::Result<Follower> {
        let config = FollowerConfig { notices: Some(Arc::new(|text: &str| note(text))), ..Default::default() };
        Ok(Follower::open(self.api.clone(), topics, since, config).await?)
    }
}

/// A dim line on stderr: progress and hints that are not the output proper.
fn note(text: &str) {
    eprintln!("{}", dim(color_stderr(), text));
}

async fn session_new(client: &Client, args: NewSessionArgs) -> anyhow::Result<i32> {
    // The daemon resolves nothing relative to the client, so send an
    // absolute path; it checks that the directory exists.
    let (cwd, workspace) = match args.repo {
        Some(repo) => {
            // A local repository is named to the daemon by its absolute path.
            let local = std::path::Path::new(&repo);
            let repo = if local.exists() {
                let abs = std::path::absolute(local).with_context(|| format!("making {repo} absolute"))?;
                abs.to_str().with_context(|| format!("the path {} is not valid UTF-8", abs.display()))?.to_string()
            } else {
                repo
            };
            (None, Some(WorkspaceRequest { repo, branch: args.branch }))
        }
        None => {
            let cwd = match args.cwd {
                Some(dir) => dir,
                None => std::env::current_dir().context("reading the current directory")?,
            };
            let cwd = std::path::absolute(&cwd).with_context(|| format!("making {} absolute", cwd.display()))?;
            let cwd = cwd
                .to_str()
                .with_context(|| format!("the directory {} is not valid UTF-8", cwd.display()))?
                .to_string();
            (Some(cwd), None)
        }
    };
    let body = CreateSessionRequest {
        provider: args.provider,
        cwd,
        title: args.title,
        policy: args.policy.map(Policy::from),
        workspace,
        sandbox: args.sandbox.into(),
        network: args.network,
    };
    // A workspace may need a clone first: the client waits for it.
    let s = client.api.create_session(&body).await?;
    if client.json {
        client.print_json(&s)?;
        return Ok(0);
    }
    // The id alone on stdout, so `id=$(bosun session new)` works.
    outln!("{}", s.id)?;
    note(&format!("created session {} {:?} ({}, {}) in {}", s.id, s.title, s.provider, s.policy, s.cwd));
    Ok(0)
}

async fn session_ls(client: &Client) -> anyhow::Result<i32> {
    let list = client.api.sessions(&ListSessionsQuery::default()).await?;
    if client.json {
        client.print_json(&list)?;
        return Ok(0);
    }
    if list.sessions.is_empty() {
        note("no sessions; create one with: bosun session new");
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = list
        .sessions
        .iter()
        .map(|s| {
            vec![
                s.id.to_string(),
                s.status.to_string(),
                s.provider.clone(),
                s.policy.to_string(),
                s.active_turn.as_ref().map_or_else(|| "-".into(), ToString::to_string),
                render::clip(&s.title, 50),
            ]
        })
        .collect();
    outln!("{}", render::table(&["ID", "STATUS", "PROVIDER", "POLICY", "ACTIVE TURN", "TITLE"], &rows))?;
    Ok(0)
}

async fn session_show(client: &Client, id: &str) -> anyhow::Result<i32> {
    let detail = client.api.session(id).await?;
    if client.json {
        client.print_json(&detail)?;
        return Ok(0);
    }
    let s = &detail.session;
    let bold = color_stdout();
    outln!("{}  {}", render::bold(bold, s.id.as_str()), s.title)?;
    let mut fields = vec![
        ("status", s.status.to_string() + &s.active_turn.as_ref().map(|t| format!(" (turn {t})")).unwrap_or_default()),
        ("provider", s.provider.clone()),
        ("policy", s.policy.to_string()),
        ("cwd", s.cwd.clone()),
        ("created", s.created_at.clone()),
        ("updated", s.updated_at.clone()),
        ("usage", format!("{} in, {} out tokens", s.usage.input_tokens, s.usage.output_tokens)),
    ];
    if s.archived {
        fields.push(("archived", "yes".into()));
    }
    if !s.draft.is_empty() {
        fields.push(("draft", render::quote(&s.draft, 60)));
    }
    for (name, value) in fields {
        outln!("  {name:<9} {value}")?;
    }

    outln!("turns: {}", detail.turns.len())?;
    if !detail.turns.is_empty() {
        let rows: Vec<Vec<String>> = detail
            .turns
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let reason = t.reason.as_deref().map(|r| format!(" ({})", render::clip(r, 60))).unwrap_or_default();
                vec![
                    (i + 1).to_string(),
                    t.id.to_string(),
                    t.status.to_string() + &reason,
                    t.started_at.clone(),
                    render::quote(&t.text, 50),
                ]
            })
            .collect();
        let table = render::table(&["#", "TURN", "STATUS", "STARTED", "TEXT"], &rows);
        for line in table.lines() {
            outln!("  {line}")?;
        }
    }

    outln!("pending approvals: {}", detail.pending_approvals.len())?;
    for a in &detail.pending_approvals {
        let turn = a.turn_id.as_ref().map(|t| format!(" (turn {t})")).unwrap_or_default();
        outln!("  {}  {}{turn}", a.id, a.action.describe())?;
        outln!("  {}", dim(bold, &format!("  approve with: bosun approve {} accept{}", a.id, client.server_hint)))?;
    }
    Ok(0)
}

async fn session_set(client: &Client, args: SetSessionArgs) -> anyhow::Result<i32> {
    let c = args.changes;
    let archived = if c.archive {
        Some(true)
    } else if c.unarchive {
        Some(false)
    } else {
        None
    };
    let patch = PatchSessionRequest { title: c.title, draft: None, policy: c.policy.map(Policy::from), archived };
    let s = client.api.patch_session(&args.id, &patch).await?;
    if client.json {
        client.print_json(&s)?;
        return Ok(0);
    }
    outln!("session {} {:?}: {}, policy {}", s.id, s.title, s.status, s.policy)?;
    Ok(0)
}

async fn session_rm(client: &Client, id: &str, keep_worktree: bool) -> anyhow::Result<i32> {
    let worktree = if keep_worktree { "keep" } else { "remove" };
    let deleted = client.api.delete_session(id, &DeleteSessionQuery { worktree: Some(worktree.to_string()) }).await?;
    if client.json {
        client.print_json(&deleted)?;
    } else {
        outln!("deleted session {id}")?;
    }
    Ok(0)
}

/// The message: the words joined, or stdin for `-` (multi-line prompts).
fn message_text(words: &[String]) -> anyhow::Result<String> {
    if words == ["-"] {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("reading the message from stdin")?;
        return Ok(text);
    }
    Ok(words.join(" "))
}

async fn send(client: &Client, args: SendArgs) -> anyhow::Result<i32> {
    let text = message_text(&args.text)?;
    if !args.wait {
        let started = client.api.start_turn(&args.session, &text).await?;
        if client.json {
            client.print_json(&started)?;
        } else {
            outln!("{}", started.turn_id)?;
        }
        return Ok(0);
    }

    // Read the log's head *before* the turn starts and subscribe from it:
    // the daemon replays everything after it, so even the first chunks,
    // emitted before the subscription is live, are not missed. Subscribing
    // before the POST also means no turn is started that we cannot watch.
    let health = client.api.health().await?;
    let mut events = client.follow(vec![Topic::session(&args.session).to_string()], health.head_seq).await?;
    let turn_id = client.api.start_turn(&args.session, &text).await?.turn_id;

    let mut reply = ReplyPrinter { mid_line: false, color: color_stdout(), server_hint: &client.server_hint };
    let ctrl_c = ctrl_c();
    tokio::pin!(ctrl_c);
    let mut closed_at: Option<tokio::time::Instant> = None;
    loop {
        let grace = async {
            match closed_at {
                Some(at) => tokio::time::sleep_until(at + CLOSED_GRACE).await,
                None => std::future::pending().await,
            }
        };
        let bosun_client::Followed { envelope: env, frame, .. } = tokio::select! {
            next = events.next() => next?,
            () = &mut ctrl_c => {
                reply.finish_line()?;
                // Ctrl-C stops watching, not the agent: say how to stop it.
                eprintln!("stopped watching; turn {turn_id} goes on (stop it with: bosun interrupt {}{})", args.session, client.server_hint);
                return Ok(130);
            }
            () = grace => {
                reply.finish_line()?;
                eprintln!("session {} was deleted; turn {turn_id} ended with it", args.session);
                return Ok(130);
            }
        };
        // An event this build cannot read is not about the turn it started.
        let Ok(event) = env.payload() else { continue };
        // Deleting the session interrupts the turn; its `turn:completed`
        // should follow, but do not wait for it forever.
        if let EventData::SessionClosed(_) = event {
            closed_at.get_or_insert_with(tokio::time::Instant::now);
            continue;
        }
        // The topic carries the whole session: keep this turn's events only.
        if event.turn_id() != Some(&turn_id) {
            continue;
        }
        if client.json {
            outln!("{frame}")?;
        } else {
            reply.event(&event)?;
        }
        if let EventData::TurnCompleted(done) = event {
            reply.finish_line()?;
            return Ok(turn_exit_code(&done));
        }
    }
}

/// Resolves on Ctrl-C. If the handler cannot be installed, never: the
/// default SIGINT behaviour (the process ends) is then still in place.
async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// 0 completed (or the exit code of the command a shell turn ran), 1
/// failed, 130 interrupted; the reason goes to stderr.
fn turn_exit_code(done: &events::TurnCompleted) -> i32 {
    let (turn_id, reason) = (&done.turn_id, done.reason.as_deref());
    match done.status {
        TurnStatus::Completed => match &done.result {
            None => 0,
            Some(result) => result.exit_code.map_or(1, |code| code.clamp(0, 255)),
        },
        TurnStatus::Interrupted => {
            eprintln!("turn {turn_id} interrupted{}", reason.map(|r| format!(": {r}")).unwrap_or_default());
            130
        }
        status => {
            eprintln!("turn {turn_id} {status}: {}", reason.unwrap_or("no reason given"));
            1
        }
    }
}

/// Prints a turn's events as a reply: chunks as they come, other things on
/// lines of their own.
struct ReplyPrinter<'a> {
    /// Whether the last thing written to stdout left the cursor mid-line.
    mid_line: bool,
    color: bool,
    server_hint: &'a str,
}

impl ReplyPrinter<'_> {
    fn event(&mut self, event: &EventData) -> anyhow::Result<()> {
        match event {
            EventData::StreamChunk(chunk) => {
                let text = chunk.text.as_str();
                match chunk.kind {
                    ChunkKind::Text | ChunkKind::CommandOutput => self.write(text, text),
                    ChunkKind::Thought => self.write(&dim(self.color, text), text),
                    // A notice is a line of its own, whether or not it ends in one.
                    ChunkKind::Notice => {
                        self.line(&dim(self.color, &format!("[notice] {}", text.trim_end_matches('\n'))))
                    }
                }
            }
            EventData::ApprovalRequested(requested) => {
                // Under full-access the daemon decides at once; the resolved
                // event says so.
                if requested.policy == Policy::FullAccess {
                    return Ok(());
                }
                let a = &requested.approval;
                let line = format!(
                    "approval {} requested: {} — approve with: bosun approve {} accept{}",
                    a.id,
                    a.action.describe(),
                    a.id,
                    self.server_hint
                );
                self.line(&render::bold(self.color, &line))
            }
            EventData::ApprovalResolved(resolved) => {
                let a = &resolved.approval;
                let line = if resolved.automatic {
                    format!(
                        "approval {} {} by the {} policy: {}",
                        a.id,
                        a.status,
                        Policy::FullAccess,
                        a.action.describe()
                    )
                } else {
                    format!(
                        "approval {} {}{}",
                        a.id,
                        a.status,
                        a.decided_by.map(|b| format!(" by {b}")).unwrap_or_default()
                    )
                };
                self.line(&dim(self.color, &line))
            }
            EventData::DiagnosticsLog(log) => match log.level {
                LogLevel::Warn | LogLevel::Error => {
                    self.line(&dim(self.color, &format!("[{}] {}", log.level, log.message)))
                }
                LogLevel::Info => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// Streamed text, as is; `plain` is the text without styling.
    fn write(&mut self, styled: &str, plain: &str) -> anyhow::Result<()> {
        if plain.is_empty() {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        // Flush at once: this is a live stream, not lines.
        out.write_all(styled.as_bytes()).and_then(|()| out.flush()).context("writing to stdout")?;
        self.mid_line = !plain.ends_with('\n');
        Ok(())
    }

    fn line(&mut self, line: &str) -> anyhow::Result<()> {
        self.finish_line()?;
        outln!("{line}")
    }

    fn finish_line(&mut self) -> anyhow::Result<()> {
        if self.mid_line {
            outln!()?;
            self.mid_line = false;
        }
        Ok(())
    }
}

async fn approve(client: &Client, id: &str, decision: Decision) -> anyhow::Result<i32> {
    let a = client.api.decide(id, decision).await?;
    if client.json {
        client.print_json(&a)?;
        return Ok(0);
    }
    outln!("approval {} {}: {}", a.id, a.status, a.action.describe())?;
    Ok(0)
}

async fn interrupt(client: &Client, session: &str) -> anyhow::Result<i32> {
    // Interrupting names a turn; the user names the session, so look up
    // which turn is active. Should it end meanwhile, the daemon answers
    // `conflict`, which is reported like any error.
    let s = client.api.session(session).await?.session;
    let Some(turn) = s.active_turn else {
        bail!("session {session} has no active turn (it is {})", s.status);
    };
    let interrupting = client.api.interrupt(session, turn.as_str()).await?;
    if client.json {
        client.print_json(&interrupting)?;
    } else {
        outln!("interrupting turn {turn} of session {session}")?;
    }
    Ok(0)
}

async fn events(client: &Client, args: EventsArgs) -> anyhow::Result<i32> {
    let print = |env: &Envelope, frame: Option<&str>| -> anyhow::Result<()> {
        match (client.json, frame) {
            (true, Some(frame)) => outln!("{frame}"),
            (true, None) => outln!("{}", serde_json::to_string(env).context("encoding an event")?),
            (false, _) => outln!("{}", render::event_line(env)),
        }
    };

    // The backlog, page by page: `next` is where the following page starts.
    let mut since = args.since;
    loop {
        let query =
            EventsQuery { since, session: args.session.clone(), topic: args.topic.clone(), limit: Some(EVENTS_PAGE) };
        let page = client.api.events(&query).await?;
        for env in &page.events {
            print(env, None)?;
        }
        let full = page.events.len() == EVENTS_PAGE;
        // A cursor that does not move would loop forever; trust only progress.
        let moved = page.next > since;
        since = since.max(page.next);
        if !full || !moved {
            break;
        }
    }
    if !args.follow {
        return Ok(0);
    }

    // Live: subscribe from where the backlog ended, so nothing falls between.
    let topics = match (args.session, args.topic) {
        (Some(session), _) => vec![Topic::session(&session).to_string()],
        (None, Some(topic)) => vec![topic],
        (None, None) => vec!["*".to_string()],
    };
    let mut stream = client.follow(topics, since).await?;
    let ctrl_c = ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            next = stream.next() => {
                let followed = next?;
                print(&followed.envelope, Some(&followed.frame))?;
            }
            () = &mut ctrl_c => return Ok(130),
        }
    }
}

async fn status(client: &Client) -> anyhow::Result<i32> {
    let h = client.api.health().await?;
    if client.json {
        client.print_json(&h)?;
        return Ok(0);
    }
    outln!("bosun {} at {}: {}", h.version, client.api.base(), h.status)?;
    outln!("  uptime    {}", render::duration(h.uptime_s))?;
    outln!("  head seq  {}", h.head_seq)?;
    outln!("  sessions  {}", h.sessions)?;
    let actors: Vec<String> =
        h.actors.iter().map(|(kind, a)| format!("{kind} {} running/{} restarts", a.running, a.restarts)).collect();
    outln!("  actors    {}", if actors.is_empty() { "none".to_string() } else { actors.join(", ") })?;
    Ok(0)
}

async fn doctor(client: &Client) -> anyhow::Result<i32> {
    use bosun_proto::{CheckStatus, DoctorCheck, DoctorReport};
    let report = match client.api.doctor().await {
        Ok(report) => report,
        // The checks that matter are the daemon's own: without it, say so.
        Err(bosun_client::ClientError::Unreachable { base, cause }) => DoctorReport {
            checks: vec![DoctorCheck {
                name: "daemon".into(),
                status: CheckStatus::Fail,
                detail: format!("not reachable at {base}: {cause}"),
                hint: Some("start it (bosun serve, or bosun service install), or point --url at it".into()),
            }],
        },
        Err(e) => return Err(e.into()),
    };
    let failed = report.checks.iter().any(|c| c.status == CheckStatus::Fail);
    if client.json {
        client.print_json(&report)?;
    } else {
        let width = report.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        for c in &report.checks {
            let status = match c.status {
                CheckStatus::Ok => "ok",
                CheckStatus::Warn => "warn",
                CheckStatus::Fail => "FAIL",
            };
            println!("{status:<4}  {:<width$}  {}", c.name, c.detail);
            if let Some(hint) = &c.hint {
                println!("      {:<width$}  fix: {hint}", "");
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

async fn providers(client: &Client) -> anyhow::Result<i32> {
    let list = client.api.providers().await?;
    if client.json {
        client.print_json(&list)?;
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = list
        .providers
        .iter()
        .map(|p| {
            let c = p.capabilities;
            let caps: Vec<&str> = [
                (c.load_session, "load"),
                (c.resume, "resume"),
                (c.steer, "steer"),
                (c.interrupt, "interrupt"),
                (c.images, "images"),
            ]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect();
            let mut status = p.status.clone();
            if p.running > 0 {
                status.push_str(&format!(" ({})", p.running));
            }
            let command = match (&p.path, &p.command) {
                (Some(path), _) => path.clone(),
                (None, Some(command)) => command.clone(),
                (None, None) => "(built in)".into(),
            };
            let command = std::iter::once(command).chain(p.args.iter().cloned()).collect::<Vec<_>>().join(" ");
            vec![
                p.name.clone(),
                p.kind.clone(),
                status,
                p.enforcement.to_string(),
                p.version.clone().unwrap_or_else(|| "-".into()),
                caps.join(","),
                render::clip(&command, 60),
            ]
        })
        .collect();
    let header = ["NAME", "KIND", "STATUS", "ENFORCEMENT", "VERSION", "CAPABILITIES", "COMMAND"];
    outln!("{}", render::table(&header, &rows))?;
    for p in &list.providers {
        if let Some(detail) = &p.enforcement_detail {
            outln!("{} ({}): {detail}", p.name, p.enforcement)?;
        }
    }
    for p in list.providers.iter().filter(|p| p.last_crash.is_some()) {
        outln!("{}: {} crash(es), last: {}", p.name, p.crashes, p.last_crash.as_deref().unwrap_or(""))?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    /// The shape `main.rs` gives us: flattened into the top-level command.
    #[derive(Debug, Parser)]
    #[command(name = "bosun")]
    struct Top {
        #[command(subcommand)]
        command: ClientCommand,
    }

    fn parse(args: &[&str]) -> Result<ClientCommand, clap::Error> {
        Top::try_parse_from(std::iter::once("bosun").chain(args.iter().copied())).map(|t| t.command)
    }

    #[test]
    fn the_parser_is_consistent() {
        Top::command().debug_assert();
    }

    #[test]
    fn common_options_go_before_or_after_nested_subcommands() {
        for args in [
            &["session", "ls", "--json", "--server", "http://x:1"][..],
            &["session", "--json", "--server", "http://x:1", "ls"],
        ] {
            let Ok(ClientCommand::Session(s)) = parse(args) else { panic!("{args:?}") };
            assert!(s.common.json);
            assert_eq!(s.common.server, "http://x:1");
        }
        let Ok(ClientCommand::Status(s)) = parse(&["status", "--server", "http://y:2", "--json"]) else { panic!() };
        assert!(s.common.json);
        assert_eq!(s.common.server, "http://y:2");
    }

    #[test]
    fn send_joins_words_and_takes_wait_anywhere() {
        let Ok(ClientCommand::Send(s)) = parse(&["send", "s_1", "hello", "--wait", "world"]) else { panic!() };
        assert!(s.wait);
        assert_eq!(message_text(&s.text).unwrap(), "hello world");
    }

    #[test]
    fn usage_errors() {
        assert!(parse(&["approve", "a_1", "maybe"]).is_err());
        assert!(parse(&["session", "set", "s_1"]).is_err(), "set needs a change");
        assert!(parse(&["session", "show", ".."]).is_err());
        assert!(parse(&["events", "--session", "s", "--topic", "system"]).is_err());
        assert!(parse(&["session", "new", "--policy", "full-access"]).is_ok());
    }
}
