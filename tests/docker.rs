//! The Docker backend (`"sandbox":"docker"`), against podman's
//! Docker-compatible API service. Each test starts its own podman service
//! with private storage, state and locks (nothing touches the machine's own
//! podman), and an image imported from a busybox rootfs, since no registry
//! is reachable. podman, runc and busybox-static must be installed
//! (`tests/run` installs them): these tests fail, not skip, without them.

mod common;

use bosun_isolation::container::{DockerConfig, DockerHost};
use bosun_isolation::{IsolationError, ShellHost, ShellProcess, ShellSpec};
use bosun_proto::{CreateSessionRequest, Sandbox};
use common::*;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

const IMAGE: &str = "localhost/bosun-test-busybox:1";

/// A podman API service of the test's own, with the test image loaded.
struct Podman {
    dir: tempfile::TempDir,
    socket: PathBuf,
    service: Child,
}

impl Podman {
    fn start() -> Podman {
        let dir = tempdir();
        let root = dir.path();
        // runc, not crun (cgroups in hybrid mode); ulimits under the hard
        // nofile limit here; file locks and a tmp dir of its own, so its
        // first-start "refresh" never frees the shared-memory locks of
        // another podman on the machine.
        std::fs::write(
            root.join("containers.conf"),
            format!(
                "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
                 [engine]\nruntime = \"runc\"\nlock_type = \"file\"\nevents_logger = \"file\"\ntmp_dir = \"{}\"\n",
                root.join("libpod").display()
            ),
        )
        .unwrap();
        // vfs: nothing is mounted on the host, so a failed test leaves no
        // mount behind; the busybox image is a megabyte or two.
        std::fs::write(
            root.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                root.join("storage").display(),
                root.join("run").display()
            ),
        )
        .unwrap();
        match Command::new("podman").arg("--version").output() {
            Ok(out) if out.status.success() => {}
            other => {
                panic!("podman is not usable ({other:?}): run tests/run, or apt-get install podman runc busybox-static")
            }
        }
        let tar = build_rootfs_tar(root);
        let out = podman_command(root).args(["import", "--quiet"]).arg(&tar).arg(IMAGE).output().unwrap();
        assert!(out.status.success(), "podman import: {}", String::from_utf8_lossy(&out.stderr));

        let socket = root.join("podman.sock");
        let log = std::fs::File::create(root.join("service.log")).unwrap();
        let service = podman_command(root)
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn podman system service");
        let podman = Podman { dir, socket, service };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ping(&podman.socket) {
            assert!(Instant::now() < deadline, "podman service never answered; log:\n{}", podman.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        podman
    }

    /// The podman CLI on this test's storage and state.
    fn command(&self) -> Command {
        podman_command(self.dir.path())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("service.log")).unwrap_or_default()
    }

    fn socket_url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    fn config(&self) -> DockerConfig {
        DockerConfig { socket: Some(self.socket_url()), image: Some(IMAGE.into()), ..Default::default() }
    }

    fn host(&self) -> DockerHost {
        DockerHost::new(self.config())
    }

