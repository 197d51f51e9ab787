//! The Docker backend (`"sandbox":"docker"`): a session's shell runs in a
//! container of its own, spoken to over the Docker Engine API (Docker, or
//! podman's compatible service) through bollard.
//!
//! One container per session, named `bosun-<session id>` and labelled
//! `bosun.session=<id>`: `sh` as its first process, stdin attached, the
//! session's cwd bind-mounted read-write at the same path (so the paths the
//! shell prints are the host's), no network unless the session's policy opens
//! it, memory/CPU/pid limits, every capability dropped, no privilege
//! escalation and, by default, a read-only root filesystem with a private
//! tmpfs `/tmp`. Dropping the [`ShellProcess`]'s guard removes the container.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::errors::Error as EngineError;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountTypeEnum};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, CreateImageOptions, KillContainerOptions, RemoveContainerOptions,
};
use bollard::{Docker, API_DEFAULT_VERSION};
use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::sync::OnceCell;

use crate::shell_host::{IsolationError, ShellHost, ShellProcess, ShellSpec};

/// Where the engine listens when neither the config nor `DOCKER_HOST` says.
pub const DEFAULT_SOCKET: &str = "unix:///var/run/docker.sock";
pub const DEFAULT_MEMORY_MB: u64 = 2048;
pub const DEFAULT_CPUS: f64 = 2.0;
pub const DEFAULT_PIDS_LIMIT: u64 = 512;
/// The network mode of a session whose policy opens the network.
pub const DEFAULT_NETWORK: &str = "bridge";
/// The label every session container carries, valued with the session id:
/// `docker ps -a --filter label=bosun.session` lists them.
pub const SESSION_LABEL: &str = "bosun.session";

/// A dead or wedged engine must not hold a session's start for the 2 minutes
/// of bollard's default request timeout.
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Per request, once the engine has answered a ping; creating a container on
/// a slow storage driver can take several seconds.
const REQUEST_TIMEOUT_SECS: u64 = 60;
/// How much container output may wait in memory for a slow reader before the
/// attach stream is paused.
const PIPE_BUFFER: usize = 64 * 1024;

/// `[docker]` in the daemon's config.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DockerConfig {
    /// The engine's API: `unix:///run/podman/podman.sock`, a bare socket path,
    /// or `tcp://host:port` (plain HTTP). Default: `DOCKER_HOST`, else
    /// [`DEFAULT_SOCKET`].
    #[serde(default)]
    pub socket: Option<String>,
    /// The image sessions run in; it must provide `sh`. Required.
    #[serde(default)]
    pub image: Option<String>,
    /// Pull the image from its registry when the engine does not have it.
    /// Off by default: a session start never reaches a registry unless asked.
    #[serde(default)]
    pub pull: bool,
    /// The network mode used when a session's policy opens the network
    /// (default [`DEFAULT_NETWORK`]); a closed network is always `none`.
    #[serde(default)]
    pub network: Option<String>,
    /// Memory limit in MiB, swap included (default [`DEFAULT_MEMORY_MB`]).
    #[serde(default)]
    pub memory_mb: Option<u64>,
    /// CPU limit in cores, fractions allowed (default [`DEFAULT_CPUS`]).
    #[serde(default)]
    pub cpus: Option<f64>,
    /// Most processes and threads alive at once (default [`DEFAULT_PIDS_LIMIT`]).
    #[serde(default)]
    pub pids_limit: Option<u64>,
    /// Mount the image read-only, with a private tmpfs `/tmp` (default
    /// true). Turn it off for images whose tools write outside the worktree
    /// and `/tmp` (caches in `$HOME`, say).
    #[serde(default)]
    pub read_only_root: Option<bool>,
    /// The user the shell runs as (`uid:gid` or a name the image knows; an
    /// empty string keeps the image's user). Default: the daemon's own
    /// uid:gid on a rootful engine, so files the shell writes in the worktree
    /// belong to the daemon's user; the image's user on a rootless engine,
    /// whose root already maps to that user.
    #[serde(default)]
    pub user: Option<String>,
}

