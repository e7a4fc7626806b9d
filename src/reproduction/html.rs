//! `report.html`: the whole report as one self-contained page. The tables of `report.md`, the
//! store's comparisons, and per run its kNN over training, each maximize step's risk curve,
//! class composition and partition gallery; charts are inline SVG, images `data:` URIs, so the
//! page reads offline and travels as one file.
use super::compare::{Comparison, ARM_COLUMNS};
use super::{
    pct, progress, run_charts, safe, Galleries, Reproduction, RunGallery, RunSummary,
    StoreComparison,
};
use crate::data::classes;
use crate::html::{escape, inline_svg, table};
use crate::plot;

/// The page's style: readable tables, charts no wider than the page, image pixels kept sharp.
const STYLE: &str = "
body { font-family: sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.8em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure.chart { margin: 0.8em 0; }
figure.chart svg { max-width: 100%; height: auto; }
img.grid { image-rendering: pixelated; }
table.gallery td.env { min-width: 14em; }
div.mix { max-width: 34em; font-size: 0.9em; }
p.note { color: #8a4b00; }
small.run { color: #666; font-weight: normal; }
";

impl Reproduction {
    /// The report as one HTML page, with the partition `galleries`.
    pub fn html(&self, galleries: &Galleries) -> String {
        let mut s =
            String::from("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
        s += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n";
        s += "<title>IP-IRM: the reproduction beside the paper</title>\n";
        s += &format!("<style>{STYLE}</style>\n</head>\n<body>\n");
        s += "<h1>The reproduction beside the paper</h1>\n";
        s += &format!(
            "<p>Store <code>{}</code>, read by ipirm {}. Every number is read from the store's records; nothing was computed again.</p>\n",
            escape(&self.store),
            env!("CARGO_PKG_VERSION")
        );
        s += &self.contents();
        s += &self.paper_section();
        s += &self.others_section();
        s += &self.comparisons_section();
        for r in self.runs() {
            s += &run_section(r, galleries);
        }
        s += "</body>\n</html>\n";
        s
    }

    /// Links to the sections.
    fn contents(&self) -> String {
        let mut s = String::from("<nav><ul>\n<li><a href=\"#paper\">The paper's table</a></li>\n<li><a href=\"#others\">Other runs</a></li>\n<li><a href=\"#comparisons\">Comparisons</a></li>\n");
        for r in self.runs() {
            s += &format!(
                "<li><a href=\"#run-{}\">{}</a> <small>{}</small></li>\n",
                safe(&r.name),
                escape(&r.name),
                escape(&r.run)
            );
        }
        s += "</ul></nav>\n";
        s
    }

    fn paper_section(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .paper
            .iter()
            .map(|p| {
                let mut row = vec![
                    escape(&p.preset),
                    escape(&p.label),
                    format!("{:.2}", p.paper_top1),
                ];
                match &p.ours {
                    None => row.extend(
                        [escape(p.unmatched.as_deref().unwrap_or("no run"))]
                            .into_iter()
                            .chain(std::iter::repeat_n(String::new(), 6)),
                    ),
                    Some(r) => row.extend([
                        pct(r.linear, false),
                        p.difference()
                            .map_or_else(|| "-".into(), |d| format!("{d:+.2}")),
                        pct(r.knn, false),
                        pct(r.knn, true),
                        escape(&progress(r)),
                        escape(&r.device),
                        run_link(r),
                    ]),
                }
                row
            })
            .collect();
        let mut sources: Vec<&str> = self.paper.iter().map(|p| p.source.as_str()).collect();
        sources.dedup();
        let mut s = String::from("<section id=\"paper\">\n<h2>The paper's table</h2>\n");
        s += &table(
            &[
                "run (preset)",
                "paper",
                "paper top-1",
                "ours top-1",
                "difference",
                "kNN top-1",
                "kNN top-5",
                "epochs",
                "device",
                "run id",
            ],
            &rows,
        );
        s += &format!("<p>Sources: {}.</p>\n", escape(&sources.join("; ")));
        s += &inline_svg(&self.paper_chart());
        s += "</section>\n";
        s
    }

    fn others_section(&self) -> String {
        let mut s = String::from("<section id=\"others\">\n<h2>Other runs</h2>\n");
        if self.others.is_empty() {
            s += "<p>None.</p>\n";
        } else {
            let rows: Vec<Vec<String>> = self
                .others
                .iter()
                .map(|r| {
                    vec![
                        escape(&r.name),
                        escape(&r.dataset),
                        pct(r.linear, false),
                        pct(r.knn, false),
                        pct(r.knn, true),
                        pct(r.raw_pixels_knn, false),
                        pct(r.init_knn, false),
                        escape(&progress(r)),
                        escape(&r.device),
                        run_link(r),
                    ]
                })
                .collect();
            s += &table(
                &[
                    "run name",
                    "dataset",
                    "linear top-1",
                    "kNN top-1",
                    "kNN top-5",
                    "raw pixels kNN",
                    "initial encoder kNN",
                    "epochs",
                    "device",
                    "run id",
                ],
                &rows,
            );
        }
        s += "</section>\n";
        s
    }

    fn comparisons_section(&self) -> String {
        let mut s = String::from("<section id=\"comparisons\">\n<h2>Comparisons</h2>\n");
        if self.comparisons.is_empty() {
            s += "<p>None yet: an arm is a run name with finished runs of at least two seeds (<code>ipirm run --seeds N --name ARM</code>).</p>\n";
        }
        for c in &self.comparisons {
            s += &comparison_html(c);
        }
        s += "</section>\n";
        s
    }
}

/// A run id linking to the run's section.
fn run_link(r: &RunSummary) -> String {
    format!("<a href=\"#run-{}\">{}</a>", safe(&r.name), escape(&r.run))
}

/// One dataset's arms: their means and intervals, differences, the settings that differ, chart.
fn comparison_html(sc: &StoreComparison) -> String {
    let mut s = format!(
        "<h3>{}: {}</h3>\n",
        escape(&sc.dataset),
        escape(&sc.arms.join(", "))
    );
    let Some(c) = &sc.comparison else {
        let why = sc.problem.as_deref().unwrap_or("no comparison");
        return s + &format!("<p class=\"note\">Not compared: {}</p>\n", escape(why));
    };
    s += "<p>Per arm: mean ± standard deviation [95 % t interval] over its runs, one per seed.</p>\n";
    let rows: Vec<Vec<String>> = c
        .arms
        .iter()
        .map(|a| a.cells().iter().map(|cell| escape(cell)).collect())
        .collect();
    s += &table(&ARM_COLUMNS, &rows);
    for a in c.arms.iter().filter(|a| !a.inconsistent.is_empty()) {
        let keys: Vec<String> = a.inconsistent.iter().map(|d| escape(&d.key)).collect();
        s += &format!(
            "<p class=\"note\">(!) the runs of <code>{}</code> differ in more than the seed: {}</p>\n",
            escape(&a.label),
            keys.join(", ")
        );
    }
    for n in &c.notes {
        s += &format!("<p class=\"note\">(!) {}</p>\n", escape(n));
    }
    s += &differences_html(c);
    s += &inline_svg(&c.chart());
    s
}

/// Second arm − first per metric, and the settings that differ between the arms.
fn differences_html(c: &Comparison) -> String {
    let mut s = String::new();
    if !c.differences.is_empty() {
        s += &format!(
            "<h4><code>{}</code> − <code>{}</code></h4>\n",
            escape(&c.arms[1].label),
            escape(&c.arms[0].label)
        );
        let rows: Vec<Vec<String>> = c
            .differences
            .iter()
            .map(|d| {
                vec![
                    escape(&d.metric),
                    format!("{:+.2}", d.mean),
                    d.ci95
                        .map_or_else(|| "-".into(), |(l, h)| format!("[{l:+.2}, {h:+.2}]")),
                    escape(&d.form),
                ]
            })
            .collect();
        s += &table(&["metric", "difference", "95 % interval", "form"], &rows);
    }
    if c.arms.len() > 1 {
        s += "<h4>Settings that differ</h4>\n";
        if c.settings.is_empty() {
            s += "<p>None besides the seed.</p>\n";
        } else {
            let mut headers = vec!["setting"];
            headers.extend(c.arms.iter().map(|a| a.label.as_str()));
            let rows: Vec<Vec<String>> = c
                .settings
                .iter()
                .map(|d| {
                    std::iter::once(format!("<code>{}</code>", escape(&d.key)))
                        .chain(d.values.iter().map(|v| escape(v)))
                        .collect()
                })
                .collect();
            s += &table(&headers, &rows);
        }
    }
    s
}

/// One run: what it is, its kNN over training, and each maximize step with its gallery.
fn run_section(r: &RunSummary, galleries: &Galleries) -> String {
    let mut s = format!(
        "<section id=\"run-{}\">\n<h2>{} <small class=\"run\">{}</small></h2>\n",
        safe(&r.name),
        escape(&r.name),
        escape(&r.run)
    );
    s += &format!(
        "<p>{} · epochs {} · {} · linear top-1 {} · kNN top-1 {} (raw pixels {}, at initialisation {})</p>\n",
        escape(&r.dataset),
        escape(&progress(r)),
        escape(&r.device),
        pct(r.linear, false),
        pct(r.knn, false),
        pct(r.raw_pixels_knn, false),
        pct(r.init_knn, false),
    );
    let charts = run_charts(r);
    s += "<h3>kNN over training</h3>\n";
    match charts.knn {
        Some(svg) => s += &inline_svg(&svg),
        None => s += "<p>No kNN point stored yet.</p>\n",
    }
    if r.partitions.is_empty() {
        return s + "</section>\n";
    }
    let names = classes::names_of(&r.dataset);
    let gallery = galleries.runs.get(&r.run);
    match gallery {
        Some(RunGallery::Unavailable(why)) => {
            s += &format!(
                "<p class=\"note\">The partition gallery is left out: the run's images are not at hand ({}).</p>\n",
                escape(why)
            )
        }
        None if galleries.options.size == 0 => {
            s += "<p>The partition gallery is off (<code>--gallery-size 0</code>).</p>\n"
        }
        _ => {}
    }
    for (p, step) in r.partitions.iter().zip(&charts.steps) {
        s += &format!(
            "<h3>Maximize step after epoch {}</h3>\n<p>{} maximize epochs, best at {}; environment sizes {:?}.</p>\n",
            p.after_epoch,
            p.risks.len(),
            p.best_epoch,
            p.env_sizes
        );
        s += &inline_svg(&step.risk);
        let found = match gallery {
            Some(RunGallery::Steps(steps)) => steps.iter().find(|g| g.after_epoch == p.after_epoch),
            _ => None,
        };
        // The composition from the run's report, else (a run not finished) from its images.
        match (&step.composition, found) {
            (Some(c), _) => s += &inline_svg(c),
            (None, Some(g)) => {
                let labelled: Vec<Vec<i64>> = g
                    .envs
                    .iter()
                    .map(|e| e.classes[..e.classes.len().saturating_sub(1)].to_vec())
                    .collect();
                s += &inline_svg(&plot::composition_svg(&labelled, Some(names)));
            }
            (None, None) => {}
        }
        match found {
            Some(g) => {
                s += &format!(
                    "<h4>Partition gallery</h4>\n<p>Per environment its {} most confident members (highest assignment probability) and {} drawn at random (seed {}), with the classes among them.</p>\n",
                    galleries.options.size, galleries.options.size, galleries.options.seed
                );
                s += &g.html(names);
            }
            // Without images, what each environment holds in numbers.
            None => {
                for (e, row) in p.composition.iter().flatten().enumerate() {
                    s += &format!(
                        "<p>env {e}: {}</p>\n",
                        escape(&classes::composition_mix(row, names, 10))
                    );
                }
            }
        }
    }
    s + "</section>\n"
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::gallery::{EnvGallery, GalleryOptions, Grid, StepGallery};
    use crate::reproduction::PartitionView;

    /// A run stopped after its first maximize step: no report, so no composition of its own.
    fn stopped() -> RunSummary {
        RunSummary {
            run: "r-1".into(),
            name: "stopped <run>".into(),
            dataset: "fashion-mnist".into(),
            finished: false,
            epochs_done: 1,
            epochs_planned: 3,
            device: "cpu".into(),
            linear: None,
            linear_best: None,
            knn: None,
            knn_curve: Vec::new(),
            raw_pixels_knn: None,
            init_knn: None,
            partitions: vec![PartitionView {
                after_epoch: 0,
                best_epoch: 0,
                env_sizes: vec![2, 0],
                risks: Vec::new(),
                composition: None,
            }],
        }
    }

    fn page(galleries: &Galleries) -> String {
        Reproduction {
            store: "s".into(),
            paper: Vec::new(),
            others: vec![stopped()],
            comparisons: Vec::new(),
        }
        .html(galleries)
    }

    #[test]
    fn a_stopped_run_takes_its_composition_from_its_gallery() {
        let grid = |indices: Vec<i64>| Grid {
            indices,
            classes: vec![0; 11],
            png: Vec::new(),
        };
        let env = |e: usize, classes: Vec<i64>| EnvGallery {
            env: e,
            members: classes.iter().sum(),
            classes,
            confident: grid(Vec::new()),
            confidence: Vec::new(),
            sample: grid(Vec::new()),
        };
        let step = StepGallery {
            after_epoch: 0,
            columns: 8,
            scale: 2,
            envs: vec![
                env(0, vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0]),
                env(1, vec![0; 11]),
            ],
        };
        let galleries = Galleries {
            options: GalleryOptions::default(),
            runs: BTreeMap::from([("r-1".to_string(), RunGallery::Steps(vec![step]))]),
        };
        let html = page(&galleries);
        assert!(html.contains("Class composition of each environment"));
        assert!(html.contains("Sandal 1, Ankle boot 1"), "{html}");
        assert!(
            html.contains("<h2>stopped &lt;run&gt; "),
            "names are escaped"
        );
        assert!(html.contains("No kNN point stored yet."));

        // Without the data: said, and no composition to show.
        let galleries = Galleries {
            options: GalleryOptions::default(),
            runs: BTreeMap::from([(
                "r-1".to_string(),
                RunGallery::Unavailable("no such folder".into()),
            )]),
        };
        let html = page(&galleries);
        assert!(html.contains("left out: the run's images are not at hand (no such folder)"));
        assert!(!html.contains("Class composition of each environment"));
    }
}