    /// The ids of the containers called `name`, running or not.
    fn containers_named(&self, name: &str) -> Vec<String> {
        let out = self.command().args(["ps", "-a", "--format", "{{.ID}} {{.Names}}"]).output().unwrap();
        assert!(out.status.success(), "podman ps: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| line.split_once(' '))
            .filter(|(_, names)| *names == name)
            .map(|(id, _)| id.to_string())
            .collect()
    }

    async fn wait_gone(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.containers_named(name).is_empty() {
            assert!(Instant::now() < deadline, "container {name} was not removed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn inspect(&self, name: &str, format: &str) -> String {
        let out = self.command().args(["inspect", "--format", format, name]).output().unwrap();
        assert!(out.status.success(), "podman inspect: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Containers a failed test left: conmon outlives the service.
        let _ = self.command().args(["rm", "--all", "--force", "--time", "0"]).output();
        let _ = self.service.kill();
        let _ = self.service.wait();
    }
}

/// The podman CLI on the storage and state under `root`.
fn podman_command(root: &Path) -> Command {
    let mut cmd = Command::new("podman");
    cmd.env("CONTAINERS_CONF", root.join("containers.conf"))
        .env("CONTAINERS_STORAGE_CONF", root.join("storage.conf"))
        .env_remove("CONTAINER_HOST")
        .env_remove("DOCKER_HOST");
    cmd
}

/// `GET /_ping` over the socket, by hand: the harness has no Docker client.
fn ping(socket: &Path) -> bool {
    let Ok(mut stream) = std::os::unix::net::UnixStream::connect(socket) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.") && answer.contains(" 200 ")
}

/// A root filesystem of Debian's static busybox and a link per applet.
fn build_rootfs_tar(root: &Path) -> PathBuf {
    let busybox = Path::new("/bin/busybox");
    let ldd = Command::new("ldd").arg(busybox).output();
    assert!(
        busybox.exists() && ldd.is_ok_and(|out| !out.status.success()),
        "{} is missing or not static: apt-get install busybox-static",
        busybox.display()
    );
    let rootfs = root.join("rootfs");
    for dir in ["bin", "tmp", "etc", "proc", "sys", "dev"] {
        std::fs::create_dir_all(rootfs.join(dir)).unwrap();
    }
    std::fs::copy(busybox, rootfs.join("bin/busybox")).unwrap();
    let applets = Command::new(busybox).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&applets.stdout).lines().filter(|a| !a.is_empty() && *a != "busybox") {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    let tar = root.join("rootfs.tar");
    let out = Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg(".").output().unwrap();
    assert!(out.status.success(), "tar: {}", String::from_utf8_lossy(&out.stderr));
    tar
}

fn spec<'a>(session_id: &'a str, cwd: &'a Path, network: bool) -> ShellSpec<'a> {
    ShellSpec { session_id, cwd, network }
}

/// A session id unique to this test run, so parallel tests and runs never share a container name.
fn session_id(what: &str) -> String {
    format!("t{}-{what}", std::process::id())
}

async fn read_all(mut pipe: std::pin::Pin<Box<dyn AsyncRead + Send>>) -> String {
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(20), pipe.read_to_string(&mut text))
        .await
        .expect("the stream never reached EOF")
        .expect("read");
    text
}

/// Runs `script` as the shell's whole input, then reads both streams to EOF.
async fn run_script(shell: ShellProcess, script: &str) -> (String, String, Box<dyn Send + Sync>) {
    let ShellProcess { mut stdin, stdout, stderr, guard, .. } = shell;
    stdin.write_all(script.as_bytes()).await.unwrap();
    // EOF on the shell's stdin ends it, like a script piped into `sh`.
    stdin.shutdown().await.unwrap();
    let (out, err) = tokio::join!(read_all(stdout), read_all(stderr));
    (out, err, guard)
}

fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.contains(") Z "))
}

#[tokio::test]
async fn the_backend_runs_a_shell_in_a_container_and_removes_it() {
    let podman = Podman::start();
    let host = podman.host();
    let work = tempdir();
    let id = session_id("basic");
    let name = format!("bosun-{id}");

    let started = Instant::now();
    let shell = host.start_shell(spec(&id, work.path(), false)).await.unwrap();
    eprintln!("start_shell took {:?}", started.elapsed());
    // The pid is the shell's, as this (the daemon's) pid namespace sees it.
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", shell.pid)).unwrap();
    assert_eq!(cmdline, b"sh\0", "pid {} is not the shell", shell.pid);
    let pid = shell.pid;
    assert_eq!(podman.inspect(&name, "{{index .Config.Labels \"bosun.session\"}}"), id);

    let (out, err, guard) = run_script(shell, "echo hi; pwd; echo err >&2; exit 3\n").await;
    assert_eq!(out, format!("hi\n{}\n", work.path().display()));
    assert_eq!(err, "err\n");
    assert_eq!(podman.inspect(&name, "{{.State.ExitCode}}"), "3");
    assert!(!process_alive(pid));

    drop(guard);
    podman.wait_gone(&name).await;

    // Later shells skip the first one's version and user questions.
    let id = session_id("second");
    let started = Instant::now();
    let shell = host.start_shell(spec(&id, work.path(), false)).await.unwrap();
    eprintln!("a second start_shell took {:?}", started.elapsed());
    let ShellProcess { mut stdin, mut stdout, guard, .. } = shell;
    let mut line = [0u8; 3];
    let mut times = Vec::new();
    for _ in 0..5 {
        let sent = Instant::now();
        stdin.write_all(b"echo ok\n").await.unwrap();
        stdout.read_exact(&mut line).await.unwrap();
        times.push(sent.elapsed());
        assert_eq!(&line, b"ok\n");
    }
    eprintln!("command round trips: {times:?}");
    drop(guard);
}

#[tokio::test]
async fn dropping_the_guard_kills_a_busy_shell_and_removes_its_container() {
    let podman = Podman::start();
    let host = podman.host();
    let work = tempdir();
    let id = session_id("busy");
    let name = format!("bosun-{id}");
    let mut shell = host.start_shell(spec(&id, work.path(), false)).await.unwrap();
    shell.stdin.write_all(b"echo started; sleep 1000\n").await.unwrap();
    let mut line = [0u8; 8];
    tokio::time::timeout(Duration::from_secs(10), shell.stdout.read_exact(&mut line)).await.unwrap().unwrap();
    assert_eq!(&line, b"started\n");
    let pid = shell.pid;

    let dropped = Instant::now();
    drop(shell);
    podman.wait_gone(&name).await;
    eprintln!("removal after drop took {:?}", dropped.elapsed());
    let deadline = Instant::now() + Duration::from_secs(5);
    while process_alive(pid) {
        assert!(Instant::now() < deadline, "the shell outlived its container");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_container_is_confined() {
    let podman = Podman::start();
    let host = podman.host();
    let work = tempdir();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let id = session_id("confined");

    let shell = host.start_shell(spec(&id, work.path(), false)).await.unwrap();
    let script = format!(
        "echo made > made.txt && echo cwd-writable\n\
         touch /rootfs-write 2>/dev/null || echo root-read-only\n\
         touch /tmp/x && echo tmp-writable\n\
         ls /sys/class/net\n\
         nc -w 2 127.0.0.1 {port} </dev/null && echo CONNECTED || echo REFUSED\n\
         grep CapEff /proc/self/status\n\
         id -u\n\
         cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/pids.max 2>/dev/null\n"
    );
    let (out, err, guard) = run_script(shell, &script).await;
    drop(guard);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..3], ["cwd-writable", "root-read-only", "tmp-writable"], "{out}\n{err}");
    // No network but loopback; the host's loopback listener saw nothing.
    assert_eq!(lines[3], "lo", "{out}");
    assert_eq!(lines[4], "REFUSED", "{out}");
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the host listener saw a connection: {other:?}"),
    }
    assert_eq!(lines[5].split_whitespace().collect::<Vec<_>>(), ["CapEff:", "0000000000000000"], "{out}");
    // A rootful engine runs the shell as the daemon's user, so files it
    // writes in the worktree are the daemon user's.
    let uid = unsafe { libc::getuid() };
    assert_eq!(lines[6], uid.to_string(), "{out}");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(work.path().join("made.txt")).unwrap().uid(), uid);
    assert_eq!(lines[7], "512", "{out}");
    assert_eq!(std::fs::read_to_string(work.path().join("made.txt")).unwrap(), "made\n");

    // With the session's network open, the container has an interface
    // besides loopback.
    let id = session_id("networked");
    let shell = host.start_shell(spec(&id, work.path(), true)).await.unwrap();
    let (out, _, guard) = run_script(shell, "ls /sys/class/net\n").await;
    drop(guard);
    assert!(out.lines().any(|l| l != "lo"), "{out}");
}