/// The limits a container is created with, checked.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Limits {
    memory_bytes: i64,
    nano_cpus: i64,
    pids: i64,
}

impl DockerConfig {
    /// The engine address this config resolves to.
    pub fn socket(&self) -> String {
        let from_env = || std::env::var("DOCKER_HOST").ok().filter(|host| !host.trim().is_empty());
        self.socket.clone().or_else(from_env).unwrap_or_else(|| DEFAULT_SOCKET.to_string())
    }

    fn image(&self) -> Result<&str, IsolationError> {
        match self.image.as_deref().map(str::trim) {
            Some(image) if !image.is_empty() => Ok(image),
            _ => Err(IsolationError::Start(
                "no image configured for docker sessions: set `image` in the `[docker]` section of the daemon's \
                 config (an image present in the engine that provides `sh`)"
                    .into(),
            )),
        }
    }

    fn limits(&self) -> Result<Limits, IsolationError> {
        let memory_mb = self.memory_mb.unwrap_or(DEFAULT_MEMORY_MB);
        if memory_mb == 0 || memory_mb > (i64::MAX >> 20) as u64 {
            return Err(IsolationError::Start(format!("`[docker] memory_mb = {memory_mb}` is not a usable limit")));
        }
        let cpus = self.cpus.unwrap_or(DEFAULT_CPUS);
        // Below a thousandth of a core the engines refuse the value anyway.
        if !cpus.is_finite() || !(0.001..=1_000_000.0).contains(&cpus) {
            return Err(IsolationError::Start(format!("`[docker] cpus = {cpus}` is not a usable limit")));
        }
        let pids = self.pids_limit.unwrap_or(DEFAULT_PIDS_LIMIT);
        if pids == 0 || pids > i64::MAX as u64 {
            return Err(IsolationError::Start(format!("`[docker] pids_limit = {pids}` is not a usable limit")));
        }
        Ok(Limits { memory_bytes: (memory_mb << 20) as i64, nano_cpus: (cpus * 1e9) as i64, pids: pids as i64 })
    }

    fn network_mode(&self, open: bool) -> String {
        if open {
            self.network.clone().filter(|mode| !mode.trim().is_empty()).unwrap_or_else(|| DEFAULT_NETWORK.into())
        } else {
            "none".into()
        }
    }
}

/// The engine sessions run their shells in. Nothing is contacted until the
/// first shell starts, so a daemon whose engine is down still starts; each
/// start pings the engine afresh.
#[derive(Debug)]
pub struct DockerHost {
    config: DockerConfig,
    /// A client speaking the API version negotiated with the engine.
    client: OnceCell<Docker>,
    /// Whether the engine runs rootless, asked once: it decides the default
    /// user.
    rootless: OnceCell<bool>,
}

impl DockerHost {
    pub fn new(config: DockerConfig) -> DockerHost {
        DockerHost { config, client: OnceCell::new(), rootless: OnceCell::new() }
    }

    pub fn config(&self) -> &DockerConfig {
        &self.config
    }

    /// A client that has just answered a ping, speaking an API version the
    /// engine supports.
    async fn engine(&self) -> Result<Docker, IsolationError> {
        let socket = self.config.socket();
        let unreachable = |reason: String| IsolationError::Unreachable { socket: socket.clone(), reason };
        // The version is negotiated once: podman answers `/version` by asking
        // conmon and the OCI runtime theirs, a few hundred milliseconds. A
        // failed attempt is not kept, so an engine started later is found.
        let client = self.client.get_or_try_init(|| self.connect(&socket)).await?;
        match tokio::time::timeout(PING_TIMEOUT, client.ping()).await {
            Ok(Ok(_)) => Ok(client.clone()),
            Ok(Err(err)) => Err(unreachable(format!("{err}; is the engine running, and may this user use it?"))),
            Err(_) => Err(unreachable(format!("no answer to a ping within {} s", PING_TIMEOUT.as_secs()))),
        }
    }

