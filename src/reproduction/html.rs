//! `report.html`: the whole report as one self-contained page. The tables of `report.md`, the
//! store's comparisons, and per run its kNN over training, each maximize step's risk curve,
//! class composition and partition gallery; charts are inline SVG, images `data:` URIs, so the
//! page reads offline and travels as one file.
use super::{
    pct, progress, run_charts, safe, Galleries, Reproduction, RunGallery, RunSummary,
    StoreComparison,
};
use crate::compare::{fmt_summary, Comparison};
use crate::data::classes;
use crate::html::{escape, inline_svg, table};

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
                        ["no run".to_string()]
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
        .map(|a| {
            let m = |k: &str| escape(&fmt_summary(a.metrics.get(k).unwrap_or(&None)));
            let seeds: Vec<String> = a.runs.iter().map(|(_, s)| s.to_string()).collect();
            let flag = if a.inconsistent.is_empty() {
                ""
            } else {
                " (!)"
            };
            vec![
                format!("{}{flag}", escape(&a.label)),
                a.runs.len().to_string(),
                seeds.join(", "),
                m("linear_top1"),
                m("knn_top1"),
                m("knn_top5"),
                m("raw_pixels_knn_top1"),
                m("init_knn_top1"),
                a.paper_top1
                    .map_or_else(|| "-".into(), |p| format!("{p:.2}")),
            ]
        })
        .collect();
    s += &table(
        &[
            "arm",
            "n",
            "seeds",
            "linear top-1",
            "kNN top-1",
            "kNN top-5",
            "raw pixels kNN top-1",
            "initialisation kNN top-1",
            "paper",
        ],
        &rows,
    );
    for a in c.arms.iter().filter(|a| !a.inconsistent.is_empty()) {
        let keys: Vec<String> = a.inconsistent.iter().map(|d| escape(&d.key)).collect();
        s += &format!(
            "<p class=\"note\">(!) the runs of <code>{}</code> differ in more than the seed: {}</p>\n",
            escape(&a.label),
            keys.join(", ")
        );
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
        if let Some(c) = &step.composition {
            s += &inline_svg(c);
        }
        let found = match gallery {
            Some(RunGallery::Steps(steps)) => steps.iter().find(|g| g.after_epoch == p.after_epoch),
            _ => None,
        };
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
