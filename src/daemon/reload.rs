//! Config changes that never cancel a backup. SIGHUP (`systemctl reload`) applies a new config to the next run while
//! the running one finishes with the config it started with; a config that does not parse is refused and the old one
//! keeps serving. What is bound once at startup (the control socket, its group, the metrics listener) cannot change
//! live, nor can the binary: when a reload finds either changed, the daemon restarts itself once no backup runs, by
//! exiting with [`EXIT_RESTART`], which the unit's `RestartForceExitStatus=` turns into a restart. SIGUSR2 asks for
//! the same when only systemd knows what changed (the unit, a `LoadCredential=` secret).

use tokio::sync::mpsc;

use super::{Exit, Shared, Signal, schedule_note, status_line, systemd};
use crate::config::Config;
use crate::error::Error;

/// Exit status asking systemd for a restart (EX_TEMPFAIL); the unit lists it in `SuccessExitStatus=` and
/// `RestartForceExitStatus=`, so it restarts without being counted as a failure.
pub const EXIT_RESTART: i32 = 75;

/// Re-reads the config file. Returns why the daemon must restart once idle, when the new config changes something
/// bound at startup; everything else in it is in force for the next backup.
pub(super) fn reload(shared: &Shared) -> Option<String> {
    systemd::reloading();
    let restart = match Config::load(&shared.config_path).map_err(Error::from) {
        Ok(config) => {
            let mut restart = restart_only_changes(&shared.runner.config(), &config);
            if binary_replaced() {
                restart.push("the binary");
            }
            let schedule = config.clone();
            match shared.runner.set_config(config) {
                Ok(()) => {
                    shared.set_schedule(&schedule);
                    log::info!("reloaded {} ({})", shared.config_path.display(), schedule_note(shared));
                    (!restart.is_empty()).then(|| format!("{} changed", restart.join(", ")))
                }
                Err(e) => {
                    log::error!("reload refused, keeping the running config: {e}");
                    None
                }
            }
        }
        Err(e) => {
            log::error!("reload refused, keeping the running config: {e}");
            None
        }
    };
    systemd::ready(&status_line(&shared.runner));
    restart
}

/// The settings of `new` that differ from `old` and only take effect in a new process: they are bound once, before
/// the daemon serves (see `serve`).
pub fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if old.daemon.socket != new.daemon.socket {
        changed.push("daemon.socket");
    }
    if old.daemon.socket_group != new.daemon.socket_group {
        changed.push("daemon.socket_group");
    }
    if old.metrics.listen != new.metrics.listen {
        changed.push("metrics.listen");
    }
    let pitr = |c: &Config| {
        let p = &c.pitr;
        (
            p.enabled,
            p.chunk_span,
            p.chunk_max_bytes,
            p.poll_interval,
            c.backup.include.clone(),
            c.backup.exclude.clone(),
        )
    };
    if pitr(old) != pitr(new) {
        changed.push("[pitr]");
    }
    // The coordinator keeps the member name, leases and store it started with: the other members know it by them.
    if old.cluster != new.cluster {
        changed.push("[cluster]");
    }
    if new.cluster.enabled && old.storage != new.storage {
        changed.push("[storage] (in replica-set mode)");
    }
    changed
}

/// Whether the executable this process runs was replaced on disk (a package upgrade renames the new file over the
/// old one, which Linux then shows as deleted), so only a new process runs the new code.
fn binary_replaced() -> bool {
    std::fs::read_link("/proc/self/exe").is_ok_and(|exe| exe.to_string_lossy().ends_with(" (deleted)"))
}

/// Logs that a restart waits for the running backup, if one runs; returns `why`.
pub(super) fn restart_pending(shared: &Shared, why: String) -> String {
    match shared.runner.running() {
        Some(running) => log::info!("{why}: restarting once backup {} finishes", running.id),
        None => log::info!("{why}: restarting now, no backup is running"),
    }
    why
}

/// Called once the daemon stopped accepting connections for a restart: a client accepted just before may still have
/// started a backup, which finishes rather than being cancelled. A shutdown signal meanwhile wins (the backup is then
/// cancelled as on any stop).
pub(super) async fn finish_then_restart(
    shared: &Shared,
    signals: &mut mpsc::UnboundedReceiver<Signal>,
    why: &str,
) -> Exit {
    while let Some(running) = shared.runner.running() {
        tokio::select! {
            _ = running.finished() => {}
            signal = signals.recv() => if matches!(signal, Some(Signal::Shutdown) | None) {
                return Exit::Stopped;
            },
        }
    }
    log::info!("restarting ({why})");
    Exit::Restart
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::parse(text).unwrap()
    }

    #[test]
    fn only_what_is_bound_at_startup_needs_a_restart() {
        let old = parse("");
        let live =
            parse("[backup]\ncompression = \"gzip\"\n[retention]\nkeep_last = 3\n[schedule]\ncron = \"0 * * * *\"\n");
        assert!(restart_only_changes(&old, &live).is_empty());
        let bound = parse(
            "[daemon]\nsocket = \"/run/x/control.sock\"\nsocket_group = \"ops\"\n\
             [metrics]\nlisten = \"127.0.0.1:9216\"\n",
        );
        assert_eq!(restart_only_changes(&old, &bound), ["daemon.socket", "daemon.socket_group", "metrics.listen"]);
        assert!(restart_only_changes(&bound, &bound.clone()).is_empty());
        let member = parse("[cluster]\nenabled = true\n");
        assert_eq!(restart_only_changes(&old, &member), ["[cluster]"]);
        let moved = parse("[cluster]\nenabled = true\n[storage]\npath = \"/elsewhere\"\n");
        assert_eq!(restart_only_changes(&member, &moved), ["[storage] (in replica-set mode)"]);
        assert!(restart_only_changes(&old, &parse("[storage]\npath = \"/elsewhere\"\n")).is_empty());
    }
}
