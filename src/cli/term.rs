//! `bosun term ls|spawn|send|read|close|attach`: the daemon's terminals
//! (its own `pty` ones and the emulators it drives) over `bosun-client`.
//!
//! `attach` puts a `pty` terminal in the terminal the CLI runs in: raw mode,
//! keystrokes as INPUT frames, output written to stdout and acknowledged once
//! written (the daemon holds the child back when no client acknowledges), the
//! window size followed, and the socket resumed from the last byte written
//! when it drops. It exits with the child's exit code.

use super::{id_arg, note, render, Client, CommonArgs};
use anyhow::{bail, Context as _};
use bosun_client::{TerminalEvent, TerminalReader, TerminalWriter};
use bosun_proto::*;
use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::time::Duration;

macro_rules! outln {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*).context("writing to stdout")
    };
}

/// The first key of the detach sequence: Ctrl-] (as telnet has it).
pub const DETACH_PREFIX: u8 = 0x1d;
/// The second: `q`. Ctrl-] twice sends one Ctrl-] through.
pub const DETACH_KEY: u8 = b'q';
/// How long `attach` keeps trying to get its socket back after it dropped.
const RECONNECT_FOR: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Args)]
pub struct TermArgs {
    #[command(flatten)]
    pub(super) common: CommonArgs,
    #[command(subcommand)]
    command: TermCommand,
}

#[derive(Debug, clap::Subcommand)]
enum TermCommand {
    /// The terminals the daemon knows (installed, running, reachable, what each can do) and its bindings.
    #[command(visible_alias = "list")]
    Ls,
    /// Start a command in a terminal and bind it; prints the binding id.
    Spawn(SpawnArgs),
    /// Type text into a bound terminal.
    Send {
        #[arg(value_parser = id_arg)]
        id: String,
        text: String,
        /// Send it as a paste (bracketed where the program asked for it).
        #[arg(long)]
        paste: bool,
        /// Press Enter after it.
        #[arg(long)]
        enter: bool,
    },
    /// Print what a terminal shows; for `pty` its whole retained scrollback, as raw bytes.
    Read {
        #[arg(value_parser = id_arg)]
        id: String,
    },
    /// Close a binding (a `pty` terminal's child is hung up and killed).
    Close {
        #[arg(value_parser = id_arg)]
        id: String,
    },
    /// Use a `pty` terminal from this terminal until it ends or you detach.
    #[command(long_about = ATTACH_HELP)]
    Attach(AttachArgs),
}

const ATTACH_HELP: &str = "Use a `pty` terminal from this terminal until it ends or you detach.

Keystrokes go to the terminal as they are typed (this terminal is put in raw
mode and restored on every way out), its output is shown, and this window's
size is followed. Detach with Ctrl-] then q; Ctrl-] twice sends one Ctrl-].
If the connection to the daemon drops, attach reconnects and goes on from the
last byte it showed. When the terminal's program ends, attach prints how it
ended and exits with its exit code (128+N for a signal N). stdin must be a
terminal; from scripts use `bosun term send` and `bosun term read`.";

#[derive(Debug, clap::Args)]
struct SpawnArgs {
    /// Which terminal: pty (the daemon's own), tmux, kitty, wezterm, konsole, tilix, alacritty
    /// (default: the daemon's, pty).
    #[arg(long, value_parser = terminal_arg)]
    terminal: Option<TerminalKind>,
    /// Bind it to this session: it starts in the session's directory (and jail).
    #[arg(long, value_name = "ID", value_parser = id_arg)]
    session: Option<String>,
    /// Where it starts (default: the session's directory, or the current one).
    #[arg(long, value_name = "DIR")]
    cwd: Option<PathBuf>,
    /// An environment variable for the command, repeated.
    #[arg(long = "env", value_name = "K=V", value_parser = kv_arg)]
    env: Vec<(String, String)>,
    /// A label on the binding, repeated.
    #[arg(long = "label", value_name = "K=V", value_parser = kv_arg)]
    labels: Vec<(String, String)>,
    /// `pty`: the size it starts at (default: this terminal's, else 80x24).
    #[arg(long)]
    cols: Option<u16>,
    #[arg(long)]
    rows: Option<u16>,
    /// The program and its arguments, after `--` (none: the user's shell).
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct AttachArgs {
    #[arg(value_parser = id_arg)]
    id: String,
    /// Replay its output from this byte offset (default: 0, all the scrollback kept).
    #[arg(long, value_name = "N", default_value_t = 0)]
    from: u64,
}

fn terminal_arg(s: &str) -> Result<TerminalKind, String> {
    s.parse::<TerminalKind>()
}

fn kv_arg(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?} is not K=V"))?;
    if k.is_empty() {
        return Err(format!("{s:?} has no name before ="));
    }
    Ok((k.to_string(), v.to_string()))
}

