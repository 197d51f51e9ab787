//! `bosun module keygen|pack|install|rollback|ls`: signed provider modules
//! (docs/MODULES.md). `install` and `rollback` go through the running
//! daemon, which verifies and registers the provider at once; with
//! `--offline` they work on the data dir directly (the daemon registers
//! what is current when it next starts). `ls` reads the data dir.

use super::{note, Client, CommonArgs};
use anyhow::{bail, Context as _};
use bosun_modules::{Layout, MAX_MODULE_BYTES};
use futures::StreamExt as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

macro_rules! outln {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*).context("writing to stdout")
    };
}

/// How long a download of a module may take.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, clap::Args)]
pub struct ModuleArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: ModuleCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ModuleCommand {
    /// Make a signing key pair: writes DIR/<key id>.key (0600), prints the
    /// key id and the public key to put in [modules] trusted_keys.
    Keygen {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Build and sign a module from a directory holding a module.toml.
    Pack {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// The secret key file `keygen` wrote.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        #[arg(long, value_name = "MODULE")]
        out: PathBuf,
        /// How long the module may be installed for (`365d`, `12h`...).
        #[arg(long, value_name = "DURATION", default_value = "365d", value_parser = humantime::parse_duration)]
        valid_for: Duration,
    },
    /// Verify a module (a file, or an http:// URL) and install it.
    Install {
        #[arg(value_name = "FILE|URL")]
        source: String,
        /// Install it even if it is older than the installed version.
        #[arg(long)]
        allow_downgrade: bool,
        #[command(flatten)]
        offline: OfflineArgs,
    },
    /// Switch module NAME back to its previous version.
    Rollback {
        name: String,
        #[command(flatten)]
        offline: OfflineArgs,
    },
    /// The installed modules, from each one's current manifest.json.
    #[command(visible_alias = "list")]
    Ls,
}

#[derive(Debug, clap::Args)]
struct OfflineArgs {
    /// Work on the data dir directly, without a daemon; it registers the
    /// module when it next starts.
    #[arg(long)]
    offline: bool,
    /// The daemon's config file: its [modules] trusted_keys and providers
    /// (with --offline).
    #[arg(long, value_name = "FILE", requires = "offline")]
    config: Option<PathBuf>,
}

pub async fn module(args: ModuleArgs) -> anyhow::Result<i32> {
    let common = &args.common;
    match args.command {
        ModuleCommand::Keygen { out } => keygen(common, &out),
        ModuleCommand::Pack { dir, key, out, valid_for } => pack(common, &dir, &key, &out, valid_for),
        ModuleCommand::Install { source, allow_downgrade, offline } => {
            let bytes = read_module(&source).await?;
            if offline.offline {
                let (config, layout) = offline_setup(common, &offline)?;
                let registry = offline_registry(&config)?;
                let trust = config.modules.trust()?;
                let (switched, _, _) = crate::modules::install(
                    &layout,
                    &trust,
                    crate::modules::registry_check(&registry),
                    &bytes,
                    allow_downgrade,
                )
                .map_err(refused)?;
                done(common, "installed", &switched.name, &switched.version, switched.replaced.as_deref(), true)
            } else {
                let client = Client::admin(common)?;
                let answer = client.api.install_module(bytes, allow_downgrade).await.map_err(offline_hint)?;
                if client.json {
                    client.print_json(&answer)?;
                    return Ok(0);
                }
                done(common, "installed", &answer.name, &answer.version, answer.replaced.as_deref(), false)
            }
        }
        ModuleCommand::Rollback { name, offline } => {
            if offline.offline {
                let (config, layout) = offline_setup(common, &offline)?;
                let registry = offline_registry(&config)?;
                let (switched, _, _) =
                    crate::modules::rollback(&layout, &name, crate::modules::registry_check(&registry))
                        .map_err(refused)?;
                done(common, "rolled back to", &switched.name, &switched.version, switched.replaced.as_deref(), true)
            } else {
                let client = Client::admin(common)?;
                let answer = client.api.rollback_module(&name).await.map_err(offline_hint)?;
                if client.json {
                    client.print_json(&answer)?;
                    return Ok(0);
                }
                done(common, "rolled back to", &answer.name, &answer.version, answer.replaced.as_deref(), false)
            }
        }
        ModuleCommand::Ls => ls(common),
    }
}

/// With no daemon to go through, says how to do without one.
fn offline_hint(e: bosun_client::ClientError) -> anyhow::Error {
    match e {
        bosun_client::ClientError::Unreachable { .. } => anyhow::Error::new(e)
            .context("no daemon to install through; with it stopped, --offline --config FILE works on the data dir"),
        e => e.into(),
    }
}

/// A refusal as the daemon would word it: the message and its code.
fn refused(e: crate::modules::InstallError) -> anyhow::Error {
    anyhow::anyhow!("{e} ({})", e.code())
}

fn done(
    common: &CommonArgs,
    what: &str,
    name: &str,
    version: &str,
    replaced: Option<&str>,
    offline: bool,
) -> anyhow::Result<i32> {
    if common.json {
        let answer = serde_json::json!({ "name": name, "version": version, "replaced": replaced });
        outln!("{answer}")?;
        return Ok(0);
    }
    let was = replaced.filter(|r| *r != version).map(|r| format!(" (was {r})")).unwrap_or_default();
    outln!("{what} {name} {version}{was}")?;
    if offline {
        note("the daemon registers it when it next starts");
    } else {
        note(&format!("provider {name} is registered; new sessions start this version"));
    }
    Ok(0)
}

fn keygen(common: &CommonArgs, out: &Path) -> anyhow::Result<i32> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(out)
        .with_context(|| format!("creating {}", out.display()))?;
    let key = bosun_modules::generate()?;
    let public = key.verifying_key();
    let id = bosun_modules::key_id(&public);
    let public_key = bosun_modules::encode_public(&public);
    let path = out.join(format!("{id}.key"));
    // create_new: never overwrite a key (modules signed with it would be orphaned).
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bosun_modules::encode_secret(&key).as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    if common.json {
        outln!("{}", serde_json::json!({ "id": id, "public_key": public_key }))?;
        return Ok(0);
    }
    outln!("key id:     {id}")?;
    outln!("public key: {public_key}")?;
    outln!("secret key: {}", path.display())?;
    note(&format!(
        "trust it in the daemon's config:\n[modules]\ntrusted_keys = [{{ id = \"{id}\", public_key = \"{public_key}\" }}]"
    ));
    Ok(0)
}

