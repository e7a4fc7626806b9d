//! The reproduction beside the paper: `ipirm report`.
//!
//! For every preset with a published number ([`crate::config::Paper`]), the latest run of that
//! preset in the store: our linear top-1 beside the paper's and the difference, kNN top-1/top-5,
//! epochs done of planned (an unfinished run shows its progress and latest kNN monitor), device
//! and run id; a preset without a run says so. Then every other run with its reference points
//! (raw pixels, the encoder at initialisation), the store's comparisons (its arms, per
//! dataset, as `ipirm compare` shows them), and what each maximize step found. Everything is
//! read from the store's records and partitions; nothing is computed again. Only the partition
//! galleries (`galleries.rs`) read data: each run's images, checked against its fingerprint.
//!
//! Written by [`Reproduction::write`] as `report.md`, `report.json`, SVG charts (`charts.rs`),
//! the galleries as PNG and `report.html`, all of it on one self-contained page (`html.rs`).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{paper_of, Config, PRESETS};
use crate::data::classes;
use crate::eval::Accuracy;
use crate::pipeline::{stages, MonitorPoint, PartitionSummary, Report, StageKind};
use crate::store::{RunRecord, Store};
use crate::train::ipirm::PartitionRecord;
use crate::train::maximize::EpochRisk;
use crate::train::EpochStats;
use crate::{Error, Result};
use compare::Comparison;

mod charts;
pub mod compare;
mod galleries;
mod html;

pub use charts::{run_charts, RunCharts, StepCharts};
pub use galleries::{Galleries, RunGallery};

/// One paper row: the published number and our latest run of that preset.
#[derive(Debug, Clone, Serialize)]
pub struct PaperRow {
    pub preset: String,
    pub label: String,
    pub paper_top1: f64,
    pub source: String,
    pub ours: Option<RunSummary>,
    /// Why `ours` is empty while a run has the preset's name: it ran on another dataset (it
    /// is then among the other runs).
    pub unmatched: Option<String>,
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
    /// The arms of the store side by side, per dataset (none until a run name has two
    /// finished seeds).
    pub comparisons: Vec<StoreComparison>,
}

/// The arms of one dataset as `ipirm compare` shows them: every run name with finished runs of
/// at least two seeds.
#[derive(Debug, Clone, Serialize)]
pub struct StoreComparison {
    pub dataset: String,
    pub arms: Vec<String>,
    pub comparison: Option<Comparison>,
    /// Why there is no comparison, where `compare` refused.
    pub problem: Option<String>,
}

