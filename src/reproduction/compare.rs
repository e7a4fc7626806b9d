//! `ipirm compare`: arms of runs side by side.
//!
//! An arm is a run name: its finished runs, the latest of each seed (`ipirm run --seeds N` makes
//! one run per seed under one name); or a single run given by id. Per arm: n, mean ± standard
//! deviation and a 95 % Student t interval of the linear probe's top-1 and the kNN top-1/top-5,
//! with the reference points (kNN of raw pixels and of the encoder at initialisation). For two
//! arms: the difference of means (second − first) with its interval, paired over the seeds both
//! have when they share at least two, else Welch's; the resolved settings whose values differ
//! between the arms (and, flagged, those that differ inside an arm besides the seed); for two
//! single runs, the stages they share and the first where their keys part, from their plans.
//! Everything is read from the store; nothing is computed again.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use super::{summarise, RunSummary};
use crate::config::{paper_of, Config};
use crate::pipeline::stages::{Plan, Planned, StageKind};
use crate::stats::{self, Difference, Summary};
use crate::store::{RunRecord, Store};
use crate::{Error, Result};

/// The metrics compared, by their names in `--json` and in expectation files.
pub const METRICS: [&str; 3] = ["linear_top1", "knn_top1", "knn_top5"];
/// The reference points each arm shows (not compared).
const REFERENCES: [&str; 2] = ["raw_pixels_knn_top1", "init_knn_top1"];

/// One metric of a run summary, by name.
pub fn metric(r: &RunSummary, name: &str) -> Option<f64> {
    match name {
        "linear_top1" => r.linear.map(|a| a.top1),
        "knn_top1" => r.knn.map(|a| a.top1),
        "knn_top5" => r.knn.map(|a| a.top5),
        "raw_pixels_knn_top1" => r.raw_pixels_knn.map(|a| a.top1),
        "init_knn_top1" => r.init_knn.map(|a| a.top1),
        _ => None,
    }
}

/// One arm as shown.
#[derive(Debug, Clone, Serialize)]
pub struct Arm {
    /// What was asked for: a run name or a run id.
    pub label: String,
    /// "arm" (a run name) or "run" (one run id).
    pub kind: &'static str,
    pub dataset: String,
    /// The runs counted, one per seed, with their seeds.
    pub runs: Vec<(String, u64)>,
    /// Per metric and reference point: its summary over the runs that have it.
    pub metrics: BTreeMap<String, Option<Summary>>,
    /// Settings (besides `train.seed`) that differ between the arm's own runs: flagged.
    pub inconsistent: Vec<SettingDiff>,
    /// The paper's linear top-1 when the arm's name is a paper preset.
    pub paper_top1: Option<f64>,
    #[serde(skip)]
    values: BTreeMap<String, BTreeMap<u64, f64>>,
    #[serde(skip)]
    settings: BTreeMap<String, String>,
    #[serde(skip)]
    records: Vec<RunRecord>,
}

/// The columns of an arm's row in a comparison table ([`Arm::cells`]): `ipirm compare`'s
/// Markdown and the report's HTML.
pub const ARM_COLUMNS: [&str; 9] = [
    "arm",
    "n",
    "seeds",
    "linear top-1",
    "kNN top-1",
    "kNN top-5",
    "raw pixels kNN top-1",
    "initialisation kNN top-1",
    "paper",
];

impl Arm {
    /// The values of `metric`, by seed.
    pub fn values(&self, metric: &str) -> Option<&BTreeMap<u64, f64>> {
        self.values.get(metric)
    }

    /// This arm's row under [`ARM_COLUMNS`], as text (the label flagged `(!)` when its runs
    /// differ in more than the seed).
    pub fn cells(&self) -> Vec<String> {
        let m = |k: &str| fmt_summary(self.metrics.get(k).unwrap_or(&None));
        let seeds: Vec<String> = self.runs.iter().map(|(_, s)| s.to_string()).collect();
        let flag = if self.inconsistent.is_empty() {
            ""
        } else {
            " (!)"
        };
        vec![
            format!("{}{flag}", self.label),
            self.runs.len().to_string(),
            seeds.join(", "),
            m("linear_top1"),
            m("knn_top1"),
            m("knn_top5"),
            m("raw_pixels_knn_top1"),
            m("init_knn_top1"),
            self.paper_top1
                .map_or_else(|| "-".into(), |p| format!("{p:.2}")),
        ]
    }
}

