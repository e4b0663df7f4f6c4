//! The proxy's lifecycle: running, draining (readiness false, listeners closed, open
//! connections finishing), closed (the drain period is over; remaining connections end).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use tokio::sync::watch;

/// Where the proxy is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Phase {
    /// Serving.
    Running = 0,
    /// No new connections; open ones finish at their next quiet point.
    Draining,
    /// The drain period is over.
    Closed,
}

/// The shared lifecycle switch.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    tx: Arc<watch::Sender<Phase>>,
    /// The phase, readable without a lock from the data path.
    now: Arc<AtomicU8>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

impl Lifecycle {
    /// A running lifecycle.
    pub fn new() -> Self {
        Self {
            tx: Arc::new(watch::channel(Phase::Running).0),
            now: Arc::new(AtomicU8::new(Phase::Running as u8)),
        }
    }

    /// The current phase (one atomic load).
    pub fn phase(&self) -> Phase {
        match self.now.load(Ordering::Acquire) {
            0 => Phase::Running,
            1 => Phase::Draining,
            _ => Phase::Closed,
        }
    }

    /// Moves to `phase` if it is later than the current one.
    pub fn advance(&self, phase: Phase) {
        self.tx.send_if_modified(|p| {
            if phase > *p {
                *p = phase;
                self.now.store(phase as u8, Ordering::Release);
                true
            } else {
                false
            }
        });
    }

    /// Waits until the phase is at least `phase`.
    pub async fn reached(&self, phase: Phase) {
        let mut rx = self.tx.subscribe();
        // The sender lives as long as `self`, so `wait_for` only ends when reached.
        let _ = rx.wait_for(|p| *p >= phase).await;
    }
}