/// Pairs into a map; a key given twice is a mistake worth saying, not a
/// silent last-one-wins.
fn to_map(flag: &str, pairs: Vec<(String, String)>) -> anyhow::Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for (k, v) in pairs {
        if map.insert(k.clone(), v).is_some() {
            bail!("--{flag} {k} is given twice");
        }
    }
    Ok(map)
}

pub(super) async fn term(args: TermArgs) -> anyhow::Result<i32> {
    let client = Client::new(&args.common)?;
    match args.command {
        TermCommand::Ls => ls(&client).await,
        TermCommand::Spawn(spawn_args) => spawn(&client, spawn_args).await,
        TermCommand::Send { id, text, paste, enter } => {
            let done = client.api.send_text(&id, &SendTextRequest { text, paste, enter }).await?;
            if client.json {
                client.print_json(&done)?;
            } else if let Some(approval) = &done.approval_id {
                // The daemon asks before typing into some terminals: say what waits.
                outln!(
                    "{}: {} (approve with: bosun approve {approval} accept{})",
                    id,
                    done.outcome,
                    client.server_hint
                )?;
            } else {
                note(&format!("sent to {id}: {}", done.outcome));
            }
            Ok(if done.approval_id.is_some() { HELD } else { 0 })
        }
        TermCommand::Read { id } => read(&client, &id).await,
        TermCommand::Close { id } => {
            let done = client.api.close_binding(&id).await?;
            if client.json {
                client.print_json(&done)?;
            } else {
                outln!("{} {}", done.binding.binding_id, done.binding.state)?;
            }
            Ok(0)
        }
        TermCommand::Attach(attach_args) => attach(&client, attach_args).await,
    }
}