#[tokio::test]
async fn limits_and_options_from_the_config_apply() {
    let podman = Podman::start();
    let config = DockerConfig {
        memory_mb: Some(300),
        cpus: Some(0.5),
        pids_limit: Some(40),
        read_only_root: Some(false),
        user: Some("1234:1234".into()),
        ..podman.config()
    };
    let host = DockerHost::new(config);
    let work = tempdir();
    std::fs::set_permissions(work.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let id = session_id("limits");
    let name = format!("bosun-{id}");
    let shell = host.start_shell(spec(&id, work.path(), false)).await.unwrap();
    assert_eq!(
        podman.inspect(&name, "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.PidsLimit}}"),
        format!("{} 500000000 40", 300u64 << 20)
    );
    let (out, err, guard) =
        run_script(shell, "id -u; id -g; touch /made-in-root 2>&1 && echo root-writable; echo x > f\n").await;
    drop(guard);
    // uid 1234 cannot write the image's root-owned `/` anyway; what matters
    // is that the engine did not refuse it read-only.
    assert!(out.starts_with("1234\n1234\n"), "{out}\n{err}");
    assert!(!err.contains("Read-only file system"), "{out}\n{err}");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(work.path().join("f")).unwrap().uid(), 1234);
}

#[tokio::test]
async fn a_stale_container_of_the_same_session_is_replaced() {
    let podman = Podman::start();
    let host = podman.host();
    let work = tempdir();
    let id = session_id("stale");
    let name = format!("bosun-{id}");
    // What a daemon killed with -9 leaves: a running container of that name.
    let out = podman
        .command()
        .args(["run", "-d", "--name", &name, "--network", "none", IMAGE, "sleep", "1000"])
        .output()
        .unwrap();
    assert!(out.status.success(), "podman run: {}", String::from_utf8_lossy(&out.stderr));
    let stale = String::from_utf8_lossy(&out.stdout).trim().to_string();

    let started = Instant::now();
    let shell = host.start_shell(spec(&id, work.path(), false)).await.unwrap();
    eprintln!("start_shell replacing a running container took {:?}", started.elapsed());
    let now = podman.containers_named(&name);
    assert_eq!(now.len(), 1, "{now:?}");
    assert!(!stale.starts_with(&now[0]), "the stale container was reused");
    let (out, _, guard) = run_script(shell, "echo fresh\n").await;
    assert_eq!(out, "fresh\n");
    drop(guard);
    podman.wait_gone(&name).await;
}

