//! A named thread that runs a closure at a fixed period until stopped.
//!
//! Used for the systemd watchdog and for the Prometheus recorder's upkeep.
//! Plain std threads keep these helpers independent of any async runtime;
//! the work they do is a syscall or a short lock, never blocking I/O.

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use super::TelemetryError;

/// Runs its task every `period` until [`Periodic::stop`] or drop.
#[derive(Debug)]
pub struct Periodic {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Periodic {
    /// Spawns a thread named `name` that calls `task` once per `period`, the
    /// first time after one period. Stopping wakes it at once.
    pub fn spawn(
        name: &'static str,
        period: Duration,
        mut task: impl FnMut() + Send + 'static,
    ) -> Result<Periodic, TelemetryError> {
        let (tx, rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || loop {
                match rx.recv_timeout(period) {
                    Err(RecvTimeoutError::Timeout) => task(),
                    // A stop message or a dropped sender both end the loop.
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                }
            })
            .map_err(|source| TelemetryError::Thread { name, source })?;
        Ok(Periodic {
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it to finish its current run.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Periodic {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn runs_repeatedly_and_stops_promptly() {
        let n = Arc::new(AtomicUsize::new(0));
        let n2 = n.clone();
        let p = Periodic::spawn("test-periodic", Duration::from_millis(5), move || {
            n2.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while n.load(Ordering::SeqCst) < 3 {
            assert!(Instant::now() < deadline, "task did not run 3 times in 5 s");
            std::thread::sleep(Duration::from_millis(2));
        }
        p.stop();
        let after = n.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(n.load(Ordering::SeqCst), after, "task ran after stop");
    }

    #[test]
    fn stop_does_not_wait_for_a_long_period() {
        let p = Periodic::spawn("test-periodic", Duration::from_secs(3600), || {}).unwrap();
        let t = Instant::now();
        drop(p);
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
