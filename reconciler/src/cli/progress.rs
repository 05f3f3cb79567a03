//! How a fan-out over accounts shows itself: a progress bar on a terminal, a few plain
//! counter lines in CI and logs (every 10%, never more than one every two seconds).

use std::io::{IsTerminal as _, Write as _};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::target::Progress;

/// Progress on standard error.
#[derive(Debug)]
pub struct StderrProgress {
    bar: Option<ProgressBar>,
    state: Mutex<Counters>,
    done: AtomicUsize,
    failed: AtomicUsize,
}

#[derive(Debug)]
struct Counters {
    what: String,
    total: usize,
    started: Instant,
    last_line: Instant,
    last_tenth: usize,
}

impl StderrProgress {
    /// A bar when standard error is a terminal and `CI` is not set; counters otherwise.
    pub fn new() -> StderrProgress {
        let interactive = std::io::stderr().is_terminal()
            && std::env::var_os("CI").is_none_or(|v| v.is_empty() || v == "false");
        let bar = interactive.then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg:>9} [{bar:32}] {pos}/{len} accounts {elapsed_precise} (eta {eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar
        });
        let now = Instant::now();
        StderrProgress {
            bar,
            state: Mutex::new(Counters {
                what: String::new(),
                total: 0,
                started: now,
                last_line: now,
                last_tenth: 0,
            }),
            done: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
        }
    }

    fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Default for StderrProgress {
    fn default() -> Self {
        StderrProgress::new()
    }
}

impl Progress for StderrProgress {
    fn start(&self, what: &str, total: usize) {
        self.done.store(0, Ordering::Relaxed);
        self.failed.store(0, Ordering::Relaxed);
        let now = Instant::now();
        *self.counters() = Counters {
            what: what.to_string(),
            total,
            started: now,
            last_line: now,
            last_tenth: 0,
        };
        if let Some(bar) = &self.bar {
            bar.reset();
            bar.set_length(total as u64);
            bar.set_message(what.to_string());
        }
    }

    fn done(&self, _account: &str, ok: bool) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        if !ok {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(bar) = &self.bar {
            bar.inc(1);
            return;
        }
        let mut c = self.counters();
        let tenth = (done * 10).checked_div(c.total).unwrap_or(10);
        let now = Instant::now();
        if tenth > c.last_tenth
            && done < c.total
            && now.duration_since(c.last_line) >= Duration::from_secs(2)
        {
            c.last_tenth = tenth;
            c.last_line = now;
            let _ = writeln!(
                std::io::stderr(),
                "{}: {done}/{} accounts, {} failed, {:.1}s",
                c.what,
                c.total,
                self.failed.load(Ordering::Relaxed),
                now.duration_since(c.started).as_secs_f64()
            );
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        let c = self.counters();
        if c.total == 0 {
            return;
        }
        let _ = writeln!(
            std::io::stderr(),
            "{}: {}/{} accounts, {} failed, {:.1}s",
            c.what,
            self.done.load(Ordering::Relaxed),
            c.total,
            self.failed.load(Ordering::Relaxed),
            c.started.elapsed().as_secs_f64()
        );
    }
}
