//! `bosun secrets set|ls|rm`: the data dir's secrets, worked on in its
//! files directly, so it works whether or not a daemon runs there (a
//! running daemon reads them again each time it starts an agent).
//!
//! A value is read from stdin, never from the command line, where any user
//! of the machine can see it (`ps`, `/proc/PID/cmdline`, shell history).

use super::CommonArgs;
use crate::secrets::SecretStore;
use anyhow::{bail, Context as _};
use std::io::{BufRead as _, IsTerminal as _, Read as _, Write as _};

#[derive(Debug, clap::Args)]
pub struct SecretsArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: SecretsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum SecretsCommand {
    /// Set a secret to the value read from stdin (asked for, unechoed, on a
    /// terminal); one trailing newline is dropped.
    Set {
        /// Letters, digits, '-', '_' and '.'.
        name: String,
    },
    /// List the secrets, their values masked.
    #[command(visible_alias = "list")]
    Ls,
    /// Remove a secret.
    Rm { name: String },
}

pub fn secrets(args: SecretsArgs) -> anyhow::Result<i32> {
    let data_dir = args.common.data_dir.clone().unwrap_or_else(crate::config::default_data_dir);
    let store = SecretStore::new(&data_dir);
    match args.command {
        SecretsCommand::Set { name } => {
            // Refused before the value is asked for.
            crate::secrets::check_name(&name)?;
            let value = read_value(&name)?;
            let (info, created) = store.set(&name, &value).with_context(|| format!("setting secret {name:?}"))?;
            if args.common.json {
                println!("{}", serde_json::to_string(&view(info))?);
            } else {
                let verb = if created { "set" } else { "replaced" };
                println!("{verb} {} ({})", info.name, info.masked);
            }
            if let Some(location) = store.key_location() {
                eprintln!("the secrets key is in {location}");
            }
            Ok(0)
        }
        SecretsCommand::Ls => {
            let list = store.list().context("reading the secrets")?;
            if args.common.json {
                let secrets = list.into_iter().map(view).collect();
                println!("{}", serde_json::to_string(&bosun_proto::SecretList { secrets })?);
            } else if list.is_empty() {
                eprintln!("no secrets in {}", data_dir.display());
            } else {
                let width = list.iter().map(|s| s.name.len()).max().unwrap_or(0);
                for secret in list {
                    println!("{:width$}  {:20}  {}", secret.name, secret.masked, secret.updated_at);
                }
            }
            Ok(0)
        }
        SecretsCommand::Rm { name } => {
            if !store.remove(&name).with_context(|| format!("removing secret {name:?}"))? {
                bail!("there is no secret {name:?} in {}", data_dir.display());
            }
            println!("removed {name}");
            Ok(0)
        }
    }
}

fn view(info: crate::secrets::SecretInfo) -> bosun_proto::SecretView {
    bosun_proto::SecretView { name: info.name, masked: info.masked, updated_at: info.updated_at }
}

/// The value from stdin: one line asked for without echo on a terminal,
/// else all of it, less one trailing newline.
fn read_value(name: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let mut value = String::new();
    if stdin.is_terminal() {
        eprint!("value of {name}: ");
        let _ = std::io::stderr().flush();
        let echo = EchoOff::new();
        let read = stdin.lock().read_line(&mut value);
        // ECHONL has echoed the newline that ended it.
        drop(echo);
        read.context("reading the value from the terminal")?;
    } else {
        stdin.lock().read_to_string(&mut value).context("reading the value from stdin")?;
    }
    let value = value.strip_suffix('\n').map(|v| v.strip_suffix('\r').unwrap_or(v)).unwrap_or(&value).to_string();
    if value.is_empty() {
        bail!("no value on stdin: pipe it in (`printf %s \"$KEY\" | bosun secrets set {name}`) or type it when asked");
    }
    Ok(value)
}

/// Turns the terminal's echo off until dropped, so a typed value is not shown.
struct EchoOff(Option<libc::termios>);

impl EchoOff {
    fn new() -> EchoOff {
        // SAFETY: tcgetattr/tcsetattr on stdin with a termios this frame owns.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut saved) != 0 {
                return EchoOff(None);
            }
            let mut quiet = saved;
            quiet.c_lflag &= !libc::ECHO;
            quiet.c_lflag |= libc::ECHONL;
            if libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet) != 0 {
                return EchoOff(None);
            }
            EchoOff(Some(saved))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            // SAFETY: puts back the settings read in `new`.
            unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved) };
        }
    }
}
