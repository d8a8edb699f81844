//! `serve`: the daemon systemd runs (`Type=notify`); SIGTERM stops it cleanly, SIGHUP reloads the config, SIGUSR2
//! restarts it once no backup runs.

use std::path::Path;

use mongo_backup_agent::config::Config;
use mongo_backup_agent::daemon::{self, Exit, Signal};
use mongo_backup_agent::error::{EXIT_OK, Error, Result};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

pub async fn run(config_path: &Path) -> Result<i32> {
    let config = Config::load(config_path)?;
    let (listener, access) = daemon::bind(&config.daemon.socket, &config.daemon.socket_group)
        .await
        .map_err(|e| Error::Refused(e.to_string()))?;
    let version = daemon::wait_for_mongodb(&config).await?;
    log::info!(
        "MongoDB {version} answers; storing to {}",
        mongo_backup_agent::store::open(&config.storage)?.describe()
    );
    let signals = forward_signals().map_err(|e| Error::Refused(format!("cannot install signal handlers: {e}")))?;
    Ok(match daemon::run(config_path.to_path_buf(), config, listener, access, signals).await? {
        Exit::Stopped => EXIT_OK,
        Exit::Restart => daemon::EXIT_RESTART,
    })
}

/// Turns SIGTERM/SIGINT into [`Signal::Shutdown`], SIGHUP into [`Signal::Reload`] and SIGUSR2 into
/// [`Signal::Restart`].
fn forward_signals() -> std::io::Result<mpsc::UnboundedReceiver<Signal>> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    tokio::spawn(async move {
        loop {
            let sent = tokio::select! {
                _ = term.recv() => tx.send(Signal::Shutdown),
                _ = int.recv() => tx.send(Signal::Shutdown),
                _ = hup.recv() => tx.send(Signal::Reload),
                _ = usr2.recv() => tx.send(Signal::Restart),
            };
            if sent.is_err() {
                break;
            }
        }
    });
    Ok(rx)
}
