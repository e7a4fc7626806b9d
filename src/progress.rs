//! Progress of long work: a bar on a terminal; where stderr goes to a log instead (a file, a
//! pipe, a batch system), a plain line every [`LOG_EVERY`] with the position, elapsed time, time
//! left and the running figures, so a log never sits silent through a long epoch.
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a progress line is written when stderr is not a terminal (`IPIRM_LOG_EVERY`
/// seconds overrides it).
pub const LOG_EVERY: Duration = Duration::from_secs(60);

/// The seconds between progress lines in a log: `IPIRM_LOG_EVERY` if set (a number from 0 to
/// 1e9; the CLI refuses anything else before it starts), else [`LOG_EVERY`].
pub fn log_every() -> crate::Result<Duration> {
    let Ok(text) = std::env::var("IPIRM_LOG_EVERY") else {
        return Ok(LOG_EVERY);
    };
    (text.trim().parse::<f64>().ok())
        .filter(|s| (0.0..=1e9).contains(s))
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            crate::Error::config(
                "IPIRM_LOG_EVERY",
                format!("expected the seconds between progress lines in a log, a number from 0 to 1e9, found `{text}`"),
            )
        })
}

/// A bar over a known number of items, with a message slot for running figures.
pub struct Progress {
    bar: ProgressBar,
    /// `Some` when writing lines to a log instead of drawing.
    log: Option<Mutex<LogState>>,
}

struct LogState {
    every: Duration,
    last: Instant,
    message: String,
}

static QUIET: AtomicBool = AtomicBool::new(false);

/// No bars and no progress lines from now on in this process (the worker ranks of a
/// multi-process run: rank 0 reports).
pub fn set_quiet() {
    QUIET.store(true, Ordering::Relaxed);
}

/// A bar over `len` items named `prefix` (e.g. `epoch 3/400`).
pub fn bar(len: u64, prefix: &str) -> Progress {
    let quiet = QUIET.load(Ordering::Relaxed);
    let terminal = std::io::stderr().is_terminal() && !quiet;
    let target = if terminal {
        ProgressDrawTarget::stderr_with_hz(4)
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(len), target);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>12} [{bar:30}] {pos}/{len} {elapsed_precise}<{eta_precise} {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(prefix.to_string());
    let every = log_every().unwrap_or(LOG_EVERY);
    let log = (!terminal && !quiet).then(|| {
        Mutex::new(LogState {
            every,
            last: Instant::now(),
            message: String::new(),
        })
    });
    Progress { bar, log }
}

impl Progress {
    /// Advances by `n` items; in a log, writes a line when [`LOG_EVERY`] has passed since the
    /// last one.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
        if let Some(log) = &self.log {
            let mut st = log.lock().unwrap_or_else(|p| p.into_inner());
            if st.last.elapsed() >= st.every {
                st.last = Instant::now();
                eprintln!("{}", self.log_line(&st.message));
            }
        }
    }

    /// The running figures shown after the position (loss, images/s, …).
    pub fn set_message(&self, msg: impl Into<String>) {
        let msg = msg.into();
        match &self.log {
            Some(log) => log.lock().unwrap_or_else(|p| p.into_inner()).message = msg,
            None => self.bar.set_message(msg),
        }
    }

    /// Removes the bar (a log gets no closing line: the caller prints its summary).
    pub fn finish_and_clear(&self) {
        self.bar.finish_and_clear();
    }

    /// Prints a line above the bar.
    pub fn println(&self, msg: impl AsRef<str>) {
        self.bar.suspend(|| eprintln!("{}", msg.as_ref()));
    }

    fn log_line(&self, message: &str) -> String {
        let (pos, len) = (self.bar.position(), self.bar.length().unwrap_or(0));
        let left = if pos > 0 {
            format!(", ~{} left", clock(self.bar.eta()))
        } else {
            String::new()
        };
        let sep = if message.is_empty() { "" } else { ", " };
        format!(
            "{}: {pos}/{len}, {} elapsed{left}{sep}{message}",
            self.bar.prefix(),
            clock(self.bar.elapsed())
        )
    }
}

/// `1h02m03s`, `4m05s`, `6s`.
fn clock(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, s) => format!("{h}h{m:02}m{s:02}s"),
    }
}

/// Prints a line above any active bar (kept for callers that hold a [`Progress`]).
pub fn line(pb: &Progress, msg: impl AsRef<str>) {
    pb.println(msg);
}

/// `n` with its noun, singular for one: `1 epoch`, `15 epochs` (`noun` is the singular; the
/// plural adds an `s`).
pub fn count(n: impl Into<u64>, noun: &str) -> String {
    match n.into() {
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_say_one_in_the_singular() {
        assert_eq!(super::count(1u64, "epoch"), "1 epoch");
        assert_eq!(super::count(0u64, "epoch"), "0 epochs");
        assert_eq!(super::count(15u64, "epoch"), "15 epochs");
    }
}
