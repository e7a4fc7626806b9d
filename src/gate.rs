//! `ipirm report --check [EXPECTATIONS.toml]`: the reproduction as a gate.
//!
//! Every paper preset with a finished run is compared with the paper's linear top-1 (the mean of
//! its seeds, see [`crate::reproduction::compare`]), within 1.0 point unless the file sets another tolerance
//! for that preset; every `[[expect]]` entry of the file (a run name, a metric, a value and a
//! tolerance in points) likewise. A value outside its tolerance fails the check; so does an
//! `[[expect]]` row without a finished run (a run not made yet, or a misspelt name), while a paper
//! row without one is listed and fails only when every row is required.
//!
//! ```toml
//! [[expect]]
//! run = "fmnist-ipirm-quick"   # a run name: the mean of its finished runs (one per seed)
//! metric = "knn_top1"          # linear_top1 | knn_top1 | knn_top5
//! value = 76.0
//! tolerance = 1.0              # points either side
//!
//! [paper_tolerance]            # optional: points either side of a paper row, by preset
//! stl10-ipirm = 2.0
//! ```
use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{paper_of, PRESETS};
use crate::reproduction::compare::{self, METRICS};
use crate::store::Store;
use crate::{Error, Result};

/// The tolerance of a paper row no file changes, in points.
pub const PAPER_TOLERANCE: f64 = 1.0;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expectations {
    #[serde(default)]
    expect: Vec<Expectation>,
    #[serde(default)]
    paper_tolerance: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expectation {
    run: String,
    metric: String,
    value: f64,
    tolerance: f64,
}

/// One row of the check.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// "paper" or "expect".
    pub source: &'static str,
    pub run: String,
    pub metric: String,
    pub expected: f64,
    pub tolerance: f64,
    /// Our value (the mean over the name's seeds) and how many runs it is the mean of.
    pub ours: Option<(f64, usize)>,
    /// Why there is no value: no finished run, none with the metric, or (a paper row) runs on
    /// another dataset than the preset's.
    pub missing: Option<String>,
}

impl Row {
    /// Whether our value is within the tolerance (`None`: no value, see `missing`).
    pub fn passes(&self) -> Option<bool> {
        self.ours
            .map(|(v, _)| (v - self.expected).abs() <= self.tolerance + 1e-9)
    }

    /// Why there is no value, for the check's text.
    fn why_none(&self) -> String {
        self.missing.clone().unwrap_or_else(|| "no value".into())
    }

    /// Why a row without a value fails, if it does: an `[[expect]]` row always needs one (the
    /// file names the runs it expects), a paper row only when every row is required.
    fn missing_fails(&self, require_all: bool) -> Option<&'static str> {
        match (self.source, require_all) {
            ("expect", _) => Some("the expectations file names it"),
            (_, true) => Some("--require-all"),
            _ => None,
        }
    }
}

/// The whole check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub rows: Vec<Row>,
    pub require_all: bool,
}

impl Check {
    /// The rows that fail: outside their tolerance, or without a run when all are required.
    pub fn failures(&self) -> Vec<&Row> {
        self.rows
            .iter()
            .filter(|r| match r.passes() {
                Some(ok) => !ok,
                None => r.missing_fails(self.require_all).is_some(),
            })
            .collect()
    }

    /// The check as text: one line per row, then a verdict naming each failure.
    pub fn text(&self) -> String {
        let mut s = String::from("\n## Check\n\n");
        for r in &self.rows {
            let (verdict, ours) = match (r.passes(), r.ours) {
                (Some(true), Some((v, n))) => ("ok  ", format!("{v:.2} (n={n})")),
                (Some(false), Some((v, n))) => ("FAIL", format!("{v:.2} (n={n})")),
                _ if r.missing_fails(self.require_all).is_some() => ("FAIL", r.why_none()),
                _ => ("--  ", r.why_none()),
            };
            s += &format!(
                "{verdict} {} {} {}: ours {ours}, expected {:.2} ± {:.2}\n",
                r.source, r.run, r.metric, r.expected, r.tolerance
            );
        }
        let failures = self.failures();
        if failures.is_empty() {
            s += "\ncheck passed\n";
        } else {
            s += &format!(
                "\ncheck failed: {} of {} rows\n",
                failures.len(),
                self.rows.len()
            );
            for r in failures {
                s += &match r.ours {
                    Some((v, _)) => format!(
                        "- {} `{}` {}: ours {v:.2}, expected {:.2}, tolerance {:.2} (off by {:.2})\n",
                        r.source,
                        r.run,
                        r.metric,
                        r.expected,
                        r.tolerance,
                        (v - r.expected).abs()
                    ),
                    None => format!(
                        "- {} `{}` {}: {} ({})\n",
                        r.source,
                        r.run,
                        r.metric,
                        r.why_none(),
                        r.missing_fails(self.require_all).unwrap_or_default()
                    ),
                };
            }
        }
        s
    }
}

