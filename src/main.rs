//! `bosun`: the daemon (`bosun serve`) and its command-line client.

mod auth;
mod bench;
mod cli;
mod config;
mod daemon;
mod doctor;
mod front;
mod logging;
mod modules;
mod providers;
mod proxy;
mod secrets;
mod service;

use anyhow::Context as _;
use clap::Parser;
use config::{DaemonConfig, FileConfig, LogFormat};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "bosun", version, about = "A supervised, durable daemon for AI coding-agent sessions")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run the daemon.
    Serve(ServeArgs),
    /// Measure the store, the fan-out and restarts (see docs/BENCHMARKS.md).
    Bench(bench::BenchArgs),
    /// A fake ACP agent on stdio, for `bosun bench --only agent`.
    #[command(hide = true)]
    BenchAgent(bench::bench_agent::BenchAgentArgs),
    /// Runs a docker session's terminal in its container, on this tty (the
    /// daemon starts it in the terminal's PTY).
    #[command(hide = true, name = "container-terminal")]
    ContainerTerminal,
    /// Install, remove and inspect the daemon as a per-user service
    /// (systemd user unit, macOS LaunchAgent).
    Service(service::ServiceArgs),
    #[command(flatten)]
    Client(cli::ClientCommand),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on (loopback by default).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Where the store lives (default: $XDG_DATA_HOME/bosun).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A TOML config file (listen, data_dir, log_format, [providers.NAME]).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Obey POST /api/v1/debug/crash (for crash-recovery demos and tests).
    #[arg(long)]
    enable_fault_injection: bool,
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Capacity of the in-memory live fan-out; a subscriber further behind is
    /// caught up from the store. Small values exercise that path in tests.
    #[arg(long, hide = true)]
    live_capacity: Option<usize>,
}

/// `bosun container-terminal`: the spec comes in the environment, from the
/// daemon; what fails is said on the terminal itself, where its user looks.
async fn container_terminal() -> anyhow::Result<i32> {
    use bosun_actors::terminals::CONTAINER_TERMINAL_ENV;
    let spec = std::env::var(CONTAINER_TERMINAL_ENV)
        .with_context(|| format!("{CONTAINER_TERMINAL_ENV} is not set: the daemon starts this command itself"))?;
    let spec: bosun_isolation::container::TerminalContainer =
        serde_json::from_str(&spec).context("reading the terminal's container spec")?;
    let host = bosun_isolation::container::DockerHost::new(spec.docker.clone());
    let code = match host.run_terminal(&spec).await {
        Ok(code) => code,
        Err(e) => {
            // 125, as `docker run` says when the container itself failed.
            eprint!("bosun: this terminal's container did not start: {e}\r\n");
            125
        }
    };
    // Now: the runtime would wait on its shutdown for the thread blocked
    // reading the tty, which no one will type into again.
    std::process::exit(code)
}

fn main() {
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
        .and_then(|runtime| match cli.command {
            Command::Serve(args) => runtime.block_on(serve(args)).map(|()| 0),
            Command::Bench(args) => runtime.block_on(bench::run(args)).map(|()| 0),
            // Synchronous on purpose: it decides exactly when each line is written.
            Command::BenchAgent(args) => bench::bench_agent::run(args).map(|()| 0),
            Command::Client(cmd) => runtime.block_on(cli::run(cmd)),
            Command::ContainerTerminal => runtime.block_on(container_terminal()),
            Command::Service(args) => service::run_command(args),
        });
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            // The chain of contexts says what went wrong; a backtrace would not help a user.
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let data_dir = args.data_dir.or(file.data_dir.clone()).unwrap_or_else(config::default_data_dir);
    if let Some(path) = &args.config {
        // Before anything starts: a daemon runs with all of its config or not at all.
        let secrets = secrets::SecretStore::new(&data_dir)
            .names()
            .context("reading the data dir's secrets, which the config may refer to")?;
        file.check(path, &providers::kinds(), &secrets)?;
    }
    let config = DaemonConfig {
        listen: args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| config::DEFAULT_LISTEN.parse().expect("the default listen address is valid")),
        data_dir,
        providers: file.providers.into_values().collect(),
        discover_agents: file.discover_agents.unwrap_or(true),
        fault_injection: args.enable_fault_injection,
        log_format: args.log_format.or(file.log_format).unwrap_or_default(),
        live_capacity: args.live_capacity,
        auth: file.auth,
        server: file.server,
        docker: file.docker,
        git: file.git,
        prices: file.prices,
        termbridge: file.termbridge,
        module_trust: file.modules.trust()?,
        metrics: file.metrics,
        logs: file.logs,
    };
    logging::init(config.log_format, Some((&config.data_dir, &config.logs)))?;
    let listener = std::net::TcpListener::bind(config.listen).with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "listening beyond loopback: anyone who can reach this address can drive your agents");
    }
    if config.fault_injection {
        tracing::warn!("fault injection is on: POST /api/v1/debug/crash makes actors panic");
    }
    let data_dir = config.data_dir.clone();
    daemon::run(config, listener, shutdown_signal(), move |_| {
        // The one line on stdout: scripts and tests read the URL from it.
        println!("bosun listening on http://{addr} (data dir {})", data_dir.display());
    })
    .await
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; stop with Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
