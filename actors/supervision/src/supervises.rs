//! [`Supervises`]: the embedding contract as a trait, so that an actor which
//! supervises through a [`Supervision`] of its own follows it by forwarding
//! three hooks instead of re-implementing the rules by hand.

use std::future::Future;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::error::SupervisionError;
use crate::supervision::{Outcome, RestartChild, Supervision};

/// An actor that supervises its children through a [`Supervision`] kept in
/// its state (see the crate docs for the whole contract).
///
/// Implement [`supervision`](Self::supervision), then forward three of
/// ractor's hooks, each in one line:
///
/// * `handle_supervisor_evt` → [`supervise_event`](Self::supervise_event);
/// * the handler's arm for the `RestartChild` variant →
///   [`supervise_restart`](Self::supervise_restart);
/// * `post_stop` → [`stop_children`](Self::stop_children).
///
/// `Self::Msg: From<RestartChild>` is required because the supervisor
/// schedules a delayed restart by sending that message to itself.
///
/// The three provided functions are the contract; they are not meant to be
/// overridden. [`escalation_error`](Self::escalation_error) and
/// [`on_outcome`](Self::on_outcome) are the points to customise.
pub trait Supervises: Actor
where
    Self::Msg: From<RestartChild>,
{
    /// Where the actor keeps its [`Supervision`].
    fn supervision(state: &mut Self::State) -> &mut Supervision;

    /// The error the actor fails with when it escalates, from the reason the
    /// supervision gives. Its parent sees it in `ActorFailed` and its logs.
    /// Override to say which supervisor gave up (a session's id, say).
    fn escalation_error(state: &Self::State, reason: &str) -> ActorProcessingErr {
        let _ = state;
        reason.into()
    }

    /// Called with every outcome that does not escalate, from both
    /// [`supervise_event`](Self::supervise_event) and
    /// [`supervise_restart`](Self::supervise_restart): the place to react to
    /// a restart (tell a sibling that the child it used was replaced, say),
    /// so that neither path can forget it. Runs inside the actor's handler:
    /// keep it quick and non-blocking. Does nothing by default.
    fn on_outcome(state: &mut Self::State, outcome: &Outcome) {
        let _ = (state, outcome);
    }

    /// Forward **every** event of `handle_supervisor_evt` here, and return
    /// what it returns. Never fall back to ractor's default, which stops the
    /// actor when any child exits.
    ///
    /// Exits of children are handled per the [`Supervision`]'s policy. If the
    /// restart intensity is exceeded, the children are stopped in order and
    /// the result is `Err`, which fails the actor, so that *its* parent gets
    /// `ActorFailed` and applies its own policy (OTP: "the supervisor
    /// terminates its children and itself; its parent decides"). The
    /// children are stopped first because failing skips `post_stop`.
    fn supervise_event<'a>(
        myself: &'a ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &'a mut Self::State,
    ) -> impl Future<Output = Result<(), ActorProcessingErr>> + Send + 'a {
        async move {
            // The event is not `Sync`: borrow it only to start the handling,
            // not across the await, so that this future stays `Send`.
            let handling = Self::supervision(state).handle_event(&event, myself);
            let outcome = handling.await;
            settle::<Self>(state, outcome).await
        }
    }

    /// Forward a [`RestartChild`] message (a backoff delay is over) here,
    /// and return its error with `?`. Escalates like
    /// [`supervise_event`](Self::supervise_event): a restart that keeps
    /// failing counts toward the intensity too.
    fn supervise_restart<'a>(
        myself: &'a ActorRef<Self::Msg>,
        request: RestartChild,
        state: &'a mut Self::State,
    ) -> impl Future<Output = Result<(), ActorProcessingErr>> + Send + 'a {
        async move {
            let outcome = Self::supervision(state).handle_restart(request, myself).await;
            settle::<Self>(state, outcome).await
        }
    }

    /// Call from `post_stop` (its result is `post_stop`'s): stops the
    /// children in reverse start order, each asked first and killed after its
    /// timeout. Why by hand: ractor kills the children of an exiting actor
    /// without running their `post_stop`.
    fn stop_children(state: &mut Self::State) -> impl Future<Output = Result<(), ActorProcessingErr>> + Send + '_ {
        async move {
            Self::supervision(state).shutdown().await;
            Ok(())
        }
    }
}

/// What both forwarding functions do with an outcome: escalation (or an
/// error of the supervision, handled the same way) stops the children, then
/// fails the actor; anything else goes to [`Supervises::on_outcome`].
async fn settle<A>(state: &mut A::State, outcome: Result<Outcome, SupervisionError>) -> Result<(), ActorProcessingErr>
where
    A: Supervises,
    A::Msg: From<RestartChild>,
{
    let reason = match outcome {
        Ok(Outcome::Escalate { reason }) => reason,
        Ok(outcome) => {
            A::on_outcome(state, &outcome);
            return Ok(());
        }
        Err(err) => err.to_string(),
    };
    A::supervision(state).shutdown().await;
    Err(A::escalation_error(state, &reason))
}
