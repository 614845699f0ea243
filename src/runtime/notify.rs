//! systemd's notification protocol for `Type=notify` and `WatchdogSec=` (sd_notify(3)):
//! `READY=1` once the sockets are bound and the core has started, then `WATCHDOG=1` from the
//! main loop. Both do nothing unless the service manager set `NOTIFY_SOCKET` (and
//! `WATCHDOG_USEC`), so a daemon started by hand or by the tests behaves as before.

use crate::config::Config;
use sd_notify::NotifyState;
use std::time::{Duration, Instant};
use tracing::warn;

/// Tells the service manager the daemon is ready, with the addresses it serves as its status
/// line (`systemctl status hotline`); returns the watchdog to tick from the main loop.
pub fn ready(cfg: &Config) -> Watchdog {
    let status = format!(
        "SIP {} (UDP, TCP), HTTP {}",
        cfg.sip.listen, cfg.http.listen
    );
    if let Err(e) = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(&status)]) {
        warn!(error = %e, "cannot tell the service manager we are ready");
    }
    Watchdog {
        // Pinged at half the interval, as sd_watchdog_enabled(3) advises.
        every: sd_notify::watchdog_enabled().map(|d| d / 2),
        last: Instant::now(),
    }
}

/// Sends `WATCHDOG=1` at most once per half watchdog interval. Ticked on every pass of the main
/// loop, which the 5 ms media clock wakes even when idle: a loop that stalls (a blocked call
/// control, a busy loop) stops the pings and systemd restarts the daemon.
pub struct Watchdog {
    every: Option<Duration>,
    last: Instant,
}

impl Watchdog {
    pub fn tick(&mut self, now: Instant) {
        let Some(every) = self.every else { return };
        if now.saturating_duration_since(self.last) >= every {
            self.last = now;
            let _ = sd_notify::notify(&[NotifyState::Watchdog]);
        }
    }
}
