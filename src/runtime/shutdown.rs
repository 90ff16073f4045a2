//! Graceful shutdown: signals in, a drain inside each worker.
//!
//! SIGTERM/SIGINT set the shared shutdown flag ([`crate::state::shared::Shared`]); each
//! worker's housekeeping tick sees it, fires its [`Latch`](crate::state::latch::Latch), which stops its accept loops and
//! wakes connections idle between requests so they close. Requests in flight finish (their
//! responses carry `Connection: close`) and WebSocket tunnels go on until `drain_timeout`;
//! then tunnels are closed (the worker's `drain_expired` latch, one tick before it exits) and
//! the worker exits. A second signal exits at once.

/// SIGTERM/SIGINT (shutdown) and SIGHUP (reload), registered before anything is bound so that a
/// signal arriving during start-up is queued for [`watch`] rather than killing the process.
pub fn register() -> std::io::Result<signal_hook::iterator::Signals> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
}

/// Handles registered signals on a dedicated thread for the life of the process.
pub fn watch(
    mut signals: signal_hook::iterator::Signals,
    shared: std::sync::Arc<crate::state::shared::Shared>,
    on_reload: impl Fn() + Send + 'static,
) -> std::io::Result<()> {
    use signal_hook::consts::SIGHUP;
    std::thread::Builder::new()
        .name("dispatch-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig == SIGHUP {
                    on_reload();
                    continue;
                }
                if shared.shutting_down() {
                    crate::warn!("second shutdown signal: exiting now");
                    std::process::exit(1);
                }
                crate::info!("shutdown signal received: draining");
                shared.begin_shutdown();
            }
        })?;
    Ok(())
}
