//! OTP-style supervision on top of ractor.
//!
//! ractor links children to a parent and reports their exits as
//! [`SupervisionEvent`](ractor::SupervisionEvent)s, but it never restarts anything by itself (and its
//! default `handle_supervisor_evt` stops the parent when any child exits).
//! This crate supplies the missing policy: restart strategies, restart
//! types, restart intensity with escalation, backoff and ordered shutdown.
//!
//! It comes in two layers:
//!
//! * [`Supervision`]: a plain struct that any actor can own in its state.
//!   Several Bosun actors are business actors *and* supervisors (a session
//!   supervises its turn actor and provider worker; the sessions supervisor
//!   adds and removes session children at run time), so supervision must be
//!   embeddable rather than a separate actor in the tree.
//! * [`Supervisor`]: a ready-made generic supervisor actor built on it, for
//!   places that only need to supervise.
//!
//! # Embedding contract
//!
//! An actor that embeds [`Supervision`] must:
//!
//! 1. start its children with [`Supervision::start_child`], passing its own
//!    cell as `supervisor`;
//! 2. override `handle_supervisor_evt` and feed **every** event to
//!    [`Supervision::handle_event`] (never fall back to ractor's default,
//!    which stops the actor);
//! 3. accept a message variant built from [`RestartChild`]
//!    (`impl From<RestartChild> for MyMsg`) and pass it to
//!    [`Supervision::handle_restart`];
//! 4. on [`Outcome::Escalate`] (or an `Err`), call
//!    [`Supervision::shutdown`] and then return `Err(..)` from the handler, so
//!    that *its* parent receives `SupervisionEvent::ActorFailed` and applies
//!    its own policy (OTP: "the supervisor terminates its children and
//!    itself; its parent decides"). Returning `Err` skips `post_stop`, which
//!    is why `shutdown` must be called first;
//! 5. call [`Supervision::shutdown`] from `post_stop`: ractor kills the
//!    children of an exiting actor without running their `post_stop`, so a
//!    graceful, ordered stop has to be done by hand.
//!
//! ```no_run
//! use bosun_supervision::{Outcome, RestartChild, Supervision, SupervisorConfig};
//! use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
//!
//! struct Session;
//! enum SessionMsg { Restart(RestartChild) /* , business messages… */ }
//! impl From<RestartChild> for SessionMsg {
//!     fn from(r: RestartChild) -> Self { SessionMsg::Restart(r) }
//! }
//! struct SessionState { children: Supervision }
//!
//! impl Actor for Session {
//!     type Msg = SessionMsg;
//!     type State = SessionState;
//!     type Arguments = ();
//!     async fn pre_start(&self, myself: ActorRef<SessionMsg>, _: ()) -> Result<SessionState, ActorProcessingErr> {
//!         let children = Supervision::new(SupervisorConfig::default());
//!         // children.start_child(turn_spec, &myself).await?; …
//!         Ok(SessionState { children })
//!     }
//!     async fn handle(&self, myself: ActorRef<SessionMsg>, msg: SessionMsg, st: &mut SessionState) -> Result<(), ActorProcessingErr> {
//!         match msg {
//!             SessionMsg::Restart(req) => {
//!                 if let Outcome::Escalate { reason } = st.children.handle_restart(req, &myself).await? {
//!                     st.children.shutdown().await;
//!                     return Err(reason.into());
//!                 }
//!             }
//!         }
//!         Ok(())
//!     }
//!     async fn handle_supervisor_evt(&self, myself: ActorRef<SessionMsg>, evt: SupervisionEvent, st: &mut SessionState) -> Result<(), ActorProcessingErr> {
//!         if let Outcome::Escalate { reason } = st.children.handle_event(&evt, &myself).await? {
//!             st.children.shutdown().await;
//!             return Err(reason.into());
//!         }
//!         Ok(())
//!     }
//!     async fn post_stop(&self, _: ActorRef<SessionMsg>, st: &mut SessionState) -> Result<(), ActorProcessingErr> {
//!         st.children.shutdown().await;
//!         Ok(())
//!     }
//! }
//! ```
//!
//! # Addressing children
//!
//! A restarted actor is a new [`ActorCell`](ractor::ActorCell) with a new mailbox, so nobody
//! should keep a child's cell. Each child's [`ChildSpec::id`] is its
//! registered ractor name; reach it with `ractor::registry::where_is(id)`
//! (or [`Supervision::child`] from inside the supervisor).

mod error;
mod spec;
mod supervision;
mod supervisor;

#[cfg(test)]
mod tests;

pub use error::SupervisionError;
pub use spec::{
    start_fn, Backoff, ChildSpec, Intensity, Restart, RestartHook, Shutdown, StartFn, Strategy, SupervisorConfig,
};
pub use supervision::{ChildInfo, Outcome, RestartChild, Supervision};
pub use supervisor::{Supervisor, SupervisorMsg};
