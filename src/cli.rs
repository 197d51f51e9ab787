//! The command-line client (being written).
#[derive(Debug, clap::Subcommand)]
pub enum ClientCommand {
    /// Show the daemon's health.
    Status,
}

pub async fn run(_cmd: ClientCommand) -> anyhow::Result<i32> {
    anyhow::bail!("not written yet")
}
