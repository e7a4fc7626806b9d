//! Progress bars for long work (hidden when stderr is not a terminal, so logs stay clean), and
//! a plain per-epoch line that is always printed.
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar over `len` items with a message slot for running figures (loss, images/s, …).
pub fn bar(len: u64, prefix: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr_with_hz(4));
    pb.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {elapsed_precise}<{eta_precise} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_prefix(prefix.to_string());
    pb
}

/// Prints a line above any active bar.
pub fn line(pb: &ProgressBar, msg: impl AsRef<str>) {
    pb.suspend(|| eprintln!("{}", msg.as_ref()));
}