#[tokio::test]
async fn engine_and_image_problems_are_reported_as_such() {
    let work = tempdir();
    let id = session_id("errors");

    // No engine at all.
    let missing = work.path().join("nothing.sock");
    let host = DockerHost::new(DockerConfig {
        socket: Some(format!("unix://{}", missing.display())),
        image: Some(IMAGE.into()),
        ..Default::default()
    });
    match host.start_shell(spec(&id, work.path(), false)).await {
        Err(IsolationError::Unreachable { socket, .. }) => assert!(socket.contains("nothing.sock")),
        other => panic!("expected Unreachable, got {other:?}"),
    }

    // A socket that accepts but never answers: the ping times out.
    let silent = work.path().join("silent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&silent).unwrap();
    let host = DockerHost::new(DockerConfig {
        socket: Some(silent.display().to_string()),
        image: Some(IMAGE.into()),
        ..Default::default()
    });
    let started = Instant::now();
    match host.start_shell(spec(&id, work.path(), false)).await {
        Err(IsolationError::Unreachable { reason, .. }) => assert!(reason.contains("no answer"), "{reason}"),
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());

    let podman = Podman::start();
    // An image the engine does not have, with and without pulling.
    let host =
        DockerHost::new(DockerConfig { image: Some("localhost/bosun-no-such-image:1".into()), ..podman.config() });
    match host.start_shell(spec(&id, work.path(), false)).await {
        Err(err @ IsolationError::Image { .. }) => assert!(err.to_string().contains("pull = true"), "{err}"),
        other => panic!("expected Image, got {other:?}"),
    }
    // Port 9 (discard) on loopback: the pull fails at once, offline.
    let host = DockerHost::new(DockerConfig {
        image: Some("127.0.0.1:9/bosun-no-such-image:1".into()),
        pull: true,
        ..podman.config()
    });
    match host.start_shell(spec(&id, work.path(), false)).await {
        Err(err @ IsolationError::Image { .. }) => assert!(err.to_string().contains("pulling"), "{err}"),
        other => panic!("expected Image, got {other:?}"),
    }
    // An image without `sh`.
    let empty = work.path().join("empty");
    std::fs::create_dir_all(empty.join("etc")).unwrap();
    let tar = work.path().join("empty.tar");
    assert!(Command::new("tar").arg("-C").arg(&empty).arg("-cf").arg(&tar).arg(".").status().unwrap().success());
    let out = podman.command().args(["import", "--quiet"]).arg(&tar).arg("localhost/bosun-no-sh:1").output().unwrap();
    assert!(out.status.success(), "podman import: {}", String::from_utf8_lossy(&out.stderr));
    let host = DockerHost::new(DockerConfig { image: Some("localhost/bosun-no-sh:1".into()), ..podman.config() });
    match host.start_shell(spec(&id, work.path(), false)).await {
        Err(err @ IsolationError::Start(_)) => assert!(err.to_string().contains("must provide `sh`"), "{err}"),
        other => panic!("expected Start, got {other:?}"),
    }
    podman.wait_gone(&format!("bosun-{id}")).await;

    // No image configured: the error names the key.
    let host = DockerHost::new(DockerConfig { image: None, ..podman.config() });
    let err = host.start_shell(spec(&id, work.path(), false)).await.unwrap_err();
    assert!(err.to_string().contains("`image`"), "{err}");
    assert!(podman.containers_named(&format!("bosun-{id}")).is_empty());
}

#[tokio::test]
async fn the_docker_backend_runs_a_command_and_reports_its_exit_code() {
    let podman = Podman::start();
    let dir = tempdir();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let config =
        format!("discover_agents = false\n[docker]\nsocket = \"{}\"\nimage = \"{IMAGE}\"\n", podman.socket_url());
    let d = Daemon::start(&dir.path().join("data"), Options { config: Some(config), ..Options::default() });
    let req = CreateSessionRequest {
        provider: "shell".into(),
        sandbox: Sandbox::Docker,
        policy: Some(Policy::FullAccess),
        cwd: Some(path_string(&work)),
        ..Default::default()
    };
    let session = d.create_session(&req).await;
    assert_eq!(session.sandbox, Sandbox::Docker);
    let s = session.id.into_string();

    let t = d.start_turn(&s, "echo hi; touch made-in-container; exit 3").await;
    let done = d.wait_turn_end(&s, &t).await;
    let result = done.result.as_ref().unwrap_or_else(|| panic!("no result: {done:?}"));
    assert_eq!(result.exit_code, Some(3), "{done:?}");
    assert_eq!(result.stdout, "hi\n", "{done:?}");
    assert!(work.join("made-in-container").exists());
    let events = d.events(Some(&s), 0).await;
    assert!(datas_of!(&events, CommandRan).iter().any(|r| r.command.exit_code == Some(3)), "{events:#?}");

    // `exit 3` ended that shell and its container; the next command gets a
    // fresh one under the same name, which lives as long as the shell.
    let t = d.start_turn(&s, "echo again; id -u; ls /sys/class/net").await;
    let done = d.wait_turn_end(&s, &t).await;
    let result = done.result.as_ref().unwrap_or_else(|| panic!("no result: {done:?}"));
    assert_eq!(result.exit_code, Some(0), "{done:?}");
    assert_eq!(result.stdout, format!("again\n{}\nlo\n", unsafe { libc::getuid() }), "{done:?}");
    assert_eq!(podman.containers_named(&format!("bosun-{s}")).len(), 1);
}

/// Output of a pty terminal until it ends, acknowledging as it goes.
async fn terminal_output(d: &Daemon, binding: &str) -> (String, bosun_proto::TerminalExit) {
    use bosun_client::TerminalEvent;
    let mut stream = d.client().attach_terminal(binding, 0).await.expect("attach");
    let mut out = Vec::new();
    loop {
        let Ok(event) = tokio::time::timeout(Duration::from_secs(60), stream.next()).await else {
            panic!("no end within 60 s; the terminal showed {:?}", String::from_utf8_lossy(&out));
        };
        let event = event.expect("read");
        match event {
            TerminalEvent::Output { bytes, .. } => {
                out.extend_from_slice(&bytes);
                stream.writer().ack(out.len() as u64).await.expect("ack");
            }
            TerminalEvent::Exit(exit) => return (String::from_utf8_lossy(&out).into_owned(), exit),
            TerminalEvent::Clipboard(_) => {}
            TerminalEvent::Closed => panic!("closed without an end: {}", String::from_utf8_lossy(&out)),
        }
    }
}

/// A pty terminal of a docker session runs in a container of its own,
/// confined as the session's shell is: its PID 1 is the command, no network,
/// a read-only root, the session's cwd writable; the tty's size and the
/// exit status come through; closing the terminal removes its container.
#[tokio::test]
async fn a_docker_sessions_terminal_runs_confined_in_its_own_container() {
    use bosun_proto::{BindingState, SpawnTerminalRequest, TerminalKind};
    let podman = Podman::start();
    let dir = tempdir();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let config = format!(
        "discover_agents = false\n[docker]\nsocket = \"{}\"\nimage = \"{IMAGE}\"\n[termbridge]\npolicy = \"full-access\"\n",
        podman.socket_url()
    );
    let d = Daemon::start(&dir.path().join("data"), Options { config: Some(config), ..Options::default() });
    let req = CreateSessionRequest {
        provider: "shell".into(),
        sandbox: Sandbox::Docker,
        policy: Some(Policy::FullAccess),
        cwd: Some(path_string(&work)),
        ..Default::default()
    };
    let session = d.create_session(&req).await;
    let spawn = |command: &[&str]| SpawnTerminalRequest {
        terminal: Some(TerminalKind::Pty),
        session_id: Some(session.id.clone()),
        command: command.iter().map(|s| s.to_string()).collect(),
        cols: Some(100),
        rows: Some(30),
        ..Default::default()
    };
    let script = "echo pid1=$(tr '\\0' ' ' </proc/1/cmdline); echo net=$(ls /sys/class/net); \
                  stty size; touch from-terminal; touch /etc/nope 2>/dev/null || echo root-read-only; exit 4";
    let outcome = d.client().spawn_terminal(&spawn(&["sh", "-c", script])).await.expect("spawn");
    let b = outcome.binding.unwrap_or_else(|| panic!("bound at once"));
    assert!(b.jailed, "{b:?}");
    let (out, exit) = terminal_output(&d, &b.binding_id).await;
    assert!(out.contains("pid1=sh -c "), "the command is the container's first process: {out:?}");
    assert!(out.contains("net=lo\r\n"), "no network: {out:?}");
    assert!(out.contains("30 100\r\n"), "the PTY's size is the container tty's: {out:?}");
    assert!(out.contains("root-read-only"), "{out:?}");
    assert_eq!(exit.exit.and_then(|e| e.code), Some(4), "{out:?}");
    assert!(work.join("from-terminal").exists(), "the session's cwd is writable from it");
    let name = format!("bosun-{}-{}", session.id, b.binding_id);
    podman.wait_gone(&name).await;

    // A shell, typed into, resized, then closed.
    let outcome = d.client().spawn_terminal(&spawn(&["sh"])).await.expect("spawn");
    let b = outcome.binding.unwrap_or_else(|| panic!("bound at once"));
    let name = format!("bosun-{}-{}", session.id, b.binding_id);
    let mut stream = d.client().attach_terminal(&b.binding_id, 0).await.expect("attach");
    let mut seen = Vec::new();
    let mut until = async |stream: &mut bosun_client::TerminalStream, needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !String::from_utf8_lossy(&seen).contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, stream.next()).await {
                Ok(Ok(bosun_client::TerminalEvent::Output { bytes, .. })) => seen.extend_from_slice(&bytes),
                other => panic!("waiting for {needle:?}: {other:?}; seen {:?}", String::from_utf8_lossy(&seen)),
            }
        }
    };
    stream.writer().input(b"echo $((6*7))x\r").await.expect("type");
    until(&mut stream, "42x").await;
    assert_eq!(podman.containers_named(&name).len(), 1);
    let (status, body) = d
        .post(
            &format!("/api/v1/terminals/bindings/{}/resize", b.binding_id),
            serde_json::json!({"cols": 132, "rows": 43}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // The PTY's SIGWINCH reaches the container's tty, soon after: the
    // engine resizes it asynchronously, as a real terminal's would be.
    let deadline = Instant::now() + Duration::from_secs(20);
    'resized: loop {
        assert!(Instant::now() < deadline, "never resized: {:?}", String::from_utf8_lossy(&seen));
        stream.writer().input(b"stty size\r").await.expect("type");
        let asked = Instant::now();
        while asked.elapsed() < Duration::from_millis(700) {
            if let Ok(Ok(bosun_client::TerminalEvent::Output { bytes, .. })) =
                tokio::time::timeout(Duration::from_millis(100), stream.next()).await
            {
                seen.extend_from_slice(&bytes);
            }
            if String::from_utf8_lossy(&seen).contains("43 132") {
                break 'resized;
            }
        }
    }
    let closed = d.client().close_binding(&b.binding_id).await.expect("close");
    assert_eq!(closed.binding.state, BindingState::Closed);
    podman.wait_gone(&name).await;

    // A daemon killed with -9 leaves no terminal container behind: the PTY
    // it held hangs up its runner, which removes it.
    let outcome = d.client().spawn_terminal(&spawn(&["sleep", "600"])).await.expect("spawn");
    let b = outcome.binding.unwrap_or_else(|| panic!("bound at once"));
    let name = format!("bosun-{}-{}", session.id, b.binding_id);
    let deadline = Instant::now() + Duration::from_secs(30);
    while podman.containers_named(&name).is_empty() {
        assert!(Instant::now() < deadline, "the terminal's container never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut d = d;
    d.kill9();
    podman.wait_gone(&name).await;
}
