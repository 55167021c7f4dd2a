//! systemd `Type=notify` support: `READY=1`, `STATUS=…`, `STOPPING=1` and
//! watchdog pings, sent as datagrams to `$NOTIFY_SOCKET`.
//!
//! The `sd-notify` crate formats the messages; the socket is ours because that
//! crate only reads `NOTIFY_SOCKET` from the process environment, and the
//! caller passes the value in here (tests point it at their own socket).

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::time::Duration;

use sd_notify::NotifyState;

use super::{Periodic, TelemetryError};

/// Sends notifications to the service manager; does nothing when the process
/// was not started with a notify socket.
#[derive(Debug, Clone)]
pub struct Notifier {
    addr: Option<SocketAddr>,
}

impl Notifier {
    /// From the value of `NOTIFY_SOCKET` (read by the caller): an absolute
    /// path, or `@name` for an abstract socket. `None` or empty disables.
    pub fn new(notify_socket: Option<&str>) -> Result<Notifier, TelemetryError> {
        let addr = match notify_socket {
            None | Some("") => None,
            Some(s) => Some(parse_socket(s)?),
        };
        Ok(Notifier { addr })
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier { addr: None }
    }

    pub fn is_enabled(&self) -> bool {
        self.addr.is_some()
    }

    /// Startup finished: the pools are Ready and the API accepts requests.
    pub fn notify_ready(&self) -> Result<(), TelemetryError> {
        self.notify(&[NotifyState::Ready])
    }

    /// One line for `systemctl status`. Newlines become spaces so the text
    /// cannot smuggle in other assignments such as `READY=1`.
    pub fn notify_status(&self, status: &str) -> Result<(), TelemetryError> {
        let one_line: String = status
            .chars()
            .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
            .collect();
        self.notify(&[NotifyState::Status(&one_line)])
    }

    /// Shutdown began (drain, then deregister).
    pub fn notify_stopping(&self) -> Result<(), TelemetryError> {
        self.notify(&[NotifyState::Stopping])
    }

    /// One watchdog keep-alive.
    pub fn notify_watchdog(&self) -> Result<(), TelemetryError> {
        self.notify(&[NotifyState::Watchdog])
    }

    /// Sends `states` in one datagram, one assignment per line.
    pub fn notify(&self, states: &[NotifyState<'_>]) -> Result<(), TelemetryError> {
        let Some(addr) = &self.addr else {
            return Ok(());
        };
        let msg = states
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        let sock = UnixDatagram::unbound().map_err(TelemetryError::Notify)?;
        let sent = sock
            .send_to_addr(msg.as_bytes(), addr)
            .map_err(TelemetryError::Notify)?;
        if sent != msg.len() {
            return Err(TelemetryError::Notify(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                "short write to the notify socket",
            )));
        }
        Ok(())
    }
}

fn parse_socket(s: &str) -> Result<SocketAddr, TelemetryError> {
    let bad = || TelemetryError::NotifySocket(s.to_string());
    if let Some(name) = s.strip_prefix('@') {
        SocketAddr::from_abstract_name(name.as_bytes()).map_err(|_| bad())
    } else if s.starts_with('/') {
        SocketAddr::from_pathname(Path::new(s)).map_err(|_| bad())
    } else {
        Err(bad())
    }
}

/// The watchdog timeout systemd asks for, from `WATCHDOG_USEC` and
/// `WATCHDOG_PID` (read by the caller). `None` when the watchdog is off or
/// meant for another process (`WATCHDOG_PID` names a different pid).
pub fn watchdog_timeout(
    watchdog_usec: Option<&str>,
    watchdog_pid: Option<&str>,
    own_pid: u32,
) -> Result<Option<Duration>, TelemetryError> {
    let Some(usec) = watchdog_usec.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    if let Some(pid) = watchdog_pid.map(str::trim).filter(|s| !s.is_empty()) {
        if pid.parse::<u32>().ok() != Some(own_pid) {
            return Ok(None);
        }
    }
    match usec.parse::<u64>() {
        Ok(n) if n > 0 => Ok(Some(Duration::from_micros(n))),
        _ => Err(TelemetryError::WatchdogUsec(usec.to_string())),
    }
}

/// How often to ping for a watchdog `timeout`: half of it, as systemd
/// recommends, so one late ping does not kill the service.
pub fn ping_period(timeout: Duration) -> Duration {
    timeout / 2
}

