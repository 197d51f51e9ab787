//! Stable actor names. Actors reach each other through these (via the ractor
//! registry), never through a stored `ActorRef`, so a restarted actor is found
//! under the same name and no stale reference survives a restart.

pub const ROOT: &str = "bosun.root";
pub const SESSIONS: &str = "bosun.sessions";
pub const DIAGNOSTICS: &str = "bosun.diagnostics";
pub const FRONT: &str = "bosun.front";
pub const PROVIDERS: &str = "bosun.providers";
pub const AUTH: &str = "bosun.auth";
pub const WORKFLOWS: &str = "bosun.workflows";
pub const TASKS: &str = "bosun.tasks";
pub const TERMINALS: &str = "bosun.terminals";

/// One terminal binding's actor.
pub fn binding(binding_id: &str) -> String {
    format!("bosun.binding.{binding_id}")
}

/// One workflow run's actor.
pub fn workflow(run_id: &str) -> String {
    format!("bosun.workflow.{run_id}")
}

pub fn session(session_id: &str) -> String {
    format!("bosun.session.{session_id}")
}

/// A session has at most one active turn, so the turn actor is named by its session.
pub fn turn(session_id: &str) -> String {
    format!("bosun.turn.{session_id}")
}

pub fn provider(session_id: &str) -> String {
    format!("bosun.provider.{session_id}")
}

/// The kind of an actor, from its name: what `/health` counts restarts by.
pub fn kind_of(name: &str) -> &str {
    match name {
        ROOT => "root",
        SESSIONS => "sessions",
        DIAGNOSTICS => "diagnostics",
        FRONT => "front",
        PROVIDERS => "providers",
        AUTH => "auth",
        WORKFLOWS => "workflows",
        TASKS => "tasks",
        TERMINALS => "terminals",
        _ if name.starts_with("bosun.binding.") => "binding",
        _ if name.starts_with("bosun.session.") => "session",
        _ if name.starts_with("bosun.turn.") => "turn",
        _ if name.starts_with("bosun.provider.") => "provider",
        _ if name.starts_with("bosun.workflow.") => "workflow",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(kind_of(&session("a")), "session");
        assert_eq!(kind_of(&turn("a")), "turn");
        assert_eq!(kind_of(&provider("a")), "provider");
        assert_eq!(kind_of(FRONT), "front");
    }
}
