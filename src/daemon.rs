//! Wiring the daemon: open the store, build the shared context, start the
//! supervision tree, serve until told to stop.
//!
//! `run` takes its listener and its shutdown signal as arguments, so tests and
//! benchmarks start a real daemon on `127.0.0.1:0`.

use crate::config::DaemonConfig;
use crate::front::{Front, FrontArgs};
use anyhow::Context as _;
use bosun_actors::diagnostics::Diagnostics;
use bosun_actors::providers::ProvidersActor;
use bosun_actors::sessions::SessionsSupervisor;
use bosun_actors::{names, Context, Settings};
use bosun_driver::ProviderRegistry;
use bosun_state::{FlushPolicy, Store, StoreConfig};
use bosun_supervision::{Backoff, ChildSpec, Intensity, Restart, Shutdown, Strategy, Supervisor, SupervisorConfig};
use ractor::Actor;
use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a graceful stop waits for the tree before giving up on it.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the sockets have, after the goodbye, to send what they owe and
/// hear their clients close: a slow client is not worth more of a stop.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(5);

pub fn open_store(config: &DaemonConfig) -> anyhow::Result<Store> {
    // Made private (0700): it holds the admin token, the devices' tokens and
    // every session. A dir that exists already is left as its owner set it
    // (`bosun doctor` says when others can get in).
    {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.data_dir)
            .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    }
    let mut store_config =
        StoreConfig { path: config.data_dir.join("store"), flush: FlushPolicy::GroupCommit, ..StoreConfig::default() };
    if let Some(capacity) = config.live_capacity {
        store_config.live_capacity = capacity.max(1);
    }
    Store::open(store_config).with_context(|| format!("opening the store in {}", config.data_dir.display()))
}

/// Runs a daemon on `listener` until `shutdown` resolves. `ready` is called
/// once the tree is up and the front accepts requests.
pub async fn run(
    config: DaemonConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(&Context),
) -> anyhow::Result<()> {
    let started = Instant::now();
    let secrets = Arc::new(crate::secrets::SecretStore::new(&config.data_dir));
    {
        // Finds the key now (a time-bounded keyring probe, logged) and opens
        // every value with it, before the store is touched: a key that was
        // lost is said at start, not at some agent's spawn.
        let secrets = secrets.clone();
        let count = tokio::task::spawn_blocking(move || secrets.list().map(|list| list.len()))
            .await
            .context("reading the secrets")?
            .context("reading the secrets")?;
        tracing::info!(secrets = count, "secrets open with their key");
    }
    let store = open_store(&config)?;
    let auth = crate::auth::Auth::open(&config.auth, &config.data_dir, store.clone()).context("setting up auth")?;
    let orphans =
        bosun_actors::provider::stop_orphaned_agents(&store).await.context("stopping agents left by the last run")?;
    if orphans > 0 {
        tracing::warn!(orphans, "stopped agent processes the last run left behind");
    }
    let search_path = if config.discover_agents { std::env::var_os("PATH") } else { None };
    let providers = ProviderRegistry::with_discovery(crate::providers::kinds(), config.providers.clone(), search_path)
        .context("loading providers")?
        .with_secrets(Arc::new(crate::secrets::Resolver(secrets.clone())));
    // What was installed while the daemon was down (`--offline`) or before
    // it last stopped: the current version of each module.
    crate::modules::register_installed(&providers, &config.data_dir);
    let default_cwd = std::env::current_dir().context("reading the current directory")?;
    let ctx = Context::new(
        store.clone(),
        providers,
        Settings {
            fault_injection: config.fault_injection,
            default_cwd,
            data_dir: config.data_dir.clone(),
            docker: config.docker.clone().map(|docker| {
                Arc::new(bosun_isolation::container::DockerHost::new(docker)) as Arc<dyn bosun_isolation::ShellHost>
            }),
            docker_config: config.docker.clone(),
            loopback_trusted: config.auth.require == crate::config::AuthRequire::Remote,
            listen: listener.local_addr().ok(),
            proxied: !config.auth.trusted_proxies.is_empty() || !config.auth.allowed_origins.is_empty(),
            git: config.git.clone(),
            prices: config.prices.clone(),
            termbridge: config.termbridge.clone(),
            module_trust: config.module_trust.clone(),
        },
    );
    // Small WebSocket frames must not wait for Nagle's algorithm and delayed
    // ACKs (tens of ms); Linux passes the option on to accepted sockets.
    socket2::SockRef::from(&listener).set_tcp_nodelay(true).context("setting TCP_NODELAY on the listener")?;
    let listener = Arc::new(listener);
    // Made once, like the listener: connections outlive a restarted front.
    let connections = crate::front::Connections::new(crate::front::ConnectionLimits::new(&config.server));
    let farewell = crate::front::Farewell::new();
    let metrics_listener = match config.metrics.listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr).with_context(|| format!("binding the metrics listener {addr}"))?;
            let bound = listener.local_addr().context("reading the metrics listener's address")?;
            tracing::info!(addr = %bound, "serving GET /metrics without a token on a loopback listener");
            let limits = crate::front::ConnectionLimits::for_metrics(&config.server);
            Some(crate::front::MetricsListener {
                listener: Arc::new(listener),
                connections: crate::front::Connections::new(limits),
            })
        }
        None => None,
    };
    probe_versions(&ctx);

    let sup_config = SupervisorConfig {
        strategy: Strategy::OneForOne,
        intensity: Intensity { max_restarts: 10, within: Duration::from_secs(60) },
        backoff: Backoff { initial: Duration::from_millis(50), max: Duration::from_secs(5) },
        on_restart: Some(ctx.restart_hook()),
    };
    let children = vec![
        diagnostics_spec(&ctx),
        providers_spec(&ctx),
        sessions_spec(&ctx),
        workflows_spec(&ctx),
        tasks_spec(&ctx),
        terminals_spec(&ctx),
        auth_spec(auth.records()),
        front_spec(&ctx, listener, auth, secrets, connections, farewell.clone(), metrics_listener),
    ];
    let (root, root_handle) = Supervisor::spawn(Some(names::ROOT.to_string()), Supervisor, (sup_config, children))
        .await
        .context("starting the supervision tree")?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        head_seq = store.durable_head(),
        sessions = store.count::<bosun_state::SessionRecord>(),
        "ready"
    );
    ready(&ctx);

    let mut root_handle = root_handle;
    let outcome = tokio::select! {
        _ = shutdown => {
            tracing::info!("shutting down");
            if root.stop_and_wait(Some("shutdown".into()), Some(SHUTDOWN_TIMEOUT)).await.is_err() {
                tracing::warn!("the supervision tree did not stop in time; killing it");
                root.kill();
            }
            let _ = root_handle.await;
            // The agents are stopped and their last events committed: the
            // sockets get them, then a goodbye, before the store closes.
            let left = farewell.say(GOODBYE_TIMEOUT).await;
            if left > 0 {
                tracing::warn!(left, "sockets did not close after the goodbye; closing them anyway");
            }
            Ok(())
        }
        // The root gave up (its restart intensity was exceeded): exit with an
        // error so the process supervisor (systemd, ...) starts a fresh daemon.
        _ = &mut root_handle => Err(anyhow::anyhow!("the root supervisor stopped; the daemon cannot go on")),
    };
    store.close();
    outcome
}

