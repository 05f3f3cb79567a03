//! How calls fan out over accounts: how many at once, how long one account may take, and
//! who hears about progress. Every account of a fan-out ends in exactly one result.

use crate::target::store::{AccountRef, TargetError};

/// How calls fan out over accounts: how many at once, how long one account may take, and
/// who hears about progress.
#[derive(Clone, Copy)]
pub struct FanOut<'a> {
    pub concurrency: usize,
    /// For all of one account's calls in one step (observe, apply, bootstrap), retries
    /// included.
    pub timeout: std::time::Duration,
    pub progress: &'a dyn Progress,
}

impl std::fmt::Debug for FanOut<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanOut")
            .field("concurrency", &self.concurrency)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl FanOut<'static> {
    /// 32 at once, 2 minutes per account, no progress output.
    pub fn quiet(concurrency: usize) -> FanOut<'static> {
        FanOut {
            concurrency,
            timeout: std::time::Duration::from_secs(120),
            progress: &NoProgress,
        }
    }
}

impl FanOut<'_> {
    /// Runs `step` for every item, `concurrency` at a time, each under the timeout, and
    /// returns the results in completion order. A step that times out is that account's
    /// [`TargetError::Timeout`]; the others go on.
    pub async fn run<I, T, F>(
        &self,
        what: &str,
        items: impl IntoIterator<Item = I>,
        account: impl Fn(&I) -> &AccountRef,
        step: impl Fn(I) -> F,
    ) -> Vec<(String, Result<T, TargetError>)>
    where
        F: Future<Output = Result<T, TargetError>>,
    {
        use futures::StreamExt as _;
        let items: Vec<I> = items.into_iter().collect();
        self.progress.start(what, items.len());
        let results = futures::stream::iter(items)
            .map(|item| {
                let name = account(&item).name.clone();
                let work = step(item);
                async move {
                    let r = match tokio::time::timeout(self.timeout, work).await {
                        Ok(r) => r,
                        Err(_) => Err(TargetError::Timeout {
                            account: name.clone(),
                            after: humantime::format_duration(self.timeout).to_string(),
                        }),
                    };
                    self.progress.done(&name, r.is_ok());
                    (name, r)
                }
            })
            .buffer_unordered(self.concurrency.max(1))
            .collect()
            .await;
        self.progress.finish();
        results
    }
}

/// Hears about a fan-out as it goes (a progress bar on a terminal, counters in CI).
pub trait Progress: Sync {
    fn start(&self, what: &str, total: usize);
    fn done(&self, account: &str, ok: bool);
    fn finish(&self);
}

/// Progress that goes nowhere.
#[derive(Debug, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: &str, _: usize) {}
    fn done(&self, _: &str, _: bool) {}
    fn finish(&self) {}
}
