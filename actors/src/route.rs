//! Reaching an actor by name, tolerating the short gap while it restarts.

use crate::error::{DaemonError, DaemonResult};
use ractor::rpc::CallResult;
use ractor::{ActorRef, Message, RpcReplyPort};
use std::time::{Duration, Instant};

/// How long a caller waits for a restarting actor to reappear under its name.
pub const LOOKUP_GRACE: Duration = Duration::from_secs(3);
/// How long a call waits for an answer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The actor registered under `name`, waiting up to `grace` for it to appear.
pub async fn lookup<M: Message>(name: &str, grace: Duration) -> Option<ActorRef<M>> {
    let deadline = Instant::now() + grace;
    loop {
        if let Some(cell) = ractor::registry::where_is(name) {
            return Some(cell.into());
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The actor under `name` now, without waiting.
pub fn lookup_now<M: Message>(name: &str) -> Option<ActorRef<M>> {
    ractor::registry::where_is(name).map(Into::into)
}

/// Calls the actor under `name` and waits for its answer.
pub async fn call<M, R, F>(name: &str, build: F) -> DaemonResult<R>
where
    M: Message,
    R: Send + 'static,
    F: FnOnce(RpcReplyPort<R>) -> M,
{
    call_within(name, CALL_TIMEOUT, build).await
}

/// [`call`] for a request known to take long (a clone), waiting up to `timeout`.
pub async fn call_within<M, R, F>(name: &str, timeout: Duration, build: F) -> DaemonResult<R>
where
    M: Message,
    R: Send + 'static,
    F: FnOnce(RpcReplyPort<R>) -> M,
{
    let actor: ActorRef<M> = lookup(name, LOOKUP_GRACE)
        .await
        .ok_or_else(|| DaemonError::Unavailable(format!("{name} is not running; retry shortly")))?;
    match actor.call(build, Some(timeout)).await {
        Ok(CallResult::Success(r)) => Ok(r),
        Ok(CallResult::Timeout) => Err(DaemonError::Unavailable(format!("{name} did not answer in time"))),
        Ok(CallResult::SenderError) | Err(_) => {
            Err(DaemonError::Unavailable(format!("{name} stopped before answering; retry shortly")))
        }
    }
}

/// Sends to the actor under `name` if it is there; false if not.
pub fn send<M: Message>(name: &str, msg: M) -> bool {
    match lookup_now::<M>(name) {
        Some(actor) => actor.send_message(msg).is_ok(),
        None => false,
    }
}