    async fn connect(&self, socket: &str) -> Result<Docker, IsolationError> {
        let unreachable = |reason: String| IsolationError::Unreachable { socket: socket.to_string(), reason };
        let unix_path = socket.strip_prefix("unix://").or_else(|| socket.starts_with('/').then_some(socket));
        let client = if let Some(path) = unix_path {
            Docker::connect_with_unix(path, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
        } else if socket.starts_with("tcp://") || socket.starts_with("http://") {
            Docker::connect_with_http(socket, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
        } else {
            return Err(unreachable(
                "unsupported address: set `[docker] socket` to unix:///path/to/engine.sock or tcp://host:port".into(),
            ));
        };
        let client = client.map_err(|err| unreachable(format!("{err}; is the engine running?")))?;
        // Bollard speaks the newest API by default; an older engine refuses it.
        match tokio::time::timeout(PING_TIMEOUT, client.negotiate_version()).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(err)) => Err(unreachable(format!("{err}; is the engine running, and may this user use it?"))),
            Err(_) => Err(unreachable(format!(
                "no answer within {} s; is this the engine's API socket?",
                PING_TIMEOUT.as_secs()
            ))),
        }
    }

    async fn ensure_image(&self, docker: &Docker, image: &str) -> Result<(), IsolationError> {
        let missing = match docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(err) if is_not_found(&err) => err,
            Err(err) => return Err(IsolationError::Image { image: image.into(), reason: err.to_string() }),
        };
        if !self.config.pull {
            return Err(IsolationError::Image {
                image: image.into(),
                reason: format!(
                    "the engine at {} does not have it ({missing}); load or build it there (docker pull, docker \
                     load, podman import), or set `pull = true` in `[docker]` to let sessions pull it",
                    self.config.socket()
                ),
            });
        }
        let options = CreateImageOptions { from_image: Some(image.into()), ..Default::default() };
        let mut progress = docker.create_image(Some(options), None, None);
        while let Some(step) = progress.next().await {
            if let Err(err) = step {
                return Err(IsolationError::Image { image: image.into(), reason: format!("pulling it: {err}") });
            }
        }
        docker.inspect_image(image).await.map(drop).map_err(|err| IsolationError::Image {
            image: image.into(),
            reason: format!("pulled, but still not there: {err}"),
        })
    }

    async fn user(&self, docker: &Docker) -> Option<String> {
        if let Some(user) = &self.config.user {
            return Some(user.clone()).filter(|user| !user.trim().is_empty());
        }
        let rootless = match self.rootless.get() {
            Some(rootless) => *rootless,
            None => match docker.info().await {
                Ok(info) => {
                    let rootless = info
                        .security_options
                        .unwrap_or_default()
                        .iter()
                        .any(|option| option.split(',').any(|part| part == "name=rootless"));
                    *self.rootless.get_or_init(|| async { rootless }).await
                }
                // Not kept: the next shell asks again.
                Err(err) => {
                    tracing::warn!(error = %err, "could not ask the engine whether it is rootless; assuming not");
                    false
                }
            },
        };
        if rootless {
            None
        } else {
            // SAFETY: getuid and getgid cannot fail and touch no memory.
            let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
            Some(format!("{uid}:{gid}"))
        }
    }

    fn container_body(
        &self,
        image: &str,
        cwd: &str,
        spec: &ShellSpec<'_>,
        user: Option<String>,
        limits: Limits,
    ) -> ContainerCreateBody {
        let read_only_root = self.config.read_only_root.unwrap_or(true);
        let tmpfs = read_only_root.then(|| HashMap::from([("/tmp".to_string(), "rw,nosuid,nodev".to_string())]));
        ContainerCreateBody {
            image: Some(image.into()),
            cmd: Some(vec!["sh".into()]),
            user,
            working_dir: Some(cwd.into()),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            open_stdin: Some(true),
            // The shell sees EOF when the daemon's attach connection goes: a
            // daemon that dies without removing the container leaves no shell
            // waiting for input.
            stdin_once: Some(true),
            tty: Some(false),
            labels: Some(HashMap::from([(SESSION_LABEL.to_string(), spec.session_id.to_string())])),
            // Removal kills the shell; nothing in it is worth a grace period.
            stop_timeout: Some(0),
            host_config: Some(HostConfig {
                mounts: Some(vec![Mount {
                    typ: Some(MountTypeEnum::BIND),
                    source: Some(cwd.into()),
                    target: Some(cwd.into()),
                    read_only: Some(false),
                    ..Default::default()
                }]),
                network_mode: Some(self.config.network_mode(spec.network)),
                memory: Some(limits.memory_bytes),
                memory_swap: Some(limits.memory_bytes),
                nano_cpus: Some(limits.nano_cpus),
                pids_limit: Some(limits.pids),
                readonly_rootfs: Some(read_only_root),
                tmpfs,
                cap_drop: Some(vec!["ALL".into()]),
                security_opt: Some(vec!["no-new-privileges".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    async fn start(&self, spec: ShellSpec<'_>) -> Result<ShellProcess, IsolationError> {
        let image = self.config.image()?;
        let limits = self.config.limits()?;
        let cwd = container_path(spec.cwd)?;
        let docker = self.engine().await?;
        self.ensure_image(&docker, image).await?;
        let name = container_name(spec.session_id);
        let user = self.user(&docker).await;
        let body = self.container_body(image, cwd, &spec, user, limits);

        let (id, guard, attach) = start_attached(&docker, &name, body, "the container").await?;
        let state = docker
            .inspect_container(&id, None::<bollard::query_parameters::InspectContainerOptions>)
            .await
            .map_err(|err| start_error("inspecting the container", &name, err))?
            .state
            .unwrap_or_default();
        let pid = match state.pid.and_then(|pid| u32::try_from(pid).ok()).filter(|pid| *pid > 0) {
            Some(pid) => pid,
            None => {
                let exit_code = state.exit_code.unwrap_or_default();
                let error = state.error.filter(|e| !e.is_empty()).map(|e| format!(": {e}")).unwrap_or_default();
                return Err(IsolationError::Start(format!(
                    "container {name} stopped as soon as it started (exit code {exit_code}{error}); does image \
                     {image:?} provide `sh`?"
                )));
            }
        };

        let (stdout_writer, stdout) = tokio::io::duplex(PIPE_BUFFER);
        let (stderr_writer, stderr) = tokio::io::duplex(PIPE_BUFFER);
        tokio::spawn(pump(attach.output, stdout_writer, stderr_writer, name));
        Ok(ShellProcess {
            stdin: attach.input,
            stdout: Box::pin(stdout),
            stderr: Box::pin(stderr),
            pid,
            // The engine's process: the daemon did not spawn the shell itself.
            leader_pid: pid,
            guard: Box::new(guard),
        })
    }
}

impl ShellHost for DockerHost {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn start_shell<'a>(&'a self, spec: ShellSpec<'a>) -> BoxFuture<'a, Result<ShellProcess, IsolationError>> {
        Box::pin(self.start(spec))
    }
}

/// `bosun-<session id>`, with what a container name may not hold replaced.
pub fn container_name(session_id: &str) -> String {
    let safe: String = session_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '-' })
        .collect();
    format!("bosun-{safe}")
}

fn container_path(cwd: &Path) -> Result<&str, IsolationError> {
    if !cwd.is_absolute() {
        return Err(IsolationError::Start(format!("the session's cwd {} is not an absolute path", cwd.display())));
    }
    cwd.to_str().ok_or_else(|| {
        IsolationError::Start(format!("the session's cwd {} is not UTF-8, which the engine API needs", cwd.display()))
    })
}

fn status_of(err: &EngineError) -> Option<u16> {
    match err {
        EngineError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn is_not_found(err: &EngineError) -> bool {
    status_of(err) == Some(404)
}

fn start_error(doing: &str, name: &str, err: EngineError) -> IsolationError {
    let text = err.to_string();
    let hint =
        if text.contains("executable file not found") { "; the image must provide `sh` on its PATH" } else { "" };
    IsolationError::Start(format!("{doing} ({name}): {text}{hint}"))
}

/// Kills and removes a container; one that is not there is fine.
async fn remove_container(docker: &Docker, id: &str) -> Result<(), EngineError> {
    // Killed first: some engines honour a stop timeout even when forced.
    let kill = KillContainerOptions { signal: "SIGKILL".into() };
    if let Err(err) = docker.kill_container(id, Some(kill)).await {
        // Not running (409 on Docker, 500 on some podman versions) or gone.
        tracing::trace!(container = id, error = %err, "kill before removal");
    }
    let options = RemoveContainerOptions { force: true, v: true, ..Default::default() };
    match docker.remove_container(id, Some(options)).await {
        Err(err) if is_not_found(&err) => Ok(()),
        other => other,
    }
}

/// Removes the session's container when dropped.
struct ContainerGuard {
    docker: Docker,
    id: String,
    name: String,
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let docker = self.docker.clone();
        let id = std::mem::take(&mut self.id);
        let name = std::mem::take(&mut self.name);
        if id.is_empty() {
            // Removed already.
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(err) = remove_container(&docker, &id).await {
                        tracing::warn!(container = %name, error = %err, "could not remove a session container");
                    }
                });
            }
            Err(_) => tracing::warn!(
                container = %name,
                "no async runtime to remove a session container from; the session's next shell replaces it"
            ),
        }
    }
}

/// A terminal of a docker session: its command in a container of its own,
/// confined as the session's shell is (the same image, limits, user,
/// network policy, dropped capabilities and read-only root, the session's
/// cwd the one place it writes), with a tty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TerminalContainer {
    pub docker: DockerConfig,
    pub session_id: String,
    pub binding_id: String,
    pub cwd: std::path::PathBuf,
    pub network: bool,
    /// Empty: `sh`.
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// The label a terminal's container carries, valued with its binding id.
pub const BINDING_LABEL: &str = "bosun.binding";

/// `bosun-<session id>-<binding id>`.
pub fn terminal_container_name(session_id: &str, binding_id: &str) -> String {
    let safe: String = binding_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '-' })
        .collect();
    format!("{}-{safe}", container_name(session_id))
}

