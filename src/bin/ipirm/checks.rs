//! Checks of single flag values, run by clap as it parses (`value_parser`), and of outputs
//! against the store: a bad value is refused, naming the flag, before any work.
use std::path::{Path, PathBuf};

use ipirm::pipeline;

/// Checks `bench --channels`: 1 or 3, as the datasets store their images.
pub fn image_channels(s: &str) -> std::result::Result<i64, String> {
    match s {
        "1" | "3" => Ok(s.parse().expect("a digit")),
        _ => Err("expected 1 (grey) or 3 (RGB)".into()),
    }
}

/// Checks an `--out` folder of report and compare before any work: not a file.
pub fn output_folder(s: &str) -> std::result::Result<PathBuf, String> {
    let p = PathBuf::from(s);
    pipeline::check_output_dir(&p, "--out").map_err(|e| e.to_string())?;
    Ok(p)
}

/// Checks a `--name` (the store's rule for run names, [`ipirm::store::check_run_name`]).
pub fn run_name(name: &str) -> std::result::Result<String, String> {
    ipirm::store::check_run_name(name).map(|()| name.to_string())
}

/// Refuses an output (`flag`'s file or folder) inside a folder the store at `store_dir` manages
/// (`objects/`, `meta/`, `index/`, `tmp/`): the store would take its files for its own (gc
/// deletes them, opening the store moves them aside as damaged entries).
pub fn outside_store(store_dir: &Path, flag: &str, out: &Path) -> ipirm::Result<()> {
    if !ipirm::store::manages(store_dir, out) {
        return Ok(());
    }
    Err(ipirm::Error::config(
        flag,
        format!(
            "{} is inside a folder the store manages (gc would delete its files): choose another",
            out.display()
        ),
    ))
}
