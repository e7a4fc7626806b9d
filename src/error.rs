//! The library's error type: every failure a user can cause names the file, field or flag at fault,
//! what was expected and what was found, in one paragraph, so the CLI can print it without a
//! backtrace.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A data or input file that is missing, truncated or malformed.
    #[error("{}: expected {expected}, found {found}", file.display())]
    File {
        file: PathBuf,
        expected: String,
        found: String,
    },
    /// A configuration key or value, a preset name or a command-line value.
    #[error("config `{key}`: {message}")]
    Config { key: String, message: String },
    /// An I/O failure on a named path. (The OS error is part of the message and deliberately not
    /// an error `source`, so a printed chain does not repeat it.)
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A loss, risk or score that is NaN or infinite: training diverged. Nothing non-finite is
    /// stored; `what` names the value, `at` where it happened (epoch, step).
    #[error("{what} is {value} at {at}: the run diverged and stops here, nothing of this stage was stored (lower the learning rate or raise the temperatures; `ipirm config` shows them)")]
    NonFinite {
        what: String,
        at: String,
        value: f64,
    },
    /// A tensor given to a function has the wrong shape, dtype or values.
    #[error("{0}")]
    Shape(String),
    /// The artifact store: its index, a record, a run, the lock on the index. The message names
    /// the store folder and the key or run.
    #[error("{0}")]
    Store(String),
    /// A stored blob that is missing or whose bytes no longer match its digest: the artifact is
    /// dropped from the index and recomputed by the next run that needs it.
    #[error("artifact {key}: blob {} is damaged: expected {expected}, found {found}; rerun the command to recompute it (`ipirm store verify` lists every damaged file)", file.display())]
    Damaged {
        key: String,
        file: PathBuf,
        expected: String,
        found: String,
    },
    /// Multi-process training: joining the group, a collective, a rank that failed.
    #[error("{0}")]
    Dist(String),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn file(
        file: impl Into<PathBuf>,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Self {
        Error::File {
            file: file.into(),
            expected: expected.into(),
            found: found.into(),
        }
    }
    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            message: message.into(),
        }
    }
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error: source,
        }
    }
}