impl DockerHost {
    /// Runs `spec`'s command in its container, its terminal being the tty
    /// on this process's stdin and stdout (a PTY the daemon reads, which
    /// this makes raw: the container's own tty does the line discipline).
    /// Bytes go both ways untouched, the tty's size follows SIGWINCH, and
    /// the answer is the command's exit code. A hang-up (SIGHUP: the
    /// terminal was closed, or the daemon died) or SIGTERM removes the
    /// container, and with it the command. The container is removed in
    /// every case.
    pub async fn run_terminal(&self, spec: &TerminalContainer) -> Result<i32, IsolationError> {
        use tokio::signal::unix::{signal, SignalKind};
        // First of all: a hang-up while the container is being made must
        // still remove it, not kill this process before it can.
        let signal_error = |e: std::io::Error| IsolationError::Start(format!("listening for signals: {e}"));
        let mut winch = signal(SignalKind::window_change()).map_err(signal_error)?;
        let mut hangup = signal(SignalKind::hangup()).map_err(signal_error)?;
        let mut terminate = signal(SignalKind::terminate()).map_err(signal_error)?;
        let image = self.config.image()?;
        let limits = self.config.limits()?;
        let cwd = container_path(&spec.cwd)?;
        let docker = self.engine().await?;
        self.ensure_image(&docker, image).await?;
        let name = terminal_container_name(&spec.session_id, &spec.binding_id);
        let user = self.user(&docker).await;
        let shell = ShellSpec { session_id: &spec.session_id, cwd: &spec.cwd, network: spec.network };
        let mut body = self.container_body(image, cwd, &shell, user, limits);
        let command = if spec.command.is_empty() { vec!["sh".to_string()] } else { spec.command.clone() };
        body.env = Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect());
        body.tty = Some(true);
        // Sized from the start: a command that asks at once must not see 0x0.
        let tty = tty::Tty::take().map_err(|e| IsolationError::Start(format!("the terminal's tty: {e}")))?;
        body.cmd = Some(match tty.size() {
            Some((cols, rows)) => {
                if let Some(host) = body.host_config.as_mut() {
                    host.console_size = Some(vec![rows.into(), cols.into()]);
                }
                // Not every engine takes ConsoleSize (podman does not), and
                // a resize can only follow the start: the tty is sized from
                // inside before the command replaces the sh that did it.
                let mut sized = vec![
                    "sh".to_string(),
                    "-c".into(),
                    "stty rows \"$1\" cols \"$2\" 2>/dev/null; shift 2; exec \"$@\"".into(),
                    "sh".into(),
                    rows.to_string(),
                    cols.to_string(),
                ];
                sized.extend(command);
                sized
            }
            None => command,
        });
        // Its end is the command's, not our connection's.
        body.stdin_once = Some(false);
        if let Some(labels) = body.labels.as_mut() {
            labels.insert(BINDING_LABEL.to_string(), spec.binding_id.clone());
        }
        let (id, guard, attach) = start_attached(&docker, &name, body, "the terminal's container").await?;
        let resize = |size: Option<(u16, u16)>| {
            let (docker, id) = (docker.clone(), id.clone());
            async move {
                if let Some((cols, rows)) = size {
                    let options =
                        bollard::query_parameters::ResizeContainerTTYOptions { w: cols.into(), h: rows.into() };
                    if let Err(err) = docker.resize_container_tty(&id, options).await {
                        tracing::debug!(error = %err, "resizing the container's tty");
                    }
                }
            }
        };
        resize(tty.size()).await;

