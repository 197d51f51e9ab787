//! OTP-style supervision on top of ractor.
//!
//! ractor links children to a parent and reports their exits as
//! [`SupervisionEvent`]s, but it never restarts anything by itself (and its
//! default `handle_supervisor_evt` stops the parent when any child exits).
//! This crate supplies the missing policy: restart strategies, restart
//! types, restart intensity with escalation, backoff and ordered shutdown.
//!
//! It comes in three parts:
//!
//! * [`Supervision`]: a plain struct that any actor can own in its state.
//!   Several Bosun actors are business actors *and* supervisors (a session
//!   supervises its turn actor and provider worker; the sessions supervisor
//!   adds and removes session children at run time), so supervision must be
//!   embeddable rather than a separate actor in the tree.
//! * [`Supervises`]: the trait such an actor implements, so that it follows
//!   the embedding contract below by forwarding hooks, not by hand.
//! * [`Supervisor`]: a ready-made generic supervisor actor built on both,
//!   for places that only need to supervise.
//!
//! # Embedding contract
//!
//! An actor that supervises through a [`Supervision`] of its own:
//!
//! 1. implements [`Supervises`], which needs a message variant built from
//!    [`RestartChild`] (`impl From<RestartChild> for MyMsg`): the supervisor
//!    sends it to itself when a backoff delay is over;
//! 2. forwards three of ractor's hooks, each in one line:
//!
//!    | ractor hook | forward to | why |
//!    |---|---|---|
//!    | `handle_supervisor_evt` | [`Supervises::supervise_event`] | every event; ractor's default would stop the actor |
//!    | the `RestartChild` arm of `handle` | [`Supervises::supervise_restart`] | a delayed restart is due |
//!    | `post_stop` | [`Supervises::stop_children`] | ractor kills the children of an exiting actor without running their `post_stop`, so an ordered stop is done by hand |
//!
//!    The first two handle escalation: when the restart intensity is
//!    exceeded they stop the children, then return `Err`, so that the actor
//!    fails and *its* parent receives `SupervisionEvent::ActorFailed` and
//!    applies its own policy (OTP: "the supervisor terminates its children
//!    and itself; its parent decides"). The children are stopped first
//!    because failing skips `post_stop`;
//! 3. starts its children with [`Supervision::start_child`], passing its own
//!    cell as `supervisor` (that links them to it; the trait cannot check
//!    it). If `pre_start` fails after starting some, it calls
//!    [`Supervision::shutdown`] before returning the error: ractor runs no
//!    `post_stop` for an actor that never started.
//!
//! To react to an outcome (a child was restarted, say), override
//! [`Supervises::on_outcome`]; to name the supervisor in the error its
//! parent sees, [`Supervises::escalation_error`].
//!
//! ```no_run
//! use bosun_supervision::{RestartChild, Supervises, Supervision, SupervisorConfig};
//! use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
//!
//! struct Session;
//! enum SessionMsg { Restart(RestartChild) /* , business messages… */ }
//! impl From<RestartChild> for SessionMsg {
//!     fn from(r: RestartChild) -> Self { SessionMsg::Restart(r) }
//! }
//! struct SessionState { children: Supervision }
//!
//! impl Supervises for Session {
//!     fn supervision(st: &mut SessionState) -> &mut Supervision { &mut st.children }
//! }
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
//!             SessionMsg::Restart(req) => Self::supervise_restart(&myself, req, st).await?,
//!         }
//!         Ok(())
//!     }
//!     async fn handle_supervisor_evt(&self, myself: ActorRef<SessionMsg>, evt: SupervisionEvent, st: &mut SessionState) -> Result<(), ActorProcessingErr> {
//!         Self::supervise_event(&myself, evt, st).await
//!     }
//!     async fn post_stop(&self, _: ActorRef<SessionMsg>, st: &mut SessionState) -> Result<(), ActorProcessingErr> {
//!         Self::stop_children(st).await
//!     }
//! }
//! ```
//!
//! # Addressing children
//!
//! A restarted actor is a new [`ActorCell`] with a new mailbox, so nobody
//! should keep a child's cell. Each child's [`ChildSpec::id`] is its
//! registered ractor name; reach it with `ractor::registry::where_is(id)`
//! (or [`Supervision::child`] from inside the supervisor).
//!
//! [`SupervisionEvent`]: ractor::SupervisionEvent
//! [`ActorCell`]: ractor::ActorCell

mod error;
mod spec;
mod supervises;
mod supervision;
mod supervisor;

#[cfg(test)]
mod tests;

pub use error::SupervisionError;
pub use spec::{
    start_fn, Backoff, ChildSpec, Intensity, Restart, RestartHook, Shutdown, StartFn, Strategy, SupervisorConfig,
};
pub use supervises::Supervises;
pub use supervision::{ChildInfo, Outcome, RestartChild, Supervision};
pub use supervisor::{Supervisor, SupervisorMsg};
