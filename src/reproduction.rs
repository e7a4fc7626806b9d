//! The reproduction beside the paper: `ipirm report`.
//!
//! For every preset with a published number ([`crate::config::Paper`]), the latest run of that
//! preset in the store: our linear top-1 beside the paper's and the difference, kNN top-1/top-5,
//! epochs done of planned (an unfinished run shows its progress and latest kNN monitor), device
//! and run id; a preset without a run says so. Then every other run with its reference points
//! (raw pixels, the encoder at initialisation). Everything is read from the store's records and
//! partitions; nothing is computed again and no data is read.
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{Config, PRESETS};
use crate::eval::Accuracy;
use crate::pipeline::{MonitorPoint, PartitionSummary, Report, StageKind, TensorArtifact};
use crate::store::{RunRecord, Store};
use crate::train::ipirm::PartitionRecord;
use crate::train::maximize::EpochRisk;
use crate::train::EpochStats;
use crate::{plot, Error, Result};

/// One paper row: the published number and our latest run of that preset.
#[derive(Debug, Clone, Serialize)]
pub struct PaperRow {
    pub preset: String,
    pub label: String,
    pub paper_top1: f64,
    pub source: String,
    pub ours: Option<RunSummary>,
}

impl PaperRow {
    /// Our linear top-1 minus the paper's, for a run that has one.
    pub fn difference(&self) -> Option<f64> {
        self.ours
            .as_ref()
            .and_then(|r| r.linear.map(|l| l.top1 - self.paper_top1))
    }
}

/// What the store holds about one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub run: String,
    pub name: String,
    pub dataset: String,
    pub finished: bool,
    pub epochs_done: usize,
    pub epochs_planned: usize,
    pub device: String,
    /// The linear probe's top-1/top-5 after its last epoch.
    pub linear: Option<Accuracy>,
    /// Its best epoch.
    pub linear_best: Option<Accuracy>,
    /// The trained encoder's kNN (finished runs), else the latest monitor point.
    pub knn: Option<Accuracy>,
    /// The kNN monitor over training, then the final kNN.
    pub knn_curve: Vec<(usize, Accuracy)>,
    pub raw_pixels_knn: Option<Accuracy>,
    pub init_knn: Option<Accuracy>,
    pub partitions: Vec<PartitionView>,
}

/// One maximize step of a run: its risk over its epochs and what it found.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionView {
    pub after_epoch: usize,
    pub best_epoch: usize,
    pub env_sizes: Vec<i64>,
    pub risks: Vec<EpochRisk>,
    /// Class composition of each environment (from the run's report, so finished runs only).
    pub composition: Option<Vec<Vec<i64>>>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Reproduction {
    pub store: String,
    pub paper: Vec<PaperRow>,
    /// Runs of names without a paper number (Fashion-MNIST and others), latest of each name.
    pub others: Vec<RunSummary>,
}

/// Reads the report from the store.
pub fn reproduction(store: &Store) -> Result<Reproduction> {
    let latest = store.latest_runs()?;
    let mut paper = Vec::new();
    for p in PRESETS {
        let Some(q) = p.paper else { continue };
        let ours = match latest.iter().find(|r| r.name == p.name) {
            Some(r) => Some(summarise(store, r)?),
            None => None,
        };
        paper.push(PaperRow {
            preset: p.name.into(),
            label: q.label.into(),
            paper_top1: q.linear_top1,
            source: q.source.into(),
            ours,
        });
    }
    let mut others = Vec::new();
    for r in latest
        .iter()
        .filter(|r| !paper.iter().any(|p| p.preset == r.name))
    {
        others.push(summarise(store, r)?);
    }
    Ok(Reproduction {
        store: store.root().display().to_string(),
        paper,
        others,
    })
}

