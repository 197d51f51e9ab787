//! Handlers that run on the heap.
//!
//! ractor runs each actor as one tokio task whose future holds, inline, the
//! largest of the actor's handler futures (`pre_start`, `handle`, …),
//! whether or not one is running. An idle session costs its three actors'
//! tasks, so a handler that grows (a file commit, a typed event held across
//! an await) would grow every idle session with it: 10,000 sessions is the
//! case the memory benchmark measures. A handler body passed through
//! [`on_heap`] lives in its own allocation, made when a message arrives and
//! freed when it is handled, so the task stays a few hundred bytes whatever
//! the handlers hold. One allocation per message is noise beside the store
//! commit most messages make.

use ractor::ActorProcessingErr;
use std::future::Future;
use std::pin::Pin;

/// `handler`, boxed (see the module doc). Not an `async fn`: that would keep
/// `handler` inline in its own future until first polled, which is the very
/// thing to avoid. Fixing the error type here also lets `?` inside an
/// `async move` block infer it.
pub fn on_heap<T, F>(handler: F) -> Pin<Box<F>>
where
    F: Future<Output = Result<T, ActorProcessingErr>>,
{
    Box::pin(handler)
}