async fn ls(client: &Client) -> anyhow::Result<i32> {
    let terminals = client.api.terminals().await?;
    let bindings = client.api.bindings().await?;
    if client.json {
        client.print_json(&serde_json::json!({"terminals": terminals.terminals, "bindings": bindings.bindings}))?;
        return Ok(0);
    }
    let yes_no = |b: bool| (if b { "yes" } else { "no" }).to_string();
    let rows: Vec<Vec<String>> = terminals
        .terminals
        .iter()
        .map(|t| {
            vec![
                t.terminal.to_string(),
                yes_no(t.installed),
                yes_no(t.running),
                yes_no(t.reachable),
                t.version.clone().unwrap_or_else(|| "-".into()),
                capabilities(&t.capabilities),
            ]
        })
        .collect();
    outln!("{}", render::table(&["TERMINAL", "INSTALLED", "RUNNING", "REACHABLE", "VERSION", "CAPABILITIES"], &rows))?;
    outln!()?;
    if bindings.bindings.is_empty() {
        note("no bindings; start one with: bosun term spawn -- CMD");
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = bindings
        .bindings
        .iter()
        .map(|b| {
            let command = if b.command.is_empty() { "(shell)".to_string() } else { b.command.join(" ") };
            vec![
                b.binding_id.clone(),
                b.terminal.to_string(),
                b.session_id.as_ref().map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
                b.ipc_endpoint.clone(),
                b.state.to_string(),
                b.exit.as_ref().map(exit_text).unwrap_or_else(|| "-".into()),
                render::clip(&command, 60),
            ]
        })
        .collect();
    outln!("{}", render::table(&["BINDING", "TERMINAL", "SESSION", "ENDPOINT", "STATE", "EXIT", "COMMAND"], &rows))?;
    Ok(0)
}

fn capabilities(c: &TerminalCapabilities) -> String {
    let names: Vec<&str> = [
        (c.spawn, "spawn"),
        (c.split, "split"),
        (c.focus, "focus"),
        (c.send_text, "send"),
        (c.read_text, "read"),
        (c.clipboard_read, "clip-read"),
        (c.clipboard_write, "clip-write"),
        (c.cwd_sync, "cwd"),
        (c.bracketed_paste, "paste"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    if names.is_empty() {
        "-".into()
    } else {
        names.join(",")
    }
}

fn exit_text(e: &ExitView) -> String {
    match (&e.code, &e.signal) {
        (Some(code), _) => format!("code {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => "?".into(),
    }
}

async fn spawn(client: &Client, args: SpawnArgs) -> anyhow::Result<i32> {
    // The daemon resolves nothing relative to the client: send an absolute
    // directory, the current one unless a session gives its own.
    let cwd = match (args.cwd, &args.session) {
        (Some(dir), _) => Some(dir),
        (None, None) => Some(std::env::current_dir().context("reading the current directory")?),
        (None, Some(_)) => None,
    };
    let cwd = match cwd {
        Some(dir) => {
            let abs = std::path::absolute(&dir).with_context(|| format!("making {} absolute", dir.display()))?;
            Some(
                abs.to_str()
                    .with_context(|| format!("the directory {} is not valid UTF-8", abs.display()))?
                    .to_string(),
            )
        }
        None => None,
    };
    let (cols, rows) = match (args.cols, args.rows) {
        (None, None) => window_size().map_or((None, None), |(c, r)| (Some(c), Some(r))),
        given => given,
    };
    let session_id = args.session.map(SessionId::new);
    let req = SpawnTerminalRequest {
        terminal: args.terminal,
        session_id,
        cwd,
        command: args.command,
        env: to_map("env", args.env)?,
        labels: to_map("label", args.labels)?,
        cols,
        rows,
        ..Default::default()
    };
    let outcome = client.api.spawn_terminal(&req).await?;
    if client.json {
        client.print_json(&outcome)?;
        return Ok(if outcome.binding.is_some() { 0 } else { HELD });
    }
    let Some(b) = outcome.binding else {
        // Held by plan-only (a command to start): nothing ran. The id of
        // the approval on stderr, and an exit code a script can tell apart.
        let id = outcome.approval.map(|a| a.id.to_string()).unwrap_or_default();
        note(&format!("held for approval {id}: it starts once accepted (`bosun approve {id} accept`)"));
        return Ok(HELD);
    };
    // The id alone on stdout, so `id=$(bosun term spawn -- sh)` works.
    outln!("{}", b.binding_id)?;
    note(&format!("{} {} in {} ({})", b.terminal, b.ipc_endpoint, b.cwd, b.state));
    Ok(0)
}

/// The exit code of a spawn or send held for a person's approval.
const HELD: i32 = 3;

async fn read(client: &Client, id: &str) -> anyhow::Result<i32> {
    let binding = client.api.binding(id).await?;
    if client.json || binding.terminal != TerminalKind::Pty {
        let text = client.api.read_text(id).await?;
        if client.json {
            client.print_json(&text)?;
        } else {
            let mut out = std::io::stdout().lock();
            out.write_all(text.text.as_bytes()).and_then(|()| out.flush()).context("writing to stdout")?;
        }
        return Ok(0);
    }
    // The text endpoint replaces bytes that are not UTF-8; the socket's
    // replay is the scrollback exactly as the program wrote it.
    let stream = client.api.attach_terminal(id, 0).await?;
    let (hello, mut reader, mut writer) = stream.split();
    let end = hello.output.end;
    let mut next = hello.from;
    let mut out = std::io::stdout().lock();
    while next < end {
        match reader.next().await? {
            TerminalEvent::Output { offset, bytes } => {
                // Only what was there when we asked: a live terminal goes on writing.
                let skip = next.saturating_sub(offset) as usize;
                let upto = ((end - offset) as usize).min(bytes.len());
                if skip < upto {
                    out.write_all(&bytes[skip..upto]).context("writing to stdout")?;
                }
                next = offset + bytes.len() as u64;
                writer.ack(next).await?;
            }
            // Not the terminal's text.
            TerminalEvent::Clipboard(_) => {}
            TerminalEvent::Exit(_) | TerminalEvent::Closed => break,
        }
    }
    out.flush().context("writing to stdout")?;
    writer.close().await;
    Ok(0)
}

// ---- attach ----

/// What the detach-key filter made of some keystrokes.
#[derive(Debug, PartialEq, Eq)]
enum Keys {
    Send(Vec<u8>),
    /// Send these, then detach.
    Detach(Vec<u8>),
}

/// Finds Ctrl-] q in the keystrokes, across reads: a pending Ctrl-] is held
/// until the next byte says what it was.
#[derive(Debug, Default)]
struct DetachFilter {
    pending: bool,
}

impl DetachFilter {
    fn feed(&mut self, input: &[u8]) -> Keys {
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            if self.pending {
                self.pending = false;
                match b {
                    DETACH_KEY => return Keys::Detach(out),
                    // Ctrl-] twice: one goes through.
                    DETACH_PREFIX => out.push(DETACH_PREFIX),
                    other => out.extend_from_slice(&[DETACH_PREFIX, other]),
                }
            } else if b == DETACH_PREFIX {
                self.pending = true;
            } else {
                out.push(b);
            }
        }
        Keys::Send(out)
    }
}

/// The terminal's settings as they were, put back when dropped: on return,
/// on `?`, and on a panic's unwinding. Signals that would end the process
/// are caught by `attach` and end its loop, so they come here too.
struct RawMode {
    saved: libc::termios,
}

impl RawMode {
    fn enter() -> anyhow::Result<RawMode> {
        // SAFETY: a zeroed termios is a valid out-parameter for tcgetattr.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd 0 is open (it is a TTY, checked by the caller) and `saved` is valid.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } != 0 {
            return Err(std::io::Error::last_os_error()).context("reading the terminal's settings (tcgetattr)");
        }
        let mut raw = saved;
        // SAFETY: cfmakeraw only writes to the struct it is given.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: as above; TCSAFLUSH drops typed-ahead input meant for the old mode.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSAFLUSH, &raw) } != 0 {
            return Err(std::io::Error::last_os_error()).context("putting the terminal in raw mode (tcsetattr)");
        }
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restoring settings read from the same fd.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved) };
    }
}

