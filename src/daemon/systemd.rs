//! Talking to systemd: readiness, the status line `systemctl status` shows, and the watchdog.
//!
//! Every call is a no-op outside systemd (no `NOTIFY_SOCKET`), so the daemon runs the same under a test harness.

use std::time::Duration;

use sd_notify::NotifyState;

/// Tells systemd the daemon is ready: only called once the socket is bound and MongoDB answered.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Sets the one-line status `systemctl status` shows.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// Says the daemon is stopping, so systemd does not mistake a slow clean shutdown for a hang.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Says the daemon is reloading its config; [`ready`] follows when it is done. systemd 253+ wants the monotonic
/// time alongside to match the reload to its request.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// Pets the watchdog.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often to pet the watchdog: half of `WatchdogSec=`, or never when the unit has none.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        log::debug!("sd_notify failed: {e}");
    }
}