/// Reads `file` (if any) and checks the store against it and the paper.
pub fn check(store: &Store, file: Option<&Path>, require_all: bool) -> Result<Check> {
    let exp = match file {
        None => Expectations {
            expect: Vec::new(),
            paper_tolerance: BTreeMap::new(),
        },
        Some(path) => read(path)?,
    };
    let mut rows = Vec::new();
    for p in PRESETS {
        let Some(q) = p.paper else { continue };
        rows.push(Row {
            expected: q.linear_top1,
            tolerance: exp
                .paper_tolerance
                .get(p.name)
                .copied()
                .unwrap_or(PAPER_TOLERANCE),
            ..with_ours(store, p.name, "linear_top1", true)?
        });
    }
    for e in exp.expect {
        rows.push(Row {
            expected: e.value,
            tolerance: e.tolerance,
            ..with_ours(store, &e.run, &e.metric, false)?
        });
    }
    Ok(Check { rows, require_all })
}

/// A row of `metric` for the runs named `name` with our value, the mean over its finished runs
/// (one per seed), or why there is none; a `paper` row counts only runs on its preset's
/// dataset. (The caller sets the expected value and the tolerance.)
fn with_ours(store: &Store, name: &str, metric: &str, paper: bool) -> Result<Row> {
    let mut row = Row {
        source: if paper { "paper" } else { "expect" },
        run: name.into(),
        metric: metric.into(),
        expected: f64::NAN,
        tolerance: f64::NAN,
        ours: None,
        missing: None,
    };
    let finished = store
        .list_runs()?
        .iter()
        .any(|r| r.name == name && r.finished);
    if !finished {
        row.missing = Some("no finished run".into());
        return Ok(row);
    }
    let arm = compare::arm(store, name)?;
    if paper && paper_of(name, &arm.dataset).is_none() {
        row.missing = Some(format!(
            "its runs are on {}, not the paper's dataset",
            arm.dataset
        ));
        return Ok(row);
    }
    match arm.metrics.get(metric).copied().flatten() {
        Some(s) => row.ours = Some((s.mean, s.n)),
        None => row.missing = Some(format!("its finished runs have no {metric}")),
    }
    Ok(row)
}

fn read(path: &Path) -> Result<Expectations> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let form = "an expectations file: [[expect]] entries with run, metric (linear_top1, knn_top1 or knn_top5), value and tolerance, and an optional [paper_tolerance] table";
    let exp: Expectations =
        toml::from_str(&text).map_err(|e| Error::file(path, form, e.to_string()))?;
    for (i, e) in exp.expect.iter().enumerate() {
        if !METRICS.contains(&e.metric.as_str()) {
            return Err(Error::file(
                path,
                format!("[[expect]] entry {} with metric one of {METRICS:?}", i + 1),
                format!("metric `{}`", e.metric),
            ));
        }
        if !e.value.is_finite() || !e.tolerance.is_finite() || e.tolerance < 0.0 {
            return Err(Error::file(
                path,
                format!(
                    "[[expect]] entry {} with a finite value and a tolerance ≥ 0",
                    i + 1
                ),
                format!("value {} tolerance {}", e.value, e.tolerance),
            ));
        }
    }
    for (preset, t) in &exp.paper_tolerance {
        if !PRESETS
            .iter()
            .any(|p| p.name == preset && p.paper.is_some())
        {
            return Err(Error::file(
                path,
                "[paper_tolerance] keys that are paper presets (`ipirm presets` marks them)",
                format!("`{preset}`"),
            ));
        }
        if !t.is_finite() || *t < 0.0 {
            return Err(Error::file(
                path,
                format!("[paper_tolerance] {preset} ≥ 0"),
                t.to_string(),
            ));
        }
    }
    Ok(exp)
}
