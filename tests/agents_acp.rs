//! End to end through the daemon with a real agent: the ACP provider (`codex-acp`, Agent Client Protocol over stdio), driven offline
//! against the scripted model server. The scenarios are shared with the other
//! provider's tests (tests/common/agents.rs). Run `tests/run` first: it
//! installs the agent binaries.

mod common;

use common::agents::{self, CODEX_ACP};

#[tokio::test]
async fn text_turn_streams_the_reply_and_records_usage() {
    agents::text_turn(CODEX_ACP).await;
}

#[tokio::test]
async fn plan_only_accept_runs_the_command_and_decline_does_not() {
    agents::plan_only_accept_and_decline(CODEX_ACP).await;
}

#[tokio::test]
async fn a_patch_asks_as_a_file_change_and_is_applied() {
    agents::patch_asks_as_a_file_change(CODEX_ACP).await;
}

#[tokio::test]
async fn full_access_accepts_automatically_and_records_it() {
    agents::full_access_runs_and_records(CODEX_ACP).await;
}

#[tokio::test]
async fn interrupt_ends_the_turn_and_kills_the_command() {
    agents::interrupt_kills_the_command(CODEX_ACP).await;
}

#[tokio::test]
async fn agent_killed_mid_turn_fails_it_and_restarts() {
    agents::agent_crash_fails_the_turn_and_restarts(CODEX_ACP).await;
}

#[tokio::test]
async fn daemon_killed_and_restarted_resumes_the_conversation() {
    agents::daemon_restart_resumes_the_conversation(CODEX_ACP).await;
}

#[tokio::test]
async fn a_jailed_agent_works_and_writes_only_in_its_cwd() {
    agents::jailed_agent_works_inside_its_jail(CODEX_ACP).await;
}