fn diagnostics_spec(ctx: &Context) -> ChildSpec {
    let ctx = ctx.clone();
    ChildSpec::for_actor(names::DIAGNOSTICS, Restart::Permanent, Shutdown::Timeout(Duration::from_secs(5)), move || {
        (Diagnostics, ctx.clone())
    })
}

fn providers_spec(ctx: &Context) -> ChildSpec {
    let ctx = ctx.clone();
    ChildSpec::for_actor(names::PROVIDERS, Restart::Permanent, Shutdown::Timeout(Duration::from_secs(5)), move || {
        (ProvidersActor, ctx.clone())
    })
}

fn sessions_spec(ctx: &Context) -> ChildSpec {
    let ctx = ctx.clone();
    // Stopping every session actor in turn takes a while with many sessions.
    ChildSpec::for_actor(names::SESSIONS, Restart::Permanent, Shutdown::Timeout(Duration::from_secs(15)), move || {
        (SessionsSupervisor, ctx.clone())
    })
}

fn workflows_spec(ctx: &Context) -> ChildSpec {
    let ctx = ctx.clone();
    ChildSpec::for_actor(names::WORKFLOWS, Restart::Permanent, Shutdown::Timeout(Duration::from_secs(15)), move || {
        (bosun_actors::workflows::WorkflowsSupervisor, ctx.clone())
    })
}

fn terminals_spec(ctx: &Context) -> ChildSpec {
    let ctx = ctx.clone();
    ChildSpec::for_actor(names::TERMINALS, Restart::Permanent, Shutdown::Timeout(Duration::from_secs(10)), move || {
        (bosun_actors::terminals::TerminalsSupervisor, ctx.clone())
    })
}

fn tasks_spec(ctx: &Context) -> ChildSpec {
    let ctx = ctx.clone();
    ChildSpec::for_actor(names::TASKS, Restart::Permanent, Shutdown::Timeout(Duration::from_secs(5)), move || {
        (bosun_actors::tasks::TasksActor, ctx.clone())
    })
}

fn auth_spec(records: Arc<crate::auth::owner::AuthRecords>) -> ChildSpec {
    ChildSpec::for_actor(names::AUTH, Restart::Permanent, Shutdown::Timeout(Duration::from_secs(5)), move || {
        (crate::auth::owner::AuthActor, records.clone())
    })
}

fn front_spec(
    ctx: &Context,
    listener: Arc<TcpListener>,
    auth: Arc<crate::auth::Auth>,
    secrets: Arc<crate::secrets::SecretStore>,
    connections: Arc<crate::front::Connections>,
    farewell: Arc<crate::front::Farewell>,
    metrics_listener: Option<crate::front::MetricsListener>,
) -> ChildSpec {
    let ctx = ctx.clone();
    ChildSpec::for_actor(names::FRONT, Restart::Permanent, Shutdown::Timeout(Duration::from_secs(5)), move || {
        let args = FrontArgs {
            ctx: ctx.clone(),
            listener: listener.clone(),
            auth: auth.clone(),
            secrets: secrets.clone(),
            connections: connections.clone(),
            farewell: farewell.clone(),
            metrics_listener: metrics_listener.clone(),
        };
        (Front, args)
    })
}

/// Asks each provider's program for its version, in the background, for
/// `GET /api/v1/providers`; a version an agent reports when it starts wins.
fn probe_versions(ctx: &Context) {
    for status in ctx.providers.statuses() {
        let Some(program) = status.resolved else { continue };
        let registry = ctx.providers.clone();
        tokio::spawn(async move {
            if let Some(version) = bosun_driver::probe_version(&program, Duration::from_secs(5)).await {
                registry.report_version(&status.spec.name, version);
            }
        });
    }
}