fn pack(common: &CommonArgs, dir: &Path, key: &Path, out: &Path, valid_for: Duration) -> anyhow::Result<i32> {
    let key = bosun_modules::read_secret(key)?;
    let now = chrono::Utc::now().timestamp();
    let valid_for = i64::try_from(valid_for.as_secs()).context("--valid-for is too long")?;
    let bytes = bosun_modules::pack(dir, &key, now, valid_for)?;
    std::fs::write(out, &bytes).with_context(|| format!("writing {}", out.display()))?;
    // What was packed, read back the way an install reads it.
    let id = bosun_modules::key_id(&key.verifying_key());
    let trust = bosun_modules::Trust::new(&[bosun_modules::TrustedKey {
        id: id.clone(),
        public_key: bosun_modules::encode_public(&key.verifying_key()),
    }])?;
    let module = bosun_modules::open(&bytes, &trust, now, env!("CARGO_PKG_VERSION")).or_else(|e| match e {
        // A module for a newer bosun can still be packed here.
        bosun_modules::ModuleError::Incompatible { .. } => {
            bosun_modules::open(&bytes, &trust, now, &format!("{}.0.0", u64::MAX))
        }
        e => Err(e),
    })?;
    let m = &module.manifest;
    if common.json {
        let answer = serde_json::json!({
            "name": m.name, "version": m.version, "key_id": m.key_id,
            "expires_at": bosun_modules::timestamp(m.expires_at),
            "sha256": bosun_modules::sha256_hex(&bytes), "path": out.display().to_string(),
        });
        outln!("{answer}")?;
        return Ok(0);
    }
    outln!(
        "packed {} {} ({} files, key {}, expires {}) into {}",
        m.name,
        m.version,
        m.artifacts.len(),
        m.key_id,
        bosun_modules::timestamp(m.expires_at),
        out.display()
    )?;
    Ok(0)
}

