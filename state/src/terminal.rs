//! Terminals: the capability map (one record per kind of terminal, with its
//! consent), written by the terminals actor alone (`Owner::Terminals`);
//! bindings and a `pty` binding's scrollback, written by the binding's actor
//! (`Owner::Binding`).

use crate::{Owner, Record};
use bosun_proto::{
    BindingState, BindingView, ExitView, OutputRange, TerminalCapabilities, TerminalKind, TerminalSize, TerminalView,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One kind of terminal as last discovered, and the user's consent to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TerminalRecord {
    pub terminal: TerminalKind,
    pub installed: bool,
    pub running: bool,
    pub reachable: bool,
    pub version: Option<String>,
    pub capabilities: TerminalCapabilities,
    pub requires_opt_in: bool,
    pub consent_granted_at: Option<String>,
    pub notes: Vec<String>,
    pub risk_flags: Vec<String>,
    pub discovered_at: String,
}

impl Record for TerminalRecord {
    const TREE: &'static str = "terminals";
    const OWNER: Owner = Owner::Terminals;
    const SCHEMA: u16 = 1;

    fn key(&self) -> String {
        self.terminal.as_str().to_string()
    }
}

impl TerminalRecord {
    pub fn view(&self) -> TerminalView {
        TerminalView {
            terminal: self.terminal,
            installed: self.installed,
            running: self.running,
            reachable: self.reachable,
            version: self.version.clone(),
            capabilities: self.capabilities,
            requires_opt_in: self.requires_opt_in,
            consent_granted_at: self.consent_granted_at.clone(),
            notes: self.notes.clone(),
            risk_flags: self.risk_flags.clone(),
            discovered_at: self.discovered_at.clone(),
        }
    }

    /// Whether the discovered facts differ (consent and the time aside).
    pub fn same_facts(&self, other: &TerminalRecord) -> bool {
        let strip =
            |r: &TerminalRecord| TerminalRecord { consent_granted_at: None, discovered_at: String::new(), ..r.clone() };
        strip(self) == strip(other)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BindingRecord {
    pub id: String,
    pub terminal: TerminalKind,
    pub session_id: Option<String>,
    pub endpoint: String,
    /// The terminal's own id of the pane or window (`%3`, `7`); for `pty`
    /// the binding id.
    pub pane: String,
    pub pid: Option<u32>,
    /// When the process with `pid` started (clock ticks since boot, from
    /// /proc), so a pid reused by another process is never taken for it.
    pub pid_started: Option<u64>,
    pub labels: BTreeMap<String, String>,
    pub command: Vec<String>,
    pub cwd: String,
    pub state: BindingState,
    pub exit: Option<ExitView>,
    pub reason: Option<String>,
    pub jailed: bool,
    pub size: Option<TerminalSize>,
    pub created_at: String,
    pub updated_at: String,
}

impl Record for BindingRecord {
    const TREE: &'static str = "bindings";
    const OWNER: Owner = Owner::Binding;
    const SCHEMA: u16 = 1;

    fn key(&self) -> String {
        self.id.clone()
    }
}

impl BindingRecord {
    pub fn view(&self, output: Option<OutputRange>) -> BindingView {
        BindingView {
            binding_id: self.id.clone(),
            terminal: self.terminal,
            session_id: self.session_id.clone().map(Into::into),
            ipc_endpoint: self.endpoint.clone(),
            pid: self.pid,
            labels: self.labels.clone(),
            command: self.command.clone(),
            cwd: self.cwd.clone(),
            state: self.state,
            exit: self.exit.clone(),
            reason: self.reason.clone(),
            jailed: self.jailed,
            size: self.size,
            output,
            created_at: self.created_at.clone(),
            updated_at: self.updated_at.clone(),
        }
    }
}

/// Bytes of a `pty` terminal's output from `offset` on, as committed.
/// Keyed by binding and offset, so a terminal's chunks scan in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScrollbackChunk {
    pub binding_id: String,
    pub offset: u64,
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

impl Record for ScrollbackChunk {
    const TREE: &'static str = "scrollback";
    const OWNER: Owner = Owner::Binding;
    const SCHEMA: u16 = 1;

    fn key(&self) -> String {
        ScrollbackChunk::key_for(&self.binding_id, self.offset)
    }
}

impl ScrollbackChunk {
    /// Offsets are zero-padded so key order is offset order.
    pub fn key_for(binding_id: &str, offset: u64) -> String {
        format!("{}{offset:020}", ScrollbackChunk::prefix(binding_id))
    }

    pub fn prefix(binding_id: &str) -> String {
        format!("{binding_id}/")
    }

    pub fn end(&self) -> u64 {
        self.offset + self.bytes.len() as u64
    }
}

/// What a terminal approval holds back until it is decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HeldTerminalAction {
    Spawn(bosun_proto::SpawnTerminalRequest),
    Send(bosun_proto::SendTextRequest),
}

/// An action on a terminal waiting for a person, or decided. Written by the
/// terminals actor alone: it asks, and it carries the action out once
/// accepted (through the binding's actor for a send).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TerminalApprovalRecord {
    pub id: String,
    pub binding_id: Option<String>,
    pub terminal: TerminalKind,
    pub session_id: Option<String>,
    pub held: HeldTerminalAction,
    pub concerns: Vec<String>,
    /// The command or text as the person is shown it.
    pub revealed: String,
    pub status: bosun_proto::ApprovalStatus,
    pub decided_by: Option<bosun_proto::DecidedBy>,
    pub requested_at: String,
    pub decided_at: Option<String>,
    /// What carrying it out came to (`done`, or the error).
    pub outcome: Option<String>,
}

impl Record for TerminalApprovalRecord {
    const TREE: &'static str = "terminal_approvals";
    const OWNER: Owner = Owner::Terminals;
    const SCHEMA: u16 = 1;

    fn key(&self) -> String {
        self.id.clone()
    }
}

impl TerminalApprovalRecord {
    pub fn action_name(&self) -> &'static str {
        match self.held {
            HeldTerminalAction::Spawn(_) => "spawn",
            HeldTerminalAction::Send(_) => "send_text",
        }
    }

    pub fn view(&self) -> bosun_proto::ApprovalView {
        bosun_proto::ApprovalView {
            id: self.id.clone().into(),
            session_id: self.session_id.clone().map(Into::into),
            turn_id: None,
            action: bosun_proto::Action::Terminal {
                binding_id: self.binding_id.clone(),
                terminal: self.terminal,
                action: self.action_name().to_string(),
                text: self.revealed.clone(),
                concerns: self.concerns.clone(),
            },
            status: self.status,
            decided_by: self.decided_by,
            requested_at: self.requested_at.clone(),
            decided_at: self.decided_at.clone(),
        }
    }
}