/// What the store holds about `run` (its report, curves, monitor points and partitions).
pub fn summarise(store: &Store, run: &RunRecord) -> Result<RunSummary> {
    let cfg: Option<Config> = serde_json::from_str(&run.config_json).ok();
    let mut report: Option<Report> = None;
    let mut curves: Vec<EpochStats> = Vec::new();
    let mut monitor: Vec<MonitorPoint> = Vec::new();
    let mut partitions: Vec<PartitionRecord> = Vec::new();
    let mut device = String::from("-");
    for key in &run.artifacts {
        let Some(a) = store.get_meta(key)? else {
            continue;
        };
        device = a.provenance.device.clone();
        match StageKind::from_name(&a.stage).filter(|k| k.version() == a.stage_version) {
            Some(StageKind::Report) => report = store.get_record(key)?,
            Some(StageKind::Curve) => curves.extend(store.get_record::<EpochStats>(key)?),
            Some(StageKind::Monitor) => monitor.extend(store.get_record::<MonitorPoint>(key)?),
            Some(StageKind::Partition) => {
                if let Ok(Some(named)) = store.get_tensors(key) {
                    partitions.push(PartitionRecord::from_tensors(named)?);
                }
            }
            _ => {}
        }
    }
    partitions.sort_by_key(|p| p.after_epoch);
    monitor.sort_by_key(|m| m.epoch);
    let epochs_planned = cfg.as_ref().map_or(0, |c| c.train.epochs);
    let epochs_done = curves.iter().map(|c| c.epoch).max().unwrap_or(0);
    let mut knn_curve: Vec<(usize, Accuracy)> = monitor.iter().map(|m| (m.epoch, m.knn)).collect();
    if let Some(r) = &report {
        knn_curve.push((epochs_planned.max(epochs_done), r.trained_knn));
        device = r.device.clone();
    }
    let composition_of = |after: usize| -> Option<Vec<Vec<i64>>> {
        report
            .as_ref()?
            .partitions
            .iter()
            .find(|s: &&PartitionSummary| s.after_epoch == after)
            .map(|s| s.composition.clone())
    };
    Ok(RunSummary {
        run: run.id.clone(),
        name: run.name.clone(),
        dataset: cfg
            .as_ref()
            .map_or_else(|| "?".into(), |c| c.data.dataset.to_string()),
        finished: run.finished,
        epochs_done,
        epochs_planned,
        device,
        linear: report
            .as_ref()
            .and_then(|r| r.linear.as_ref().map(|l| l.test)),
        linear_best: report
            .as_ref()
            .and_then(|r| r.linear.as_ref().map(|l| l.best)),
        knn: report
            .as_ref()
            .map(|r| r.trained_knn)
            .or(monitor.last().map(|m| m.knn)),
        knn_curve,
        raw_pixels_knn: report.as_ref().map(|r| r.raw_pixels_knn),
        init_knn: report.as_ref().map(|r| r.init_knn),
        partitions: partitions
            .iter()
            .map(|p| PartitionView {
                after_epoch: p.after_epoch,
                best_epoch: p.best_epoch,
                env_sizes: p.env_sizes.clone(),
                risks: p.risks.clone(),
                composition: composition_of(p.after_epoch),
            })
            .collect(),
    })
}

fn pct(a: Option<Accuracy>, top5: bool) -> String {
    a.map_or_else(
        || "-".into(),
        |a| format!("{:.2}", if top5 { a.top5 } else { a.top1 }),
    )
}

fn progress(r: &RunSummary) -> String {
    if r.finished {
        format!(
            "{}/{}",
            r.epochs_done.max(r.epochs_planned),
            r.epochs_planned
        )
    } else {
        format!(
            "{}/{} (running or stopped)",
            r.epochs_done, r.epochs_planned
        )
    }
}