/// A resolved setting whose value differs: its dotted key and each side's value (JSON).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SettingDiff {
    pub key: String,
    pub values: Vec<String>,
}

/// Second arm − first arm, for one metric.
#[derive(Debug, Clone, Serialize)]
pub struct MetricDifference {
    pub metric: String,
    /// "paired over seeds [..]", "unpaired (Welch)" or "single runs (no interval)".
    pub form: String,
    pub mean: f64,
    pub ci95: Option<(f64, f64)>,
    pub df: Option<f64>,
}

/// Where two runs' stage keys agree and where they first part.
#[derive(Debug, Clone, Serialize)]
pub struct Lineage {
    /// The stages both runs have with the same key, in pipeline order.
    pub shared: Vec<String>,
    /// The first stage (in pipeline order) both runs have with different keys.
    pub first_parting: Option<Parting>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Parting {
    pub stage: String,
    pub keys: (String, String),
}

/// What `ipirm compare` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub store: String,
    pub arms: Vec<Arm>,
    /// With two arms: second − first, per metric both have.
    pub differences: Vec<MetricDifference>,
    /// Settings whose values differ between the arms (each arm's latest run), `train.seed` aside.
    pub settings: Vec<SettingDiff>,
    /// With two single runs.
    pub lineage: Option<Lineage>,
    /// What makes a column not comparable between the arms (their kNN weighted at different
    /// temperatures), one sentence each.
    pub notes: Vec<String>,
}

/// Resolves `spec`: a run name with finished runs (an arm), else one run id (or unique id prefix).
pub fn arm(store: &Store, spec: &str) -> Result<Arm> {
    let runs = store.list_runs()?;
    let named: Vec<&RunRecord> = runs.iter().filter(|r| r.name == spec).collect();
    let (kind, chosen): (&'static str, Vec<RunRecord>) = if !named.is_empty() {
        // The latest finished run of each seed (a rerun of a seed is a cache hit: one value).
        let mut by_seed: BTreeMap<u64, &RunRecord> = BTreeMap::new();
        for r in named.iter().filter(|r| r.finished) {
            let seed = config_of(r)?.train.seed;
            let newer = by_seed
                .get(&seed)
                .is_none_or(|o| (r.created, r.seq) > (o.created, o.seq));
            if newer {
                by_seed.insert(seed, r);
            }
        }
        if by_seed.is_empty() {
            return Err(Error::config(
                "compare",
                format!(
                    "run name `{spec}` has {} runs in store {} and none finished",
                    named.len(),
                    store.root().display()
                ),
            ));
        }
        ("arm", by_seed.into_values().cloned().collect())
    } else {
        let r = store.resolve_run(spec).map_err(|_| {
            Error::config(
                "compare",
                format!(
                    "no run named `{spec}` and no run id starting with it in store {} (`ipirm store ls` lists them)",
                    store.root().display()
                ),
            )
        })?;
        if !r.finished {
            return Err(Error::config(
                "compare",
                format!("run {} did not finish: it has no final scores", r.id),
            ));
        }
        ("run", vec![r])
    };
    let mut summaries = Vec::new();
    for r in &chosen {
        summaries.push((config_of(r)?, summarise(store, r)?));
    }
    let mut values: BTreeMap<String, BTreeMap<u64, f64>> = BTreeMap::new();
    for (cfg, s) in &summaries {
        for m in METRICS.iter().chain(&REFERENCES) {
            if let Some(v) = metric(s, m) {
                values
                    .entry(m.to_string())
                    .or_default()
                    .insert(cfg.train.seed, v);
            }
        }
    }
    let metrics = METRICS
        .iter()
        .chain(&REFERENCES)
        .map(|m| {
            let vs: Vec<f64> = values
                .get(*m)
                .map(|v| v.values().copied().collect())
                .unwrap_or_default();
            (m.to_string(), stats::summary(&vs))
        })
        .collect();
    let flat: Vec<BTreeMap<String, String>> = chosen.iter().map(settings_of).collect();
    let inconsistent = differing(&flat);
    let name = chosen[0].name.clone();
    let dataset = summaries[0].1.dataset.clone();
    Ok(Arm {
        label: spec.to_string(),
        kind,
        runs: chosen
            .iter()
            .zip(&summaries)
            .map(|(r, (c, _))| (r.id.clone(), c.train.seed))
            .collect(),
        metrics,
        inconsistent,
        paper_top1: paper_of(&name, &dataset).map(|q| q.linear_top1),
        dataset,
        values,
        settings: flat.into_iter().next_back().unwrap_or_default(),
        records: chosen,
    })
}

