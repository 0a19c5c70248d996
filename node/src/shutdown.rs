//! The node-wide shutdown signal: a `watch` channel that turns `true` once.
//!
//! Every long-running task (event loop, control server, services) selects on [`signalled`];
//! the daemon flips the flag on SIGINT/SIGTERM or a control `Shutdown` request.

use tokio::sync::watch;

/// Sender side: set to `true` to stop the node.
pub type Trigger = watch::Sender<bool>;
/// Receiver side, cloned into each task.
pub type Signal = watch::Receiver<bool>;

/// A new trigger and its signal, not yet fired.
pub fn channel() -> (Trigger, Signal) {
    watch::channel(false)
}

/// Resolves once the flag is `true` (or the trigger is gone, which also means stop).
pub async fn signalled(rx: &mut Signal) {
    // The borrow guard returned by `wait_for` is not `Send`; it is dropped right here so the
    // futures that select on this stay `Send`.
    let _ = rx.wait_for(|&stop| stop).await.map(|_| ());
}