        let mut input = attach.input;
        let mut output = attach.output;
        let (mut keys, mut screen) = tty.split();
        // Keystrokes, as they come; the engine's end of the pipe going away
        // ends this half only.
        let typing = tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match tokio::io::AsyncReadExt::read(&mut keys, &mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if input.write_all(&buf[..n]).await.is_err() || input.flush().await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
        // The engine may keep the attach stream open after the command ends
        // (podman does, while our stdin is open): its exit ends the loop,
        // once what it wrote has come through.
        let exited = docker.wait_container(&id, None::<bollard::query_parameters::WaitContainerOptions>);
        let mut exited = Box::pin(exited);
        let mut status = None;
        let ended = loop {
            tokio::select! {
                done = exited.next(), if status.is_none() => {
                    status = Some(exit_code(&name, done));
                }
                _ = tokio::time::sleep(DRAIN_QUIET), if status.is_some() => break Some(()),
                frame = output.next() => match frame {
                    Some(Ok(LogOutput::Console { message } | LogOutput::StdOut { message } | LogOutput::StdErr { message })) => {
                        if screen.write_all(&message).await.is_err() || screen.flush().await.is_err() {
                            break None;
                        }
                    }
                    Some(Ok(LogOutput::StdIn { .. })) => {}
                    Some(Err(err)) => {
                        tracing::warn!(container = %name, error = %err, "the terminal's output stream broke");
                        break Some(());
                    }
                    None => break Some(()),
                },
                _ = winch.recv() => resize(tty::size_of(0)).await,
                _ = hangup.recv() => break None,
                _ = terminate.recv() => break None,
            }
        };
        typing.abort();
        let code = match (ended, status) {
            (Some(()), Some(code)) => code,
            // The output ended: the command did. Its status, from the engine.
            (Some(()), None) => exit_code(&name, exited.next().await),
            // Hung up: as a shell killed by SIGHUP.
            (None, _) => 128 + libc::SIGHUP,
        };
        let _ = screen.flush().await;
        guard_removed(guard).await;
        Ok(code)
    }
}

