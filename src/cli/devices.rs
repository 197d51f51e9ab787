//! `bosun pair`, `bosun devices ls|revoke` and `bosun totp enable|disable`:
//! the admin side of auth (docs/SECURITY.md). They send the admin credential
//! the daemon keeps in its data dir, so only its owner on its machine can
//! pair a device.

use super::{note, render, Client, CommonArgs};
use anyhow::Context as _;
use bosun_proto::TotpRequest;
use serde_json::json;
use std::io::Write as _;
use std::path::PathBuf;

/// `println!` that fails instead of panicking when stdout is gone.
macro_rules! outln {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*).context("writing to stdout")
    };
}

/// The file the daemon writes in its data dir (see `crate::auth`).
const ADMIN_TOKEN_FILE: &str = crate::auth::ADMIN_TOKEN_FILE;

pub fn admin_token_path(common: &CommonArgs) -> PathBuf {
    common.data_dir.clone().unwrap_or_else(crate::config::default_data_dir).join(ADMIN_TOKEN_FILE)
}

/// The admin credential and its path, or `None` when there is no such file.
pub fn read_admin_token(common: &CommonArgs) -> anyhow::Result<Option<(String, PathBuf)>> {
    let path = admin_token_path(common);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => Ok(Some((text.trim().to_string(), path))),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        // Another user's daemon: not ours to drive; go on without it.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && common.data_dir.is_none() => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading the admin credential {}", path.display())),
    }
}

#[derive(Debug, clap::Args)]
pub struct PairArgs {
    #[command(flatten)]
    pub(super) common: CommonArgs,
    /// The address the new device will reach the daemon at (a Tailscale
    /// name, a TLS proxy); default: --server.
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Do not draw the QR code.
    #[arg(long)]
    no_qr: bool,
}

#[derive(Debug, clap::Args)]
pub struct DevicesArgs {
    #[command(flatten)]
    pub(super) common: CommonArgs,
    #[command(subcommand)]
    command: DevicesCommand,
}

#[derive(Debug, clap::Subcommand)]
enum DevicesCommand {
    /// List paired devices (never their tokens).
    #[command(visible_alias = "list")]
    Ls,
    /// Revoke a device: its token is refused from the next request on.
    Revoke {
        #[arg(value_parser = super::id_arg)]
        id: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct TotpArgs {
    #[command(flatten)]
    pub(super) common: CommonArgs,
    #[command(subcommand)]
    command: TotpCommand,
}

#[derive(Debug, clap::Subcommand)]
enum TotpCommand {
    /// Ask for a TOTP code at every pairing; prints the otpauth:// URL and its QR code.
    Enable {
        /// Do not draw the QR code.
        #[arg(long)]
        no_qr: bool,
    },
    /// Stop asking for a TOTP code.
    Disable,
    /// Say whether it is on.
    Status,
}

/// A QR code drawn with half blocks, two rows per line, light on dark so it
/// scans from a dark terminal too.
fn qr(text: &str) -> anyhow::Result<String> {
    use qrcode::render::unicode::Dense1x2;
    let code = qrcode::QrCode::new(text.as_bytes()).context("making the QR code")?;
    Ok(code.render::<Dense1x2>().dark_color(Dense1x2::Light).light_color(Dense1x2::Dark).quiet_zone(true).build())
}

pub async fn pair(client: &Client, args: PairArgs) -> anyhow::Result<i32> {
    let pairing = client.api.create_pairing().await?;
    let base = args.url.as_deref().unwrap_or(client.api.base()).trim_end_matches('/').to_string();
    let url = format!("{base}/#pair={}", pairing.code);
    if client.json {
        outln!("{}", json!({"code": pairing.code, "url": url, "expires_at": pairing.expires_at}))?;
        return Ok(0);
    }
    outln!("{url}")?;
    if !args.no_qr {
        outln!("{}", qr(&url)?)?;
    }
    note(&format!(
        "code {} works once, until {}; open the URL on the device (or type the code on its \"Pair this device\" screen)",
        pairing.code, pairing.expires_at
    ));
    Ok(0)
}

pub async fn devices(client: &Client, args: DevicesArgs) -> anyhow::Result<i32> {
    match args.command {
        DevicesCommand::Ls => {
            let list = client.api.devices().await?;
            if client.json {
                client.print_json(&list)?;
                return Ok(0);
            }
            if list.devices.is_empty() {
                note("no paired devices; pair one with: bosun pair");
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = list
                .devices
                .iter()
                .map(|d| vec![d.id.to_string(), render::clip(&d.name, 40), d.created_at.clone()])
                .collect();
            outln!("{}", render::table(&["ID", "NAME", "PAIRED"], &rows))?;
            Ok(0)
        }
        DevicesCommand::Revoke { id } => {
            let revoked = client.api.revoke_device(&id).await?;
            if client.json {
                client.print_json(&revoked)?;
            } else {
                note(&format!("revoked device {id}"));
            }
            Ok(0)
        }
    }
}

pub async fn totp(client: &Client, args: TotpArgs) -> anyhow::Result<i32> {
    let status = match args.command {
        TotpCommand::Enable { .. } => client.api.set_totp(&TotpRequest { enabled: true }).await?,
        TotpCommand::Disable => client.api.set_totp(&TotpRequest { enabled: false }).await?,
        TotpCommand::Status => client.api.totp().await?,
    };
    if client.json {
        client.print_json(&status)?;
        return Ok(0);
    }
    match (args.command, status.otpauth_url.as_deref()) {
        (TotpCommand::Enable { no_qr }, Some(url)) => {
            outln!("{url}")?;
            if !no_qr {
                outln!("{}", qr(url)?)?;
            }
            note("add this to an authenticator app; pairing now asks for its 6-digit code");
        }
        _ => outln!("totp {}", if status.enabled { "enabled" } else { "disabled" })?,
    }
    std::io::stdout().flush().context("writing to stdout")?;
    Ok(0)
}