/// This terminal's size (cols, rows), from stdout or else stdin.
fn window_size() -> Option<(u16, u16)> {
    for fd in [libc::STDOUT_FILENO, libc::STDIN_FILENO] {
        // SAFETY: a zeroed winsize is a valid out-parameter for TIOCGWINSZ.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ writes a winsize; a non-terminal fd just fails.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_col > 0 && ws.ws_row > 0 {
            return Some((ws.ws_col, ws.ws_row));
        }
    }
    None
}

/// How attach ended.
enum Ended {
    Exit(TerminalExit),
    Detached,
    /// SIGTERM or SIGHUP: the terminal is left running.
    Signalled(&'static str),
}

async fn attach(client: &Client, args: AttachArgs) -> anyhow::Result<i32> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "bosun term attach needs a terminal on stdin, and stdin is not a TTY; from a script, use `bosun term send {id}` and `bosun term read {id}`",
            id = args.id
        );
    }
    let binding = client.api.binding(&args.id).await?;
    if binding.terminal != TerminalKind::Pty {
        bail!(
            "{} is a {} terminal; attach works on pty terminals only (use that terminal's own window)",
            args.id,
            binding.terminal
        );
    }
    let stream = client.api.attach_terminal(&args.id, args.from).await?;

    // Signals first: once raw mode is on, nothing else may end the process
    // without going through the guard's drop.
    use tokio::signal::unix::{signal, SignalKind};
    let mut winch = signal(SignalKind::window_change()).context("listening for SIGWINCH")?;
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut hup = signal(SignalKind::hangup()).context("listening for SIGHUP")?;

    let keys = stdin_reader();
    let raw = RawMode::enter()?;
    let outcome = attached(client, &args, stream, keys, &mut winch, &mut term, &mut hup).await;
    drop(raw);

    let id = &args.id;
    match outcome? {
        (Ended::Detached, offset) => {
            eprintln!(
                "detached from {id}; reattach with: bosun term attach {id} --from {offset}{}",
                client.server_hint
            );
            Ok(0)
        }
        (Ended::Signalled(name), _) => {
            eprintln!("stopped by {name}; {id} goes on (bosun term attach {id}{})", client.server_hint);
            Ok(128 + (if name == "SIGHUP" { libc::SIGHUP } else { libc::SIGTERM }))
        }
        (Ended::Exit(exit), _) => Ok(report_exit(id, &exit)),
    }
}