fn config_of(r: &RunRecord) -> Result<Config> {
    Config::from_recorded_json(&r.config_json).map_err(|e| {
        Error::Store(format!(
            "run {}: its recorded config does not read as this version's: {e}",
            r.id
        ))
    })
}

/// A run's resolved settings by dotted key, `train.seed` left out, and `data.antialias` where it
/// changes nothing ([`crate::config::DataConfig::antialias_applies`]): there a run recorded
/// before the setting reads it off and a later one on, and the two computed the same. Read as
/// this version's config, so a setting added since (`model.sync_bn`) has the value the run had
/// rather than being absent from it. `knn.temperature` is the one the kNN weighted with
/// ([`Config::knn_temperature`]: `train.temperature` unless set).
fn settings_of(r: &RunRecord) -> BTreeMap<String, String> {
    let v = crate::config::recorded_config_value(&r.config_json).unwrap_or(Value::Null);
    let cfg = serde_json::from_value::<Config>(v.clone()).ok();
    let v = cfg
        .as_ref()
        .and_then(|c| serde_json::to_value(c).ok())
        .unwrap_or(v);
    let mut out = crate::config::json_leaves(&v);
    out.remove("train.seed");
    if let Some(c) = &cfg {
        if !c.data.antialias_applies() {
            out.remove("data.antialias");
        }
        out.insert(
            "knn.temperature".into(),
            Value::from(c.knn_temperature()).to_string(),
        );
    }
    out
}

/// The note when the arms' kNN weighted neighbours at different temperatures (see
/// [`Comparison::notes`]).
fn knn_scale_note(settings: &[SettingDiff]) -> Option<String> {
    let d = settings.iter().find(|d| d.key == "knn.temperature")?;
    Some(format!(
        "the arms' kNN weighted neighbours at different temperatures ({}; it follows \
         train.temperature unless knn.temperature is set), so their kNN scores are on different \
         scales (raw pixels score differently too): set the same knn.temperature to compare kNN",
        d.values.join(" / ")
    ))
}

/// The keys whose values are not the same in every map, with each map's value.
fn differing(maps: &[BTreeMap<String, String>]) -> Vec<SettingDiff> {
    let keys: BTreeSet<&String> = maps.iter().flat_map(|m| m.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let values: Vec<String> = maps
                .iter()
                .map(|m| m.get(k).cloned().unwrap_or_else(|| "(absent)".into()))
                .collect();
            (values.iter().any(|v| v != &values[0])).then(|| SettingDiff {
                key: k.clone(),
                values,
            })
        })
        .collect()
}

/// Compares the arms named by `specs` (at least one).
pub fn compare(store: &Store, specs: &[String]) -> Result<Comparison> {
    if specs.is_empty() {
        return Err(Error::config("compare", "name at least one arm or run"));
    }
    let arms = specs
        .iter()
        .map(|s| arm(store, s))
        .collect::<Result<Vec<_>>>()?;
    for a in &arms {
        if a.kind == "arm" && a.runs.len() < 2 {
            return Err(Error::config(
                "compare",
                format!(
                    "arm `{}` has one finished run (seed {}): a mean with an interval needs at least two; run it with --seeds N, or give run ids to compare single runs",
                    a.label, a.runs[0].1
                ),
            ));
        }
    }
    for (i, b) in arms.iter().enumerate() {
        if let Some(a) = arms[..i].iter().find(|a| a.runs == b.runs) {
            let what = format!(
                "`{}` and `{}` are the same runs: compare different arms or runs",
                a.label, b.label
            );
            return Err(Error::config("compare", what));
        }
    }
    if let Some(b) = arms.iter().find(|b| b.dataset != arms[0].dataset) {
        return Err(Error::config(
            "compare",
            format!(
                "arms on different datasets: `{}` on {}, `{}` on {}",
                arms[0].label, arms[0].dataset, b.label, b.dataset
            ),
        ));
    }
    let settings = differing(&arms.iter().map(|a| a.settings.clone()).collect::<Vec<_>>());
    let mut differences = Vec::new();
    let mut lineage = None;
    if let [a, b] = arms.as_slice() {
        for m in METRICS {
            if let (Some(va), Some(vb)) = (a.values(m), b.values(m)) {
                differences.push(difference(m, va, vb));
            }
        }
        if a.kind == "run" && b.kind == "run" {
            lineage = Some(lineage_of(store, &a.records[0], &b.records[0])?);
        }
    }
    Ok(Comparison {
        store: store.root().display().to_string(),
        arms,
        differences,
        notes: knn_scale_note(&settings).into_iter().collect(),
        settings,
        lineage,
    })
}

