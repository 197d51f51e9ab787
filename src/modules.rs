//! Signed provider modules in the daemon and in `bosun module ... --offline`
//! (docs/MODULES.md): verify, install into the data dir, and turn what is
//! installed into providers. The pure work is bosun-modules'; this is where
//! it meets the registry.

use bosun_driver::{ProviderRegistry, ProviderSpec, RegistryError};
use bosun_modules::{Installed, Layout, Manifest, ModuleError, Switched, Trust};

/// Why an install or a rollback was refused.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Module(#[from] ModuleError),
    /// The module's provider cannot be registered: its name is the
    /// config's or a built-in's, or its kind is unknown to this daemon.
    #[error(transparent)]
    Provider(#[from] RegistryError),
}

impl InstallError {
    pub fn code(&self) -> &'static str {
        match self {
            InstallError::Module(e) => e.code(),
            InstallError::Provider(RegistryError::Taken { .. }) => "provider_conflict",
            InstallError::Provider(RegistryError::UnknownKind { .. }) => "unknown_kind",
            InstallError::Provider(_) => "bad_module",
        }
    }
}

/// The provider an installed module registers, under its name.
pub fn spec_of(installed: &Installed) -> ProviderSpec {
    let provider = &installed.manifest.provider;
    let args: Vec<&str> = provider.args.iter().map(String::as_str).collect();
    let mut spec = ProviderSpec::new(&installed.manifest.name, &provider.kind, Some(&installed.command()), &args);
    spec.env = provider.env.clone();
    spec
}

/// The spec a manifest would give, for checking before anything is unpacked
/// (its command's final path is not known yet, and does not matter there).
fn draft_spec(manifest: &Manifest) -> ProviderSpec {
    let provider = &manifest.provider;
    let args: Vec<&str> = provider.args.iter().map(String::as_str).collect();
    ProviderSpec::new(&manifest.name, &provider.kind, Some(&provider.command), &args)
}

/// Registers the current version of every installed module, at start. A
/// module the registry refuses (its name is in the config now) or that
/// cannot be read is skipped with a warning: the config wins.
pub fn register_installed(registry: &ProviderRegistry, data_dir: &std::path::Path) {
    let layout = Layout::new(data_dir);
    let names = match layout.names() {
        Ok(names) => names,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the installed modules; none is registered");
            return;
        }
    };
    // One module that cannot be read (a version dir removed by hand) does
    // not keep the others from being registered.
    for name in names {
        let module = match layout.installed(&name) {
            Ok(Some(module)) => module,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(module = %name, error = %e, "installed module not registered");
                continue;
            }
        };
        match registry.register_module(spec_of(&module)) {
            Ok(_) => tracing::info!(module = %name, version = %module.manifest.version, "module provider registered"),
            Err(e) => tracing::warn!(module = %name, error = %e, "installed module not registered"),
        }
    }
}

/// Verifies `bytes` and installs the module: every check (signature,
/// expiry, hashes, version, the registry's say on the provider) passes
/// before the data dir is touched. Blocking: run it on a blocking task.
/// `check` is the registry's (or, offline, the config's) word on the spec.
pub fn install(
    layout: &Layout,
    trust: &Trust,
    check: impl Fn(&ProviderSpec) -> Result<(), RegistryError>,
    bytes: &[u8],
    allow_downgrade: bool,
) -> Result<(Switched, ProviderSpec, String), InstallError> {
    let now = chrono::Utc::now().timestamp();
    let verified = bosun_modules::open(bytes, trust, now, env!("CARGO_PKG_VERSION"))?;
    check(&draft_spec(&verified.manifest))?;
    // Refuses a downgrade or a version conflict before it writes anything.
    let switched = layout.install(&verified, allow_downgrade)?;
    let installed =
        layout.installed(&switched.name)?.ok_or_else(|| ModuleError::NotInstalled(switched.name.clone()))?;
    Ok((switched, spec_of(&installed), verified.manifest.key_id))
}

/// Makes module `name`'s previous version current again. Blocking.
pub fn rollback(
    layout: &Layout,
    name: &str,
    check: impl Fn(&ProviderSpec) -> Result<(), RegistryError>,
) -> Result<(Switched, ProviderSpec, String), InstallError> {
    let installed = layout.installed(name)?.ok_or_else(|| ModuleError::NotInstalled(name.to_string()))?;
    check(&draft_spec(&installed.manifest))?;
    let switched = layout.rollback(name)?;
    let now = layout.installed(name)?.ok_or_else(|| ModuleError::NotInstalled(name.to_string()))?;
    let key_id = now.manifest.key_id.clone();
    Ok((switched, spec_of(&now), key_id))
}

/// The registry's check, for the daemon.
pub fn registry_check(registry: &ProviderRegistry) -> impl Fn(&ProviderSpec) -> Result<(), RegistryError> + '_ {
    move |spec| registry.check_module(spec)
}