/// Pings `WATCHDOG=1` every half `timeout` on its own thread while `healthy()`
/// returns true; a stuck or unhealthy process stops pinging and systemd
/// restarts it. Stops on drop. A failed send is retried at the next period.
pub fn spawn_watchdog(
    notifier: Notifier,
    timeout: Duration,
    healthy: impl Fn() -> bool + Send + 'static,
) -> Result<Periodic, TelemetryError> {
    Periodic::spawn("sd-watchdog", ping_period(timeout), move || {
        if healthy() {
            if let Err(e) = notifier.notify_watchdog() {
                tracing::warn!(error = %e, "systemd watchdog ping failed");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// A socket the test owns, standing in for systemd.
    struct Listener {
        _dir: tempfile::TempDir,
        sock: UnixDatagram,
        path: String,
    }

    impl Listener {
        fn new() -> Listener {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("notify.sock");
            let sock = UnixDatagram::bind(&path).unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            Listener {
                path: path.to_str().unwrap().to_string(),
                _dir: dir,
                sock,
            }
        }

        fn recv(&self) -> String {
            let mut buf = [0u8; 4096];
            let n = self.sock.recv(&mut buf).expect("a datagram within 5 s");
            String::from_utf8(buf[..n].to_vec()).unwrap()
        }

        fn nothing_within(&self, d: Duration) -> bool {
            self.sock.set_read_timeout(Some(d)).unwrap();
            let mut buf = [0u8; 64];
            let none = self.sock.recv(&mut buf).is_err();
            self.sock
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            none
        }
    }

    #[test]
    fn sends_the_exact_datagrams() {
        let l = Listener::new();
        let n = Notifier::new(Some(&l.path)).unwrap();
        assert!(n.is_enabled());
        n.notify_status("loading pool-a").unwrap();
        assert_eq!(l.recv(), "STATUS=loading pool-a");
        n.notify_ready().unwrap();
        assert_eq!(l.recv(), "READY=1");
        n.notify_watchdog().unwrap();
        assert_eq!(l.recv(), "WATCHDOG=1");
        n.notify_stopping().unwrap();
        assert_eq!(l.recv(), "STOPPING=1");
        n.notify(&[NotifyState::Ready, NotifyState::Status("up")])
            .unwrap();
        assert_eq!(l.recv(), "READY=1\nSTATUS=up");
    }

    #[test]
    fn status_cannot_inject_other_assignments() {
        let l = Listener::new();
        let n = Notifier::new(Some(&l.path)).unwrap();
        n.notify_status("x\nREADY=1\r\n").unwrap();
        assert_eq!(l.recv(), "STATUS=x READY=1  ");
    }

    #[test]
    fn abstract_sockets_are_supported() {
        let name = format!(
            "llorchd-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        );
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Notifier::new(Some(&format!("@{name}")))
            .unwrap()
            .notify_ready()
            .unwrap();
        let mut buf = [0u8; 64];
        let n = sock.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn disabled_notifier_sends_nothing_and_succeeds() {
        for n in [
            Notifier::disabled(),
            Notifier::new(None).unwrap(),
            Notifier::new(Some("")).unwrap(),
        ] {
            assert!(!n.is_enabled());
            n.notify_ready().unwrap();
        }
    }

    #[test]
    fn bad_socket_values_are_errors() {
        for bad in ["relative/path", "notify.sock"] {
            let e = Notifier::new(Some(bad)).unwrap_err();
            assert!(matches!(e, TelemetryError::NotifySocket(_)), "{bad}: {e}");
        }
        let long = format!("/{}", "x".repeat(200));
        assert!(Notifier::new(Some(&long)).is_err());
        // A socket nobody listens on is a send error, not a panic.
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone.sock");
        let n = Notifier::new(Some(gone.to_str().unwrap())).unwrap();
        assert!(matches!(n.notify_ready(), Err(TelemetryError::Notify(_))));
    }

    #[test]
    fn watchdog_timeout_from_env_values() {
        let pid = 4242;
        assert_eq!(watchdog_timeout(None, None, pid).unwrap(), None);
        assert_eq!(
            watchdog_timeout(Some("30000000"), None, pid).unwrap(),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            watchdog_timeout(Some("2000000"), Some("4242"), pid).unwrap(),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            watchdog_timeout(Some("2000000"), Some("1"), pid).unwrap(),
            None
        );
        for bad in ["0", "-5", "abc", "1.5"] {
            assert!(watchdog_timeout(Some(bad), None, pid).is_err(), "{bad}");
        }
        assert_eq!(
            ping_period(Duration::from_secs(30)),
            Duration::from_secs(15)
        );
    }

    #[test]
    fn watchdog_pings_at_half_the_timeout_only_while_healthy() {
        let l = Listener::new();
        let healthy = Arc::new(AtomicBool::new(true));
        let h = healthy.clone();
        let n = Notifier::new(Some(&l.path)).unwrap();
        let started = std::time::Instant::now();
        let wd = spawn_watchdog(n, Duration::from_millis(100), move || {
            h.load(Ordering::SeqCst)
        })
        .unwrap();
        assert_eq!(l.recv(), "WATCHDOG=1");
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert_eq!(l.recv(), "WATCHDOG=1");
        healthy.store(false, Ordering::SeqCst);
        // Drain a ping that may have raced with the flag.
        let _ = l.nothing_within(Duration::from_millis(60));
        assert!(
            l.nothing_within(Duration::from_millis(200)),
            "pinged while unhealthy"
        );
        healthy.store(true, Ordering::SeqCst);
        assert_eq!(l.recv(), "WATCHDOG=1");
        drop(wd);
        let _ = l.nothing_within(Duration::from_millis(60));
        assert!(
            l.nothing_within(Duration::from_millis(200)),
            "pinged after stop"
        );
    }
}