/// `b − a` for one metric: paired over the seeds both have when at least two, else Welch's.
fn difference(metric: &str, a: &BTreeMap<u64, f64>, b: &BTreeMap<u64, f64>) -> MetricDifference {
    let shared: Vec<u64> = a.keys().filter(|s| b.contains_key(s)).copied().collect();
    let (form, d): (String, Option<Difference>) = if shared.len() >= 2 {
        let xa: Vec<f64> = shared.iter().map(|s| a[s]).collect();
        let xb: Vec<f64> = shared.iter().map(|s| b[s]).collect();
        (
            format!("paired over seeds {shared:?}"),
            stats::paired(&xa, &xb),
        )
    } else {
        let xa: Vec<f64> = a.values().copied().collect();
        let xb: Vec<f64> = b.values().copied().collect();
        match (xa.len(), xb.len()) {
            (1, 1) => {
                return MetricDifference {
                    metric: metric.into(),
                    form: "single runs (no interval)".into(),
                    mean: xb[0] - xa[0],
                    ci95: None,
                    df: None,
                }
            }
            _ => ("unpaired (Welch)".into(), stats::welch(&xa, &xb)),
        }
    };
    let mean_of = |m: &BTreeMap<u64, f64>| m.values().sum::<f64>() / m.len() as f64;
    MetricDifference {
        metric: metric.into(),
        form,
        mean: d.map_or(mean_of(b) - mean_of(a), |d| d.mean),
        ci95: d.map(|d| d.ci95),
        df: d.map(|d| d.df),
    }
}

/// Every stage of a run in pipeline order, labelled, from its recorded config and dataset: the
/// keys its plan gives (what the store keys are made of), of the stages the run recorded (a
/// training-only run has no kNN of raw pixels, a killed one not every epoch).
fn stages_of(store: &Store, r: &RunRecord) -> Result<Vec<(String, String)>> {
    let cfg = config_of(r)?;
    let mut dataset = None;
    for k in &r.artifacts {
        if store
            .get_meta(k)?
            .is_some_and(|a| a.stage == StageKind::Dataset.name())
        {
            dataset = Some(k.clone());
        }
    }
    let dataset = dataset
        .ok_or_else(|| Error::Store(format!("run {} names no dataset stage in the store", r.id)))?;
    let branch = match &cfg.ipirm.from_partition {
        Some(p) => Some(crate::pipeline::resolve_branch(store, p)?),
        None => None,
    };
    let plan = Plan::new(&cfg, &dataset, branch.as_ref())?;
    let mut out = vec![("dataset".to_string(), dataset.clone())];
    let pixels = Planned::new(
        StageKind::PixelKnn,
        &crate::pipeline::stages::knn_params(&cfg),
        vec![dataset],
    )?;
    out.push(("kNN of raw pixels".into(), pixels.key));
    for e in plan.start()..=plan.epochs() {
        out.push((
            format!("checkpoint after epoch {e}"),
            plan.checkpoint(e).key.clone(),
        ));
        for p in plan.partitions.iter().filter(|p| p.after_epoch == e) {
            if let Some(f) = &p.features {
                out.push((format!("features after epoch {e}"), f.key.clone()));
            }
            out.push((
                format!("partition after epoch {e}"),
                p.partition.key.clone(),
            ));
        }
    }
    out.retain(|(_, key)| r.artifacts.contains(key));
    Ok(out)
}

fn lineage_of(store: &Store, a: &RunRecord, b: &RunRecord) -> Result<Lineage> {
    let (sa, sb) = (stages_of(store, a)?, stages_of(store, b)?);
    let kb: BTreeMap<&String, &String> = sb.iter().map(|(l, k)| (l, k)).collect();
    let mut shared = Vec::new();
    let mut first_parting = None;
    for (label, key) in &sa {
        match kb.get(label) {
            Some(other) if *other == key => shared.push(label.clone()),
            Some(other) if first_parting.is_none() => {
                first_parting = Some(Parting {
                    stage: label.clone(),
                    keys: (key.clone(), other.to_string()),
                })
            }
            _ => {}
        }
    }
    Ok(Lineage {
        shared,
        first_parting,
    })
}

