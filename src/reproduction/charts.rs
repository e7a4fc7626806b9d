//! The report's charts: the paper against ours, and per run its kNN over training and each
//! maximize step's risk curve and class composition.
use super::{safe, Reproduction, RunSummary};
use crate::data::classes;
use crate::plot;
use crate::train::maximize::EpochRisk;

impl Reproduction {
    /// The charts, each as (file name, SVG document): the paper against ours, and per run the
    /// kNN over epochs and each maximize step's risk curve and environment composition.
    pub fn charts(&self) -> Vec<(String, String)> {
        let mut out = vec![("paper_vs_ours.svg".to_string(), self.paper_chart())];
        for r in self.runs() {
            let name = safe(&r.name);
            let charts = run_charts(r);
            if let Some(knn) = charts.knn {
                out.push((format!("knn_{name}.svg"), knn));
            }
            for step in charts.steps {
                let e = step.after_epoch;
                out.push((format!("risk_{name}_{e}.svg"), step.risk));
                if let Some(c) = step.composition {
                    out.push((format!("environments_{name}_{e}.svg"), c));
                }
            }
        }
        out
    }

    /// The paper's top-1 beside ours, per paper row.
    pub(super) fn paper_chart(&self) -> String {
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
        plot::paper_table_svg(&rows)
    }
}

/// One run's charts, as SVG documents.
pub struct RunCharts {
    /// The kNN over training from the initialisation (epoch 0), with the raw-pixel kNN as
    /// dashed reference lines; none when the run has no kNN point yet.
    pub knn: Option<String>,
    pub steps: Vec<StepCharts>,
}

/// One maximize step's charts.
pub struct StepCharts {
    pub after_epoch: usize,
    /// The risk and its parts over the step's epochs.
    pub risk: String,
    /// Its environments' class composition, classes named (where the run's report holds it).
    pub composition: Option<String>,
}

/// The charts of run `r`.
pub fn run_charts(r: &RunSummary) -> RunCharts {
    let knn = (!r.knn_curve.is_empty()).then(|| {
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
        let references: Vec<plot::Reference> = r
            .raw_pixels_knn
            .iter()
            .flat_map(|a| {
                [
                    plot::Reference {
                        label: "raw pixels top-1".into(),
                        value: a.top1,
                        series: 0,
                    },
                    plot::Reference {
                        label: "raw pixels top-5".into(),
                        value: a.top5,
                        series: 1,
                    },
                ]
            })
            .collect();
        plot::lines_with_references_svg(
            &format!("kNN of {} over training", r.name),
            "accuracy (%)",
            &series,
            &references,
        )
    });
    let names = classes::names_of(&r.dataset);
    let steps = r
        .partitions
        .iter()
        .map(|p| {
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
            StepCharts {
                after_epoch: p.after_epoch,
                risk: plot::lines_svg(&title, "value", &series),
                composition: p.composition.as_ref().map(|c| {
                    let labelled: Vec<Vec<i64>> = c
                        .iter()
                        .map(|row| row[..row.len().saturating_sub(1)].to_vec())
                        .collect();
                    plot::composition_svg(&labelled, Some(names))
                }),
            }
        })
        .collect();
    RunCharts { knn, steps }
}