/// Says how the terminal ended on stderr; the exit code to end with.
fn report_exit(id: &str, exit: &TerminalExit) -> i32 {
    let reason = exit.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
    match (&exit.state, &exit.exit) {
        (_, Some(ExitView { code: Some(code), .. })) => {
            eprintln!("{id} exited with code {code}");
            (*code).clamp(0, 255)
        }
        (_, Some(ExitView { signal: Some(signal), .. })) => {
            eprintln!("{id} was killed by {signal}");
            signal_number(signal).map_or(1, |n| 128 + n)
        }
        (state, _) => {
            eprintln!("{id} is {state}{reason}");
            1
        }
    }
}

/// `SIGKILL`, `KILL` or `9` as a number, for the 128+N convention of shells.
fn signal_number(name: &str) -> Option<i32> {
    if let Ok(n) = name.parse() {
        return Some(n);
    }
    let name = name.strip_prefix("SIG").unwrap_or(name);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ABRT" => libc::SIGABRT,
        "KILL" => libc::SIGKILL,
        "SEGV" => libc::SIGSEGV,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        _ => return None,
    };
    Some(n)
}

/// Keystrokes from stdin, read on a thread of their own: a blocking read of
/// a TTY cannot be cancelled, and the thread dies with the process.
fn stdin_reader() -> tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    std::thread::Builder::new()
        .name("term-stdin".into())
        .spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                // SAFETY: reading into a buffer we own, of its length.
                let n = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
                let item = match n {
                    n if n > 0 => Ok(buf[..n as usize].to_vec()),
                    0 => Ok(Vec::new()),
                    _ => {
                        let err = std::io::Error::last_os_error();
                        if err.kind() == std::io::ErrorKind::Interrupted {
                            continue;
                        }
                        Err(err)
                    }
                };
                let last = !matches!(&item, Ok(b) if !b.is_empty());
                if tx.blocking_send(item).is_err() || last {
                    return;
                }
            }
        })
        .ok();
    rx
}

/// The attached loop, in raw mode. Returns how it ended and the offset of
/// the next byte not yet written out.
async fn attached(
    client: &Client,
    args: &AttachArgs,
    stream: bosun_client::TerminalStream,
    mut keys: tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    winch: &mut tokio::signal::unix::Signal,
    term: &mut tokio::signal::unix::Signal,
    hup: &mut tokio::signal::unix::Signal,
) -> anyhow::Result<(Ended, u64)> {
    let (hello, mut reader, mut writer) = stream.split();
    let mut next = hello.from;
    if hello.from > args.from {
        // The scrollback no longer holds what was asked for.
        crlf_note(&format!("[bosun: bytes {}..{} are no longer kept]", args.from, hello.from));
    }
    let mut filter = DetachFilter::default();
    let mut stdin_open = true;
    send_size(&mut writer).await;
    let mut stdout = std::io::stdout();
    loop {
        tokio::select! {
            event = reader.next() => {
                match event {
                    Ok(TerminalEvent::Output { offset, bytes }) => {
                        // A replay after a reconnect may start before what we
                        // have shown; show each byte once.
                        let skip = next.saturating_sub(offset) as usize;
                        if skip < bytes.len() {
                            stdout.write_all(&bytes[skip..]).and_then(|()| stdout.flush()).context("writing to stdout")?;
                        }
                        next = next.max(offset + bytes.len() as u64);
                        // Acknowledged only once written: this is what lets the
                        // daemon hold a fast program back to our pace.
                        if writer.ack(next).await.is_err() {
                            (reader, writer) = reconnect(client, &args.id, &mut next).await?;
                            send_size(&mut writer).await;
                        }
                    }
                    // This terminal's clipboard is the one to set, as
                        // a program's own OSC 52 would.
                    Ok(TerminalEvent::Clipboard(sequences)) => {
                        stdout.write_all(&sequences).and_then(|()| stdout.flush()).context("writing to stdout")?;
                    }
                    Ok(TerminalEvent::Exit(exit)) => {
                        writer.close().await;
                        return Ok((Ended::Exit(exit), next));
                    }
                    Ok(TerminalEvent::Closed) | Err(_) => {
                        (reader, writer) = reconnect(client, &args.id, &mut next).await?;
                        send_size(&mut writer).await;
                    }
                }
            }
            got = keys.recv(), if stdin_open => {
                let bytes = match got {
                    Some(Ok(bytes)) if !bytes.is_empty() => bytes,
                    // End of input (or an error reading it): keep showing the
                    // terminal until it ends, as `ssh -T` would.
                    _ => { stdin_open = false; continue; }
                };
                let (send, detach) = match filter.feed(&bytes) {
                    Keys::Send(b) => (b, false),
                    Keys::Detach(b) => (b, true),
                };
                // A keystroke lost to a dropped socket is not replayed: the
                // next read notices the drop and reconnects.
                if !send.is_empty() {
                    let _ = writer.input(&send).await;
                }
                if detach {
                    writer.close().await;
                    return Ok((Ended::Detached, next));
                }
            }
            _ = winch.recv() => send_size(&mut writer).await,
            _ = term.recv() => { writer.close().await; return Ok((Ended::Signalled("SIGTERM"), next)); }
            _ = hup.recv() => { writer.close().await; return Ok((Ended::Signalled("SIGHUP"), next)); }
        }
    }
}

