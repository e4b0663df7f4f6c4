//! The proxy's lifecycle: running, draining (readiness false, listeners closed, open
//! connections finishing), closed (the drain period is over; remaining connections end).

use std::sync::Arc;
use tokio::sync::watch;

/// Where the proxy is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Serving.
    Running,
    /// No new connections; open ones finish at their next quiet point.
    Draining,
    /// The drain period is over.
    Closed,
}

/// The shared lifecycle switch.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    tx: Arc<watch::Sender<Phase>>,
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
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        *self.tx.borrow()
    }

    /// Moves to `phase` if it is later than the current one.
    pub fn advance(&self, phase: Phase) {
        self.tx.send_if_modified(|p| {
            if phase > *p {
                *p = phase;
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
