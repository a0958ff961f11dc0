//! The signals that stop a gateway process: the first stops it gracefully, a second at once.

use tracing::{info, warn};

/// Resolves at the first `SIGTERM` or `SIGINT` (Ctrl-C; only Ctrl-C off Unix). From then on
/// another one ends the process at once, with exit status 130: an operator who does not
/// want to wait for the graceful stop does not have to.
pub(crate) async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (mut term, mut int) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => (term, int),
            (Err(error), _) | (_, Err(error)) => {
                warn!(%error, "cannot listen for SIGTERM/SIGINT; the gateway stops only when killed");
                return std::future::pending().await;
            }
        };
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!(
            signal = name,
            "stopping gracefully; a second signal stops at once"
        );
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            eprintln!("funcx-gateway: a second signal; stopping at once");
            std::process::exit(130);
        });
    }
    #[cfg(not(unix))]
    {
        if let Err(error) = tokio::signal::ctrl_c().await {
            warn!(%error, "cannot listen for Ctrl-C; the gateway stops only when killed");
            return std::future::pending().await;
        }
        info!("stopping gracefully; a second Ctrl-C stops at once");
        tokio::spawn(async {
            let _ = tokio::signal::ctrl_c().await;
            eprintln!("funcx-gateway: a second Ctrl-C; stopping at once");
            std::process::exit(130);
        });
    }
}