fn ls(common: &CommonArgs) -> anyhow::Result<i32> {
    let data_dir = common.data_dir.clone().unwrap_or_else(crate::config::default_data_dir);
    let installed = Layout::new(&data_dir).list()?;
    if common.json {
        let rows: Vec<_> = installed
            .iter()
            .map(|i| {
                serde_json::json!({
                    "name": i.manifest.name, "version": i.manifest.version, "previous": i.previous,
                    "versions": i.versions, "kind": i.manifest.provider.kind, "key_id": i.manifest.key_id,
                    "created_at": bosun_modules::timestamp(i.manifest.created_at),
                    "expires_at": bosun_modules::timestamp(i.manifest.expires_at),
                })
            })
            .collect();
        outln!("{}", serde_json::Value::Array(rows))?;
        return Ok(0);
    }
    if installed.is_empty() {
        note(&format!("no modules installed in {}", data_dir.display()));
        return Ok(0);
    }
    outln!("{:<20} {:<12} {:<12} {:<18} {:<17} EXPIRES", "NAME", "VERSION", "PREVIOUS", "KIND", "KEY")?;
    for i in &installed {
        let m = &i.manifest;
        outln!(
            "{:<20} {:<12} {:<12} {:<18} {:<17} {}",
            m.name,
            m.version,
            i.previous.as_deref().unwrap_or("-"),
            m.provider.kind,
            m.key_id,
            bosun_modules::timestamp(m.expires_at)
        )?;
    }
    Ok(0)
}

/// The config (for its trusted keys and providers) and the data dir an
/// offline install works on: `--data-dir`, else the config's, else the default.
fn offline_setup(common: &CommonArgs, offline: &OfflineArgs) -> anyhow::Result<(crate::config::FileConfig, Layout)> {
    let config = match &offline.config {
        Some(path) => crate::config::FileConfig::load(path)?,
        None => crate::config::FileConfig::default(),
    };
    let data_dir =
        common.data_dir.clone().or_else(|| config.data_dir.clone()).unwrap_or_else(crate::config::default_data_dir);
    Ok((config, Layout::new(&data_dir)))
}

/// The registry the daemon would build from `config` (no discovery: a
/// discovered agent gives way to a module anyway), to ask it whether it
/// takes the module's provider.
fn offline_registry(config: &crate::config::FileConfig) -> anyhow::Result<bosun_driver::ProviderRegistry> {
    bosun_driver::ProviderRegistry::new(crate::providers::kinds(), config.providers.values().cloned())
        .context("loading the config's providers")
}

/// The module's bytes, from a file or an http:// URL, at most
/// [`MAX_MODULE_BYTES`]. Over plain HTTP the signature is what protects it.
async fn read_module(source: &str) -> anyhow::Result<Vec<u8>> {
    if source.starts_with("https://") {
        bail!("this bosun is built without TLS: download {source} (curl -fLO) and install the file");
    }
    if !source.starts_with("http://") {
        let path = Path::new(source);
        let size = std::fs::metadata(path).with_context(|| format!("reading {source}"))?.len();
        if size > MAX_MODULE_BYTES {
            bail!("{source} is larger than a module may be ({MAX_MODULE_BYTES} bytes)");
        }
        return std::fs::read(path).with_context(|| format!("reading {source}"));
    }
    let client = reqwest::Client::builder().timeout(DOWNLOAD_TIMEOUT).build().context("making an HTTP client")?;
    let response = client.get(source).send().await.with_context(|| format!("downloading {source}"))?;
    if !response.status().is_success() {
        bail!("downloading {source}: HTTP {}", response.status());
    }
    if response.content_length().is_some_and(|n| n > MAX_MODULE_BYTES) {
        bail!("{source} is larger than a module may be ({MAX_MODULE_BYTES} bytes)");
    }
    let mut bytes = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.with_context(|| format!("downloading {source}"))?;
        if (bytes.len() + chunk.len()) as u64 > MAX_MODULE_BYTES {
            bail!("{source} is larger than a module may be ({MAX_MODULE_BYTES} bytes)");
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}