/// Creates container `name` from `body` (a leftover of that name, from a
/// daemon that died without removing it or a shell being replaced, is
/// removed first: never reused), attaches to it before starting it, so
/// nothing it writes is missed, and starts it. `what` names it in errors.
async fn start_attached(
    docker: &Docker,
    name: &str,
    body: ContainerCreateBody,
    what: &str,
) -> Result<(String, ContainerGuard, bollard::container::AttachContainerResults), IsolationError> {
    remove_container(docker, name).await.map_err(|err| start_error("removing a stale container", name, err))?;
    let options = || CreateContainerOptions { name: Some(name.to_string()), ..Default::default() };
    let created = match docker.create_container(Some(options()), body.clone()).await {
        // Another removal of the same name may still be finishing.
        Err(err) if status_of(&err) == Some(409) => {
            remove_container(docker, name).await.map_err(|err| start_error("removing a stale container", name, err))?;
            docker.create_container(Some(options()), body).await
        }
        other => other,
    }
    .map_err(|err| start_error(&format!("creating {what}"), name, err))?;
    let guard = ContainerGuard { docker: docker.clone(), id: created.id.clone(), name: name.to_string() };
    let attach = docker
        .attach_container(
            &created.id,
            Some(AttachContainerOptions {
                stream: true,
                stdin: true,
                stdout: true,
                stderr: true,
                ..Default::default()
            }),
        )
        .await
        .map_err(|err| start_error(&format!("attaching to {what}"), name, err))?;
    docker
        .start_container(&created.id, None::<bollard::query_parameters::StartContainerOptions>)
        .await
        .map_err(|err| start_error(&format!("starting {what}"), name, err))?;
    Ok((created.id, guard, attach))
}

