//! `bosun service`: the daemon as a per-user service, a systemd user unit on
//! Linux or a LaunchAgent on macOS.
//!
//! What the peers got wrong is what this gets right: the unit names the
//! binary by its absolute, resolved path (never a `bosun` on some PATH that
//! a service manager does not have), carries the `PATH` of the shell that
//! installed it (a service manager starts with a bare one, and the agents'
//! CLIs live in nvm, npm and cargo directories), and the provider
//! environment in force at install time (API keys included) goes in a file
//! only the user can read, not in the world-readable unit.

use anyhow::{bail, Context as _};
use std::path::{Path, PathBuf};
use std::process::Command;

const UNIT_NAME: &str = "bosun.service";
const LAUNCHD_LABEL: &str = "dev.bosun.daemon";

#[derive(Debug, clap::Args)]
pub struct ServiceArgs {
    #[command(subcommand)]
    command: ServiceCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ServiceCommand {
    /// Write the service file, enable and start it, and say what was done.
    Install(InstallArgs),
    /// Stop and disable the service and remove its files.
    Uninstall(PlatformArgs),
    /// The service manager's view of it.
    Status(PlatformArgs),
    /// Its log (journalctl on Linux, its log files on macOS).
    Logs(LogsArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Platform {
    Systemd,
    Launchd,
}

impl Platform {
    fn native() -> Platform {
        if cfg!(target_os = "macos") {
            Platform::Launchd
        } else {
            Platform::Systemd
        }
    }
}

#[derive(Debug, clap::Args)]
struct PlatformArgs {
    /// The service manager (default: this system's).
    #[arg(long, value_enum, hide = true)]
    platform: Option<Platform>,
}

#[derive(Debug, clap::Args)]
struct InstallArgs {
    /// Show the files that would be written, and do nothing else.
    #[arg(long)]
    print: bool,
    /// The daemon's data dir (default: $XDG_DATA_HOME/bosun).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The address the daemon listens on (default: its own default).
    #[arg(long)]
    listen: Option<String>,
    /// The daemon's config file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Also run `loginctl enable-linger`, so the service runs while you are
    /// logged out (Linux).
    #[arg(long)]
    linger: bool,
    #[command(flatten)]
    platform: PlatformArgs,
}

#[derive(Debug, clap::Args)]
struct LogsArgs {
    /// Keep following the log.
    #[arg(long, short)]
    follow: bool,
    /// How many lines of the past to show.
    #[arg(long, short = 'n', default_value_t = 200)]
    lines: u32,
    #[command(flatten)]
    platform: PlatformArgs,
}

/// Everything a service file says, resolved at install time.
#[derive(Debug, Clone, PartialEq)]
pub struct ServicePlan {
    /// Absolute and resolved (symlinks followed), checked to exist.
    pub binary: PathBuf,
    pub data_dir: PathBuf,
    pub listen: Option<String>,
    pub config: Option<PathBuf>,
    pub path: String,
    /// The provider environment (API keys, base URLs, proxies): kept out of
    /// the unit, in a file only the user reads.
    pub provider_env: Vec<(String, String)>,
}

/// Whether a variable belongs to the agents' providers or to reaching them.
fn is_provider_env(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "OPENAI_",
        "ANTHROPIC_",
        "CLAUDE_",
        "CODEX_",
        "GEMINI_",
        "GOOGLE_",
        "AZURE_OPENAI_",
        "OPENROUTER_",
        "MISTRAL_",
        "DEEPSEEK_",
        "XAI_",
        "GROQ_",
        "AWS_",
        "BOSUN_",
        "DOCKER_",
    ];
    const NAMES: &[&str] = &[
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "all_proxy",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "NODE_EXTRA_CA_CERTS",
        "LANG",
        "LC_ALL",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p)) || NAMES.contains(&name)
}

/// Whether a value is a secret to show masked.
fn is_secret(name: &str) -> bool {
    ["KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL"].iter().any(|w| name.to_ascii_uppercase().contains(w))
}

fn mask(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() <= 8 {
        return "…".into();
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

impl ServicePlan {
    fn from_args(args: &InstallArgs, env: impl Iterator<Item = (String, String)>) -> anyhow::Result<ServicePlan> {
        let binary = std::env::current_exe().context("finding this binary")?;
        let binary = binary.canonicalize().with_context(|| format!("resolving {}", binary.display()))?;
        let absolute = |p: &Path| -> anyhow::Result<PathBuf> {
            Ok(if p.is_absolute() { p.to_path_buf() } else { std::env::current_dir()?.join(p) })
        };
        let data_dir = absolute(&args.data_dir.clone().unwrap_or_else(crate::config::default_data_dir))?;
        let config = match &args.config {
            Some(c) => {
                let c = absolute(c)?;
                crate::config::FileConfig::load(&c).with_context(|| format!("checking {}", c.display()))?;
                Some(c)
            }
            None => None,
        };
        let mut path = String::new();
        let mut provider_env = Vec::new();
        for (k, v) in env {
            if k == "PATH" {
                path = v;
            } else if is_provider_env(&k) {
                provider_env.push((k, v));
            }
        }
        provider_env.sort();
        if path.is_empty() {
            path = "/usr/local/bin:/usr/bin:/bin".into();
        }
        Ok(ServicePlan { binary, data_dir, listen: args.listen.clone(), config, path, provider_env })
    }

    fn argv(&self) -> Vec<String> {
        let mut argv = vec![
            self.binary.display().to_string(),
            "serve".into(),
            "--data-dir".into(),
            self.data_dir.display().to_string(),
        ];
        if let Some(listen) = &self.listen {
            argv.extend(["--listen".into(), listen.clone()]);
        }
        if let Some(config) = &self.config {
            argv.extend(["--config".into(), config.display().to_string()]);
        }
        argv
    }

    pub fn env_file_path(&self) -> PathBuf {
        self.data_dir.join("service.env")
    }

    /// The systemd user unit.
    pub fn systemd_unit(&self) -> String {
        let exec: Vec<String> = self.argv().iter().map(|a| systemd_quote(a)).collect();
        format!(
            "# Written by `bosun service install`; `bosun service uninstall` removes it.\n\
             [Unit]\n\
             Description=Bosun, a supervised and durable daemon for AI coding-agent sessions\n\
             After=network-online.target\n\
             Wants=network-online.target\n\
             \n\
             [Service]\n\
             Type=simple\n\
             ExecStart={}\n\
             Environment={}\n\
             # The provider environment at install time (API keys: readable by you only).\n\
             EnvironmentFile=-{}\n\
             Restart=on-failure\n\
             RestartSec=2\n\
             # SIGTERM: the daemon stops its actors and closes its store cleanly.\n\
             KillSignal=SIGTERM\n\
             TimeoutStopSec=30\n\
             \n\
             [Install]\n\
             WantedBy=default.target\n",
            exec.join(" "),
            systemd_quote(&format!("PATH={}", self.path)),
            systemd_path(&self.env_file_path()),
        )
    }

    /// `service.env`, as systemd's EnvironmentFile reads it; `masked` shows
    /// secrets as `sk-…abcd`.
    pub fn env_file(&self, masked: bool) -> String {
        let mut out = String::from("# The provider environment `bosun service install` found; edit as needed.\n");
        for (k, v) in &self.provider_env {
            let v = if masked && is_secret(k) { mask(v) } else { v.clone() };
            out.push_str(&format!("{k}=\"{}\"\n", v.replace('\\', "\\\\").replace('"', "\\\"")));
        }
        out
    }

    /// The LaunchAgent.
    pub fn launchd_plist(&self, masked: bool) -> String {
        let args: String = self.argv().iter().map(|a| format!("    <string>{}</string>\n", xml_escape(a))).collect();
        let mut env = format!("    <key>PATH</key>\n    <string>{}</string>\n", xml_escape(&self.path));
        for (k, v) in &self.provider_env {
            let v = if masked && is_secret(k) { mask(v) } else { v.clone() };
            env.push_str(&format!("    <key>{}</key>\n    <string>{}</string>\n", xml_escape(k), xml_escape(&v)));
        }
        let log = |name: &str| xml_escape(&self.data_dir.join("logs").join(name).display().to_string());
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
             <plist version=\"1.0\">\n\
             <dict>\n\
             \x20 <key>Label</key>\n  <string>{LAUNCHD_LABEL}</string>\n\
             \x20 <key>ProgramArguments</key>\n  <array>\n{args}  </array>\n\
             \x20 <key>EnvironmentVariables</key>\n  <dict>\n{env}  </dict>\n\
             \x20 <key>RunAtLoad</key>\n  <true/>\n\
             \x20 <key>KeepAlive</key>\n  <dict>\n    <key>SuccessfulExit</key>\n    <false/>\n  </dict>\n\
             \x20 <key>ProcessType</key>\n  <string>Background</string>\n\
             \x20 <key>StandardOutPath</key>\n  <string>{}</string>\n\
             \x20 <key>StandardErrorPath</key>\n  <string>{}</string>\n\
             </dict>\n\
             </plist>\n",
            log("launchd.out.log"),
            log("launchd.err.log"),
        )
    }
}

/// One word of an ExecStart or Environment line: double-quoted, with what
/// systemd would expand (`%` specifiers, `$` variables) doubled.
fn systemd_quote(word: &str) -> String {
    let escaped = word.replace('\\', "\\\\").replace('"', "\\\"").replace('%', "%%").replace('$', "$$");
    format!("\"{escaped}\"")
}

/// A path in a unit setting that takes one path (no quotes; `%` doubled).
fn systemd_path(path: &Path) -> String {
    path.display().to_string().replace('%', "%%")
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn home() -> anyhow::Result<PathBuf> {
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from).context("HOME is not set")
}

pub(crate) fn unit_path() -> anyhow::Result<PathBuf> {
    let config = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => home()?.join(".config"),
    };
    Ok(config.join("systemd").join("user").join(UNIT_NAME))
}

pub(crate) fn plist_path() -> anyhow::Result<PathBuf> {
    Ok(home()?.join("Library").join("LaunchAgents").join(format!("{LAUNCHD_LABEL}.plist")))
}

/// Writes `text` to `path` with `mode`, through a temporary file renamed into
/// place, so a reader never sees half of it.
fn write_file(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = path.parent().context("a service file has a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("moving {} into place", path.display()))
}

/// Runs a service-manager command; its failure is reported, with its stderr.
fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program).args(args).output().with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!("`{program} {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    println!("ran {program} {}", args.join(" "));
    Ok(())
}

pub fn run_command(args: ServiceArgs) -> anyhow::Result<i32> {
    match args.command {
        ServiceCommand::Install(args) => install(&args),
        ServiceCommand::Uninstall(args) => uninstall(args.platform.unwrap_or_else(Platform::native)),
        ServiceCommand::Status(args) => status(args.platform.unwrap_or_else(Platform::native)),
        ServiceCommand::Logs(args) => logs(&args),
    }
}

fn install(args: &InstallArgs) -> anyhow::Result<i32> {
    let platform = args.platform.platform.unwrap_or_else(Platform::native);
    let plan = ServicePlan::from_args(args, std::env::vars())?;
    if args.print {
        match platform {
            Platform::Systemd => {
                println!("# {}\n{}", unit_path()?.display(), plan.systemd_unit());
                println!(
                    "# {} (mode 0600; secrets masked here)\n{}",
                    plan.env_file_path().display(),
                    plan.env_file(true)
                );
            }
            Platform::Launchd => {
                println!("# {} (mode 0600; secrets masked here)\n{}", plist_path()?.display(), plan.launchd_plist(true))
            }
        }
        return Ok(0);
    }
    std::fs::create_dir_all(&plan.data_dir).with_context(|| format!("creating {}", plan.data_dir.display()))?;
    match platform {
        Platform::Systemd => {
            let unit = unit_path()?;
            write_file(&plan.env_file_path(), &plan.env_file(false), 0o600)?;
            println!(
                "wrote {} (mode 0600: {} provider variables)",
                plan.env_file_path().display(),
                plan.provider_env.len()
            );
            write_file(&unit, &plan.systemd_unit(), 0o644)?;
            println!("wrote {} (runs {})", unit.display(), plan.binary.display());
            let started = run("systemctl", &["--user", "daemon-reload"])
                .and_then(|()| run("systemctl", &["--user", "enable", "--now", UNIT_NAME]));
            if let Err(e) = started {
                eprintln!("the unit is written but not running: {e:#}");
                eprintln!("(is there a user systemd instance? `systemctl --user status` says; then `systemctl --user enable --now {UNIT_NAME}`)");
                return Ok(1);
            }
            if args.linger {
                run("loginctl", &["enable-linger"])?;
            } else {
                println!(
                    "to keep it running while you are logged out: loginctl enable-linger (or install with --linger)"
                );
            }
        }
        Platform::Launchd => {
            let plist = plist_path()?;
            std::fs::create_dir_all(plan.data_dir.join("logs")).context("creating the log directory")?;
            write_file(&plist, &plan.launchd_plist(false), 0o600)?;
            println!("wrote {} (runs {})", plist.display(), plan.binary.display());
            // SAFETY: getuid cannot fail and touches no memory.
            let uid = unsafe { libc::getuid() };
            if let Err(e) = run("launchctl", &["bootstrap", &format!("gui/{uid}"), &plist.display().to_string()]) {
                eprintln!("the LaunchAgent is written but not loaded: {e:#}");
                return Ok(1);
            }
        }
    }
    println!("bosun runs as a service now: `bosun service status`, `bosun service logs`");
    Ok(0)
}

fn uninstall(platform: Platform) -> anyhow::Result<i32> {
    match platform {
        Platform::Systemd => {
            let unit = unit_path()?;
            if let Err(e) = run("systemctl", &["--user", "disable", "--now", UNIT_NAME]) {
                eprintln!("{e:#} (removing its files anyway)");
            }
            remove(&unit)?;
            let _ = run("systemctl", &["--user", "daemon-reload"]);
        }
        Platform::Launchd => {
            let plist = plist_path()?;
            // SAFETY: getuid cannot fail and touches no memory.
            let uid = unsafe { libc::getuid() };
            if let Err(e) = run("launchctl", &["bootout", &format!("gui/{uid}/{LAUNCHD_LABEL}")]) {
                eprintln!("{e:#} (removing its file anyway)");
            }
            remove(&plist)?;
        }
    }
    Ok(0)
}

fn remove(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {
            println!("removed {}", path.display());
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("{} was not there", path.display());
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

fn passthrough(program: &str, args: &[&str]) -> anyhow::Result<i32> {
    let status = Command::new(program).args(args).status().with_context(|| format!("running {program}"))?;
    Ok(status.code().unwrap_or(1))
}

fn status(platform: Platform) -> anyhow::Result<i32> {
    match platform {
        Platform::Systemd => passthrough("systemctl", &["--user", "status", "--no-pager", UNIT_NAME]),
        Platform::Launchd => {
            // SAFETY: getuid cannot fail and touches no memory.
            let uid = unsafe { libc::getuid() };
            passthrough("launchctl", &["print", &format!("gui/{uid}/{LAUNCHD_LABEL}")])
        }
    }
}

fn logs(args: &LogsArgs) -> anyhow::Result<i32> {
    let lines = args.lines.to_string();
    match args.platform.platform.unwrap_or_else(Platform::native) {
        Platform::Systemd => {
            let mut argv = vec!["--user", "-u", UNIT_NAME, "--no-pager", "-n", &lines];
            if args.follow {
                argv.push("-f");
            }
            passthrough("journalctl", &argv)
        }
        Platform::Launchd => {
            let dir = crate::config::default_data_dir().join("logs");
            let err = dir.join("launchd.err.log").display().to_string();
            let mut argv = vec!["-n", &lines];
            if args.follow {
                argv.push("-F");
            }
            argv.push(&err);
            passthrough("tail", &argv)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> ServicePlan {
        ServicePlan {
            binary: "/opt/bosun 1/bosun".into(),
            data_dir: "/home/me/.local/share/bosun".into(),
            listen: Some("127.0.0.1:7878".into()),
            config: None,
            path: "/home/me/.nvm/bin:/usr/bin".into(),
            provider_env: vec![
                ("OPENAI_API_KEY".into(), "sk-test-1234abcd".into()),
                ("OPENAI_BASE_URL".into(), "http://x/%h".into()),
            ],
        }
    }

    #[test]
    fn the_unit_quotes_what_systemd_would_expand() {
        let unit = plan().systemd_unit();
        assert!(unit.contains("ExecStart=\"/opt/bosun 1/bosun\" \"serve\" \"--data-dir\""), "{unit}");
        assert!(unit.contains("Environment=\"PATH=/home/me/.nvm/bin:/usr/bin\""), "{unit}");
        assert!(!unit.contains("sk-test"), "no secret in the unit");
        assert_eq!(systemd_quote("a$b%c\"d"), "\"a$$b%%c\\\"d\"");
    }

    #[test]
    fn secrets_are_masked_when_shown_and_only_then() {
        let p = plan();
        assert!(p.env_file(true).contains("OPENAI_API_KEY=\"sk-…abcd\""));
        assert!(p.env_file(false).contains("OPENAI_API_KEY=\"sk-test-1234abcd\""));
        assert!(p.env_file(true).contains("OPENAI_BASE_URL=\"http://x/%h\""), "not a secret: shown");
        assert!(p.launchd_plist(true).contains("<string>sk-…abcd</string>"));
    }

    #[test]
    fn only_the_providers_environment_is_kept() {
        assert!(
            is_provider_env("ANTHROPIC_API_KEY") && is_provider_env("HTTPS_PROXY") && is_provider_env("CODEX_HOME")
        );
        assert!(!is_provider_env("HOME") && !is_provider_env("SSH_AUTH_SOCK") && !is_provider_env("PS1"));
    }
}