/// A summary as `mean ± sd [lo, hi]` (one run: its value; none: `-`).
fn fmt_summary(s: &Option<Summary>) -> String {
    match s {
        None => "-".into(),
        Some(Summary { n: 1, mean, .. }) => format!("{mean:.2}"),
        Some(s) => {
            let (lo, hi) = s.ci95.unwrap_or((f64::NAN, f64::NAN));
            format!(
                "{:.2} ± {:.2} [{lo:.2}, {hi:.2}]",
                s.mean,
                s.sd.unwrap_or(f64::NAN)
            )
        }
    }
}

impl Comparison {
    /// The comparison as Markdown (what `ipirm compare` prints).
    pub fn markdown(&self) -> String {
        let mut s = format!("# Comparison (store `{}`)\n\n", self.store);
        s += "Per arm: mean ± standard deviation [95 % t interval] over its runs (one per seed).\n\n";
        s += &format!("| {} |\n", ARM_COLUMNS.join(" | "));
        s += "|---|---:|---|---|---|---|---|---|---:|\n";
        for a in &self.arms {
            s += &format!("| {} |\n", a.cells().join(" | "));
        }
        for a in self.arms.iter().filter(|a| !a.inconsistent.is_empty()) {
            s += &format!(
                "\n(!) the runs of `{}` differ in more than the seed:\n",
                a.label
            );
            for d in &a.inconsistent {
                s += &format!("- `{}`: {}\n", d.key, d.values.join(" / "));
            }
        }
        for n in &self.notes {
            s += &format!("\n(!) {n}\n");
        }
        if !self.differences.is_empty() {
            let (a, b) = (&self.arms[0].label, &self.arms[1].label);
            s += &format!("\n## `{b}` − `{a}`\n\n| metric | difference | 95 % interval | form |\n|---|---:|---|---|\n");
            for d in &self.differences {
                let ci = d
                    .ci95
                    .map_or_else(|| "-".into(), |(l, h)| format!("[{l:+.2}, {h:+.2}]"));
                s += &format!("| {} | {:+.2} | {ci} | {} |\n", d.metric, d.mean, d.form);
            }
        }
        if self.arms.len() > 1 {
            s += "\n## Settings that differ\n\n";
            if self.settings.is_empty() {
                s += "None besides the seed.\n";
            } else {
                let names: Vec<&str> = self.arms.iter().map(|a| a.label.as_str()).collect();
                s += &format!(
                    "| setting | {} |\n|---|{}\n",
                    names.join(" | "),
                    "---|".repeat(names.len())
                );
                for d in &self.settings {
                    s += &format!("| `{}` | {} |\n", d.key, d.values.join(" | "));
                }
            }
        }
        if let Some(l) = &self.lineage {
            s += "\n## Lineage\n\n";
            s += &format!(
                "Shared stages ({}): {}\n",
                l.shared.len(),
                l.shared.join(", ")
            );
            match &l.first_parting {
                Some(p) => {
                    s += &format!(
                        "\nFirst stage where the keys part: {} ({} vs {})\n",
                        p.stage,
                        &p.keys.0[..12.min(p.keys.0.len())],
                        &p.keys.1[..12.min(p.keys.1.len())]
                    )
                }
                None => s +=
                    "\nNo stage both have parts: one run's stages are a prefix of the other's.\n",
            }
        }
        s
    }

    /// Writes `compare.md`, `compare.json` and `compare.svg` ([`Comparison::chart`]) into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let md = dir.join("compare.md");
        std::fs::write(&md, self.markdown()).map_err(|e| Error::io(md, e))?;
        let json = dir.join("compare.json");
        let text = serde_json::to_string_pretty(self).expect("serialisable");
        std::fs::write(&json, text).map_err(|e| Error::io(json, e))?;
        crate::plot::save_svg(&self.chart(), dir.join("compare.svg"))
    }

    /// Each arm's mean and 95 % interval per metric, the paper's number as a line where the arm
    /// is a paper preset, as an SVG document.
    pub fn chart(&self) -> String {
        let arms: Vec<crate::plot::ArmInterval> = self
            .arms
            .iter()
            .map(|a| crate::plot::ArmInterval {
                label: a.label.clone(),
                metrics: METRICS
                    .iter()
                    .map(|m| {
                        let s = a.metrics.get(*m).copied().flatten();
                        (m.to_string(), s.map(|s| (s.mean, s.ci95)))
                    })
                    .collect(),
                paper: a.paper_top1,
            })
            .collect();
        crate::plot::arm_intervals_svg(&arms)
    }
}
