//! Stage 5, executing a plan: the rollout [`rollout::Executor`] writes bundles and pointers
//! wave by wave through a [`crate::target::Target`], waits for gateways to report healthy
//! ([`health`], the gate's pure decisions), and stops or rolls back on failure; its
//! [`report`] is what the CLI prints and the daemon serves.
//!
//! May import: config, plan, target, clock. Never the operations, the CLI or the daemon.

pub mod health;
pub mod report;
pub mod rollout;

/// A newer commit asking the running rollout to stop at its next safe point: before an
/// account's write starts (a write under way finishes, so no pointer is half-moved), or
/// while a wave verifies or bakes. The rollout then ends `preempted`; the accounts it moved
/// are the next plan's ([`crate::plan::Carried`]).
#[derive(Debug, Clone)]
pub struct Preempt(tokio::sync::watch::Receiver<Option<String>>);

impl Preempt {
    /// The sender names the newer commit; the receiver goes to the rollout.
    pub fn channel() -> (tokio::sync::watch::Sender<Option<String>>, Preempt) {
        let (tx, rx) = tokio::sync::watch::channel(None);
        (tx, Preempt(rx))
    }

    /// The commit that preempted the rollout, once one has.
    pub fn by(&self) -> Option<String> {
        self.0.borrow().clone()
    }

    /// Resolves when a commit preempts the rollout (never, if the sender is gone first).
    pub async fn wait(&self) -> String {
        let mut rx = self.0.clone();
        loop {
            if let Some(by) = rx.borrow_and_update().clone() {
                return by;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }
}

/// Who applies and when, recorded in every pointer written.
#[derive(Debug, Clone)]
pub struct Stamp {
    pub applied_by: String,
    /// RFC 3339, UTC.
    pub applied_at: String,
}