/// How long a terminal's output may stay quiet after its command exited
/// before it is taken to be all there (the engine relays it, and may not
/// end the attach stream).
const DRAIN_QUIET: Duration = Duration::from_millis(300);

fn exit_code(name: &str, wait: Option<Result<bollard::models::ContainerWaitResponse, EngineError>>) -> i32 {
    match wait {
        Some(Ok(done)) => i32::try_from(done.status_code).unwrap_or(1),
        Some(Err(EngineError::DockerContainerWaitError { code, .. })) => i32::try_from(code).unwrap_or(1),
        Some(Err(err)) => {
            tracing::warn!(container = %name, error = %err, "the terminal's exit status");
            1
        }
        None => 1,
    }
}

/// Removes the container now (the guard's drop would only schedule it, and
/// this process is about to exit).
async fn guard_removed(mut guard: ContainerGuard) {
    let id = std::mem::take(&mut guard.id);
    if let Err(err) = remove_container(&guard.docker, &id).await {
        tracing::warn!(container = %guard.name, error = %err, "could not remove a terminal's container");
    }
}

/// The tty a terminal's runner is given, as raw async halves.
mod tty {
    use std::os::fd::{FromRawFd, OwnedFd};

    pub struct Tty {
        keys: tokio::fs::File,
        screen: tokio::fs::File,
    }

    impl Tty {
        /// Stdin and stdout, with stdin's terminal made raw.
        pub fn take() -> std::io::Result<Tty> {
            // SAFETY: termios is plain data; tcgetattr fills it or fails.
            unsafe {
                let mut mode: libc::termios = std::mem::zeroed();
                if libc::tcgetattr(0, &mut mode) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::cfmakeraw(&mut mode);
                if libc::tcsetattr(0, libc::TCSANOW, &mode) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            let dup = |fd| {
                // SAFETY: dup of an open descriptor; the copy is ours alone.
                let copy = unsafe { libc::dup(fd) };
                if copy < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // SAFETY: `copy` was just opened and is owned by nothing else.
                Ok(tokio::fs::File::from_std(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(copy) })))
            };
            Ok(Tty { keys: dup(0)?, screen: dup(1)? })
        }