impl Reproduction {
    /// The report as Markdown tables (what `ipirm report` prints and writes as `report.md`).
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "# The reproduction beside the paper\n\nStore: `{}`\n\n",
            self.store
        );
        s += "| run (preset) | paper | paper top-1 | ours top-1 | difference | kNN top-1 | kNN top-5 | epochs | device | run id |\n";
        s += "|---|---|---:|---:|---:|---:|---:|---|---|---|\n";
        for p in &self.paper {
            match &p.ours {
                None => {
                    s += &format!(
                        "| {} | {} | {:.2} | no run | | | | | | |\n",
                        p.preset, p.label, p.paper_top1
                    )
                }
                Some(r) => {
                    let diff = p
                        .difference()
                        .map_or_else(|| "-".into(), |d| format!("{d:+.2}"));
                    s += &format!(
                        "| {} | {} | {:.2} | {} | {diff} | {} | {} | {} | {} | {} |\n",
                        p.preset,
                        p.label,
                        p.paper_top1,
                        pct(r.linear, false),
                        pct(r.knn, false),
                        pct(r.knn, true),
                        progress(r),
                        r.device,
                        r.run
                    );
                }
            }
        }
        s += "\nSources: ";
        let mut sources: Vec<&str> = self.paper.iter().map(|p| p.source.as_str()).collect();
        sources.dedup();
        s += &sources.join("; ");
        s += ".\n\n## Other runs\n\n";
        if self.others.is_empty() {
            s += "None.\n";
            return s;
        }
        s += "| run name | dataset | linear top-1 | kNN top-1 | kNN top-5 | raw pixels kNN | initial encoder kNN | epochs | device | run id |\n";
        s += "|---|---|---:|---:|---:|---:|---:|---|---|---|\n";
        for r in &self.others {
            s += &format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                r.name,
                r.dataset,
                pct(r.linear, false),
                pct(r.knn, false),
                pct(r.knn, true),
                pct(r.raw_pixels_knn, false),
                pct(r.init_knn, false),
                progress(r),
                r.device,
                r.run
            );
        }
        s
    }

    /// Every run the report shows.
    pub fn runs(&self) -> impl Iterator<Item = &RunSummary> {
        self.paper
            .iter()
            .filter_map(|p| p.ours.as_ref())
            .chain(&self.others)
    }

    /// The charts, each as (file name, SVG document): the paper against ours, and per run the
    /// kNN over epochs and each maximize step's risk curve and environment composition.
    pub fn charts(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let rows: Vec<(String, f64, Option<f64>)> = self
            .paper
            .iter()
            .map(|p| {
                (
                    p.label.clone(),
                    p.paper_top1,
                    p.ours.as_ref().and_then(|r| r.linear.map(|l| l.top1)),
                )
            })
            .collect();
        out.push((
            "paper_vs_ours.svg".to_string(),
            plot::paper_table_svg(&rows),
        ));
        for r in self.runs() {
            let name = safe(&r.name);
            if !r.knn_curve.is_empty() {
                let series = vec![
                    (
                        "top-1".to_string(),
                        r.knn_curve.iter().map(|(e, a)| (*e, a.top1)).collect(),
                    ),
                    (
                        "top-5".to_string(),
                        r.knn_curve.iter().map(|(e, a)| (*e, a.top5)).collect(),
                    ),
                ];
                out.push((
                    format!("knn_{name}.svg"),
                    plot::lines_svg(
                        &format!("kNN of {} over training", r.name),
                        "accuracy (%)",
                        &series,
                    ),
                ));
            }
            for p in &r.partitions {
                let risk = |f: fn(&EpochRisk) -> f64| {
                    p.risks
                        .iter()
                        .enumerate()
                        .map(|(t, x)| (t, f(x)))
                        .collect::<Vec<_>>()
                };
                let series = vec![
                    ("risk".to_string(), risk(|x| x.total)),
                    ("contrastive".to_string(), risk(|x| x.contrastive)),
                    ("penalty".to_string(), risk(|x| x.penalty)),
                    ("constraint".to_string(), risk(|x| x.constraint)),
                ];
                let title = format!(
                    "{}: maximize step after epoch {} (best at {})",
                    r.name, p.after_epoch, p.best_epoch
                );
                out.push((
                    format!("risk_{name}_{}.svg", p.after_epoch),
                    plot::lines_svg(&title, "value", &series),
                ));
                if let Some(c) = &p.composition {
                    let labelled: Vec<Vec<i64>> = c
                        .iter()
                        .map(|row| row[..row.len().saturating_sub(1)].to_vec())
                        .collect();
                    out.push((
                        format!("environments_{name}_{}.svg", p.after_epoch),
                        plot::composition_svg(&labelled, None),
                    ));
                }
            }
        }
        out
    }

    /// Writes `report.md`, `report.json` and the [`Reproduction::charts`] into `out`; returns
    /// the files written.
    pub fn write(&self, out: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let json = serde_json::to_string_pretty(self).expect("plain data serialises");
        let mut files = Vec::new();
        for (name, text) in [
            ("report.md".to_string(), self.markdown()),
            ("report.json".to_string(), json),
        ]
        .into_iter()
        .chain(self.charts())
        {
            let p = out.join(name);
            std::fs::write(&p, text).map_err(|e| Error::io(&p, e))?;
            files.push(p);
        }
        Ok(files)
    }
}

/// A run name as a file name.
fn safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