/// The store's arms, grouped by dataset, and their comparison.
fn comparisons(store: &Store) -> Result<Vec<StoreComparison>> {
    let runs = store.list_runs()?;
    let mut names: Vec<&str> = runs
        .iter()
        .filter(|r| r.finished)
        .map(|r| r.name.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut by_dataset: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for name in names {
        // A name whose finished runs share one seed, or whose config no longer reads, is no arm.
        match compare::arm(store, name) {
            Ok(a) if a.runs.len() >= 2 => by_dataset
                .entry(a.dataset)
                .or_default()
                .push(name.to_string()),
            _ => {}
        }
    }
    Ok(by_dataset
        .into_iter()
        .map(|(dataset, arms)| {
            let (comparison, problem) = match compare::compare(store, &arms) {
                Ok(c) => (Some(c), None),
                Err(e) => (None, Some(e.to_string())),
            };
            StoreComparison {
                dataset,
                arms,
                comparison,
                problem,
            }
        })
        .collect())
}

/// Reads the report from the store.
pub fn reproduction(store: &Store) -> Result<Reproduction> {
    let latest = store.latest_runs()?;
    let mut paper = Vec::new();
    for p in PRESETS {
        let Some(q) = p.paper else { continue };
        let (mut ours, mut unmatched) = (None, None);
        if let Some(r) = latest.iter().find(|r| r.name == p.name) {
            let s = summarise(store, r)?;
            match paper_of(p.name, &s.dataset) {
                Some(_) => ours = Some(s),
                None => {
                    unmatched = Some(format!(
                        "no run on its dataset (run {} is on {})",
                        s.run, s.dataset
                    ))
                }
            }
        }
        paper.push(PaperRow {
            preset: p.name.into(),
            label: q.label.into(),
            paper_top1: q.linear_top1,
            source: q.source.into(),
            ours,
            unmatched,
        });
    }
    let mut others = Vec::new();
    for r in latest
        .iter()
        .filter(|r| !paper.iter().any(|p| p.preset == r.name && p.ours.is_some()))
    {
        others.push(summarise(store, r)?);
    }
    Ok(Reproduction {
        store: store.root().display().to_string(),
        paper,
        others,
        comparisons: comparisons(store)?,
    })
}

/// What the store holds about `run` (its report, curves, monitor points and partitions).
pub fn summarise(store: &Store, run: &RunRecord) -> Result<RunSummary> {
    let cfg = Config::from_recorded_json(&run.config_json).ok();
    let mut report: Option<Report> = None;
    let mut curves: Vec<EpochStats> = Vec::new();
    let mut monitor: Vec<MonitorPoint> = Vec::new();
    let mut partitions: Vec<PartitionRecord> = Vec::new();
    // The encoder's kNN by the epoch of the checkpoint it was measured on (the initialisation,
    // the trained encoder), and the raw pixels': stored as stages whether or not the run ended.
    let mut encoder_knn: BTreeMap<usize, Accuracy> = BTreeMap::new();
    let mut pixels_knn: Option<Accuracy> = None;
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
            Some(StageKind::PixelKnn) => pixels_knn = store.get_record(key)?,
            Some(StageKind::Knn) => {
                // From the checkpoint's index entry: the report stands while an early
                // checkpoint's file is missing (a rerun recomputes only the latest).
                let epoch = match a.inputs.first() {
                    Some(checkpoint) => store.get_meta(checkpoint)?,
                    None => None,
                }
                .and_then(|c| stages::checkpoint_epoch(&c));
                if let (Some(epoch), Some(acc)) = (epoch, store.get_record(key)?) {
                    encoder_knn.insert(epoch, acc);
                }
            }
            Some(StageKind::Partition) => {
                if let Ok(Some(p)) = store.get_typed::<PartitionRecord>(key) {
                    partitions.push(p);
                }
            }
            _ => {}
        }
    }
    partitions.sort_by_key(|p| p.after_epoch);
    monitor.sort_by_key(|m| m.epoch);
    let epochs_planned = cfg.as_ref().map_or(0, |c| c.train.epochs);
    let epochs_done = curves.iter().map(|c| c.epoch).max().unwrap_or(0);
    // The kNN over training: the encoder at initialisation (epoch 0), the monitor points, the
    // trained encoder; from the report where the stages are not all at hand.
    let mut curve = encoder_knn.clone();
    curve.extend(monitor.iter().map(|m| (m.epoch, m.knn)));
    if let Some(r) = &report {
        curve.entry(0).or_insert(r.init_knn);
        curve
            .entry(epochs_planned.max(epochs_done))
            .or_insert(r.trained_knn);
        device = r.device.clone();
    }
    let knn_curve: Vec<(usize, Accuracy)> = curve.into_iter().collect();
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
        raw_pixels_knn: report.as_ref().map(|r| r.raw_pixels_knn).or(pixels_knn),
        init_knn: report
            .as_ref()
            .map(|r| r.init_knn)
            .or(encoder_knn.get(&0).copied()),
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
                        "| {} | {} | {:.2} | {} | | | | | | |\n",
                        p.preset,
                        p.label,
                        p.paper_top1,
                        p.unmatched.as_deref().unwrap_or("no run")
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
        } else {
            s += &self.others_table();
        }
        s += &self.comparisons_markdown();
        s += &self.partitions_markdown();
        s
    }

    /// The other runs as a Markdown table.
    fn others_table(&self) -> String {
        let mut s = String::new();
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

    /// The store's comparisons as `ipirm compare` prints them, one section per dataset.
    fn comparisons_markdown(&self) -> String {
        let mut s = String::new();
        for c in &self.comparisons {
            s += &format!(
                "\n## Comparison on {}: {}\n\n",
                c.dataset,
                c.arms.join(", ")
            );
            match (&c.comparison, &c.problem) {
                (Some(c), _) => {
                    // Without its title; its sections one level down.
                    let md = c.markdown();
                    let body = md.split_once("\n\n").map_or(md.as_str(), |(_, b)| b);
                    s += &body.replace("\n## ", "\n### ");
                }
                (None, Some(p)) => s += &format!("Not compared: {p}\n"),
                (None, None) => {}
            }
        }
        s
    }

    /// What each run's maximize steps found: per environment its size and classes by name.
    fn partitions_markdown(&self) -> String {
        let mut s = String::new();
        for r in self.runs().filter(|r| !r.partitions.is_empty()) {
            let names = classes::names_of(&r.dataset);
            s += &format!("\n## Partitions of {} ({})\n\n", r.name, r.run);
            for p in &r.partitions {
                s += &format!(
                    "- after epoch {} (best maximize epoch {}): sizes {:?}\n",
                    p.after_epoch, p.best_epoch, p.env_sizes
                );
                for (e, row) in p.composition.iter().flatten().enumerate() {
                    s += &format!(
                        "  - env {e}: {}\n",
                        classes::composition_mix(row, names, 10)
                    );
                }
            }
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

    /// Writes `report.md`, `report.json` (with the galleries' indices and class counts), the
    /// [`Reproduction::charts`], each gallery grid as `gallery/<run name>_<epoch>_env<e>_
    /// {confident,random}.png` and `report.html`, the whole report as one page, into `out`;
    /// returns the files written.
    pub fn write(&self, out: &Path, galleries: &Galleries) -> Result<Vec<PathBuf>> {
        #[derive(Serialize)]
        struct Json<'a> {
            #[serde(flatten)]
            report: &'a Reproduction,
            galleries: &'a Galleries,
        }
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let json = serde_json::to_string_pretty(&Json {
            report: self,
            galleries,
        })
        .expect("plain data serialises");
        let mut files: Vec<(String, Vec<u8>)> = [
            ("report.md".to_string(), self.markdown()),
            ("report.json".to_string(), json),
        ]
        .into_iter()
        .chain(self.charts())
        .map(|(name, text)| (name, text.into_bytes()))
        .collect();
        for r in self.runs() {
            let Some(RunGallery::Steps(steps)) = galleries.runs.get(&r.run) else {
                continue;
            };
            for step in steps {
                for e in &step.envs {
                    for (grid, what) in [(&e.confident, "confident"), (&e.sample, "random")] {
                        if !grid.png.is_empty() {
                            let name = format!(
                                "gallery/{}_{}_env{}_{what}.png",
                                safe(&r.name),
                                step.after_epoch,
                                e.env
                            );
                            files.push((name, grid.png.clone()));
                        }
                    }
                }
            }
        }
        files.push(("report.html".to_string(), self.html(galleries).into_bytes()));
        let mut written = Vec::new();
        for (name, bytes) in files {
            let p = out.join(name);
            if let Some(dir) = p.parent() {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
            std::fs::write(&p, bytes).map_err(|e| Error::io(&p, e))?;
            written.push(p);
        }
        Ok(written)
    }
}

/// A run name as a part of a file name and an HTML id, one to one (two names never share one):
/// the characters `--name` allows (letters, digits, `-`, `_`, `.`) as they are, any other byte
/// (a name from an older or imported store) as `~` and its hex. (`.` was `_`, so runs `lr.3`
/// and `lr_3` overwrote each other's charts.)
fn safe(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if crate::store::is_run_name_char(c) {
            out.push(c);
        } else {
            let mut buf = [0; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("~{b:02x}"));
            }
        }
    }
    out
}