        pub fn size(&self) -> Option<(u16, u16)> {
            size_of(0)
        }

        pub fn split(self) -> (tokio::fs::File, tokio::fs::File) {
            (self.keys, self.screen)
        }
    }

    /// The columns and rows of the terminal on `fd`.
    pub fn size_of(fd: i32) -> Option<(u16, u16)> {
        // SAFETY: winsize is plain data; TIOCGWINSZ fills it or fails.
        unsafe {
            let mut size: libc::winsize = std::mem::zeroed();
            (libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) == 0 && size.ws_col > 0 && size.ws_row > 0)
                .then_some((size.ws_col, size.ws_row))
        }
    }
}

/// Splits the attach stream into the shell's stdout and stderr, until the
/// container's output ends; then both readers see EOF.
async fn pump(
    mut output: impl Stream<Item = Result<LogOutput, EngineError>> + Unpin,
    stdout: DuplexStream,
    stderr: DuplexStream,
    name: String,
) {
    let mut stdout = Some(stdout);
    let mut stderr = Some(stderr);
    while let Some(frame) = output.next().await {
        match frame {
            Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                forward(&mut stdout, &message).await
            }
            Ok(LogOutput::StdErr { message }) => forward(&mut stderr, &message).await,
            Ok(LogOutput::StdIn { .. }) => {}
            Err(err) => {
                tracing::warn!(container = %name, error = %err, "the container's output stream broke");
                break;
            }
        }
        if stdout.is_none() && stderr.is_none() {
            break;
        }
    }
}

/// A reader that went away only loses its own stream.
async fn forward(pipe: &mut Option<DuplexStream>, bytes: &[u8]) {
    if let Some(writer) = pipe {
        if writer.write_all(bytes).await.is_err() {
            *pipe = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_table_parses_and_refuses_unknown_keys() {
        let config: DockerConfig = from_json(
            r#"{"socket":"unix:///run/x.sock","image":"img:1","pull":true,"network":"host","memory_mb":512,
                "cpus":0.5,"pids_limit":64,"read_only_root":false,"user":"1000:1000"}"#,
        );
        assert_eq!(config.socket(), "unix:///run/x.sock");
        assert_eq!(config.image().unwrap(), "img:1");
        assert_eq!(config.limits().unwrap(), Limits { memory_bytes: 512 << 20, nano_cpus: 500_000_000, pids: 64 });
        assert_eq!(config.network_mode(true), "host");
        assert_eq!(config.network_mode(false), "none");
        assert!(serde_json::from_str::<DockerConfig>(r#"{"imgae":"x"}"#).is_err());
    }

    #[test]
    fn defaults_and_bad_values() {
        let config = DockerConfig::default();
        let err = config.image().unwrap_err().to_string();
        assert!(err.contains("`image`") && err.contains("[docker]"), "{err}");
        assert_eq!(config.network_mode(true), DEFAULT_NETWORK);
        assert_eq!(
            config.limits().unwrap(),
            Limits { memory_bytes: 2048 << 20, nano_cpus: 2_000_000_000, pids: DEFAULT_PIDS_LIMIT as i64 }
        );
        for bad in [
            DockerConfig { cpus: Some(0.0), ..Default::default() },
            DockerConfig { cpus: Some(f64::NAN), ..Default::default() },
            DockerConfig { memory_mb: Some(0), ..Default::default() },
            DockerConfig { pids_limit: Some(0), ..Default::default() },
        ] {
            assert!(bad.limits().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn container_names_are_safe() {
        assert_eq!(container_name("s_01Hx-9.a"), "bosun-s_01Hx-9.a");
        assert_eq!(container_name("a/b c:d"), "bosun-a-b-c-d");
    }

    fn from_json(json: &str) -> DockerConfig {
        serde_json::from_str(json).unwrap()
    }
}
