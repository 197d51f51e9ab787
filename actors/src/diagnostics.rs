//! The diagnostics actor: turns daemon-side happenings (restarts, warnings
//! about a session) into durable `diagnostics:log` and `actor:restarted` events.
//!
//! It is fed by casts only, so reporting never blocks the reporter.

use crate::context::Context;
use crate::names;
use bosun_proto::{events, EventData, LogLevel, Topic};
use bosun_state::Batch;
use ractor::{Actor, ActorProcessingErr, ActorRef};

pub enum DiagnosticsMsg {
    Log { level: LogLevel, session_id: Option<String>, turn_id: Option<String>, message: String },
    Restarted { actor: String },
    Crash,
}

pub struct Diagnostics;

/// Records that a supervisor restarted `actor` (best effort: if the
/// diagnostics actor is itself restarting, the count in `/health` still moves).
pub fn report_restart(actor: &str) {
    crate::route::send(names::DIAGNOSTICS, DiagnosticsMsg::Restarted { actor: actor.to_string() });
}

/// Records a log line about a session as an event clients can see.
pub fn report(level: LogLevel, session_id: Option<&str>, turn_id: Option<&str>, message: impl Into<String>) {
    crate::route::send(
        names::DIAGNOSTICS,
        DiagnosticsMsg::Log {
            level,
            session_id: session_id.map(str::to_string),
            turn_id: turn_id.map(str::to_string),
            message: message.into(),
        },
    );
}

impl Actor for Diagnostics {
    type Msg = DiagnosticsMsg;
    type State = Context;
    type Arguments = Context;

    async fn pre_start(&self, _myself: ActorRef<Self::Msg>, ctx: Context) -> Result<Context, ActorProcessingErr> {
        Ok(ctx)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: DiagnosticsMsg,
        ctx: &mut Context,
    ) -> Result<(), ActorProcessingErr> {
        let event = match msg {
            DiagnosticsMsg::Crash => {
                if ctx.settings.fault_injection {
                    panic!("injected fault: diagnostics");
                }
                return Ok(());
            }
            DiagnosticsMsg::Log { level, session_id, turn_id, message } => {
                let topic = session_id.as_deref().map(Topic::session).unwrap_or_else(Topic::system);
                EventData::DiagnosticsLog(events::DiagnosticsLog {
                    level,
                    session_id: session_id.map(Into::into),
                    turn_id: turn_id.map(Into::into),
                    message,
                })
                .into_event(topic)
            }
            DiagnosticsMsg::Restarted { actor } => {
                tracing::warn!(actor = %actor, kind = names::kind_of(&actor), "actor restarted");
                let kind = names::kind_of(&actor).to_string();
                EventData::ActorRestarted(events::ActorRestarted { actor, kind }).into_event(Topic::system())
            }
        };
        let mut batch = Batch::new();
        batch.event(event);
        if let Err(e) = ctx.store.commit(batch).await {
            // Diagnostics must never take the daemon down; the tracing log keeps the line.
            tracing::error!(error = %e, "could not record a diagnostics event");
        }
        Ok(())
    }
}