/// The local window size to the terminal; a failure shows up on the next read.
async fn send_size(writer: &mut TerminalWriter) {
    if let Some((cols, rows)) = window_size() {
        let _ = writer.resize(cols, rows).await;
    }
}

/// A line on stderr in raw mode, where `\n` alone does not return the cursor.
fn crlf_note(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\n{text}\r\n");
    let _ = err.flush();
}

/// The socket again, from `next`, until it comes back or `RECONNECT_FOR`
/// has passed (the daemon restarting takes a moment).
async fn reconnect(client: &Client, id: &str, next: &mut u64) -> anyhow::Result<(TerminalReader, TerminalWriter)> {
    crlf_note("[bosun: the connection dropped; reconnecting…]");
    let deadline = tokio::time::Instant::now() + RECONNECT_FOR;
    let mut wait = Duration::from_millis(100);
    loop {
        match client.api.attach_terminal(id, *next).await {
            Ok(stream) => {
                let (hello, reader, writer) = stream.split();
                if hello.from > *next {
                    crlf_note(&format!("[bosun: bytes {}..{} are no longer kept]", *next, hello.from));
                    *next = hello.from;
                }
                crlf_note("[bosun: reconnected]");
                return Ok((reader, writer));
            }
            // A binding the daemon no longer knows will not come back.
            Err(
                bosun_client::ClientError::Api { status: 404, .. }
                | bosun_client::ClientError::WebSocketRefused { status: 404, .. },
            ) => {
                bail!("{id} is gone from the daemon")
            }
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(e).with_context(|| format!("reconnecting to {id} for {} s", RECONNECT_FOR.as_secs()));
            }
            Err(_) => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_needs_ctrl_bracket_then_q_even_across_reads() {
        let mut f = DetachFilter::default();
        assert_eq!(f.feed(b"ls\r"), Keys::Send(b"ls\r".to_vec()));
        assert_eq!(f.feed(b"a\x1d"), Keys::Send(b"a".to_vec()));
        assert_eq!(f.feed(b"q"), Keys::Detach(Vec::new()));
        let mut f = DetachFilter::default();
        assert_eq!(f.feed(b"x\x1dqy"), Keys::Detach(b"x".to_vec()));
        let mut f = DetachFilter::default();
        assert_eq!(f.feed(b"\x1d\x1d"), Keys::Send(vec![0x1d]), "Ctrl-] twice sends one");
        assert_eq!(f.feed(b"\x1dz"), Keys::Send(vec![0x1d, b'z']), "Ctrl-] then another key sends both");
        assert_eq!(f.feed(b"q"), Keys::Send(b"q".to_vec()), "q alone is a q");
    }

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(signal_number("SIGKILL"), Some(9));
        assert_eq!(signal_number("TERM"), Some(15));
        assert_eq!(signal_number("9"), Some(9));
        assert_eq!(signal_number("SIGWHAT"), None);
    }

    #[test]
    fn key_values() {
        assert_eq!(kv_arg("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert!(kv_arg("A").is_err());
        assert!(kv_arg("=x").is_err());
        assert!(to_map("env", vec![("A".into(), "1".into()), ("A".into(), "2".into())]).is_err());
        assert!(terminal_arg("tmux").is_ok());
        assert!(terminal_arg("xterm").is_err());
    }
}
