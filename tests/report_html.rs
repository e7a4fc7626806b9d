//! `ipirm report --out` through the binary on tiny Fashion-MNIST runs: `report.html` holds the
//! paper table, every run, an inline chart per maximize step and the partition gallery, whose
//! images (decoded from their `data:` URIs) are the dataset's images at the indices stored
//! beside them, the most confident members of each environment by the stored partition; class
//! names; the kNN over training from epoch 0; an empty store, and a store whose dataset folder
//! is gone or changed, report without failing.
use std::collections::BTreeSet;
use std::path::Path;

use base64::Engine;
use ipirm::gallery::{step_gallery, GalleryOptions};
use ipirm::replay::RunView;
use ipirm::store::Store;
use tch::Kind;

mod common;
use common::run::{ipirm, ipirm_env, ok, tiny_run, with};

/// The value of attribute `name` in the tag `tag` (`name="…"`).
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    tag[start..].split('"').next()
}

/// Every `<img …>` tag of a page.
fn img_tags(html: &str) -> Vec<&str> {
    html.match_indices("<img ")
        .map(|(i, _)| &html[i..i + html[i..].find('>').unwrap()])
        .collect()
}

/// A greyscale PNG: (width, pixels row by row).
fn decode_grey(png_bytes: &[u8]) -> (usize, Vec<u8>) {
    let decoder = png::Decoder::new(png_bytes);
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Grayscale);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    buf.truncate(info.buffer_size());
    (info.width as usize, buf)
}

/// `text` as an SVG `<text>` element holds it (plotters writes it on a line of its own).
fn svg_text(text: &str) -> String {
    format!(">\n{text}\n<")
}

/// The SVG chart of the page whose title is `title`.
fn chart<'a>(html: &'a str, title: &str) -> &'a str {
    let at = html
        .find(&svg_text(title))
        .unwrap_or_else(|| panic!("no chart `{title}`"));
    let start = html[..at].rfind("<svg").unwrap();
    let end = at + html[at..].find("</svg>").unwrap();
    &html[start..end]
}

/// `ipirm report --out OUT`: its output and the page.
fn report(store: &Path, out: &Path) -> (String, String) {
    let text = ok(store, &["report"], &[format!("--out={}", out.display())]);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    (text, html)
}

#[test]
fn the_page_holds_the_tables_every_run_a_chart_per_step_and_the_dataset_images() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let args = tiny_run(tmp.path());
    // One run with the kNN monitor after every epoch, then one without it (its training a
    // cache hit: the monitor runs only on epochs trained).
    ok(
        &store,
        &["run"],
        &with(&args, &["--name=monitored", "--set=train.knn_every=1"]),
    );
    let printed = ok(&store, &["run"], &args);
    // The main job's printout names the classes of each environment.
    assert!(
        printed.contains("  env 0 (") && printed.contains("T-shirt/top"),
        "{printed}"
    );

    let out = tmp.path().join("report");
    let (_, html) = report(&store, &out);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert!(out.join("report.md").is_file());
    // Self-contained: no script, no style sheet or image from elsewhere.
    for absent in ["<script", "<link", "src=\"http", "src=\"file", "url("] {
        assert!(!html.contains(absent), "{absent}");
    }

    // The paper table, with every preset that has a published number.
    assert!(html.contains("The paper's table"));
    for preset in ["stl10-ipirm", "stl10-ipirm-mixup", "stl10-simclr"] {
        assert!(html.contains(&format!("<td>{preset}</td>")), "{preset}");
    }
    assert!(html.contains("84.44") && html.contains(&svg_text("Top-1 accuracy: paper vs ours")));

    let runs = json["others"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    let opened = Store::open(&store).unwrap();
    let mut grids = 0;
    for run in runs {
        let (id, name) = (run["run"].as_str().unwrap(), run["name"].as_str().unwrap());
        assert!(html.contains(&format!("id=\"run-{name}\"")), "{name}");
        assert!(html.contains(id), "{id}");

        // kNN over training from the initialisation, with the raw-pixel kNN beneath.
        let epochs: Vec<u64> = run["knn_curve"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[0].as_u64().unwrap())
            .collect();
        let expected: Vec<u64> = if name == "monitored" {
            vec![0, 1, 2, 3]
        } else {
            vec![0, 3]
        };
        assert_eq!(epochs, expected, "{name}");
        let knn = chart(&html, &format!("kNN of {name} over training"));
        assert_eq!(
            knn.matches("<circle").count(),
            2 * expected.len(),
            "{name}: a point per epoch of top-1 and top-5"
        );
        assert!(knn.contains(&svg_text("raw pixels top-1")), "{name}");
        assert_eq!(
            run["init_knn"]["top1"], run["knn_curve"][0][1]["top1"],
            "{name}: epoch 0 is the encoder at initialisation"
        );

        // A risk chart and a class composition with Fashion-MNIST's names per maximize step.
        let partitions = run["partitions"].as_array().unwrap();
        assert_eq!(partitions.len(), 3, "{name}: a step after epochs 0, 1, 2");
        for p in partitions {
            let e = p["after_epoch"].as_u64().unwrap();
            let best = p["best_epoch"].as_u64().unwrap();
            chart(
                &html,
                &format!("{name}: maximize step after epoch {e} (best at {best})"),
            );
        }

        // The gallery: each environment's most confident members by the stored partition.
        let view = RunView::open(&opened, id).unwrap();
        let stored = view.partitions(&opened).unwrap();
        let steps = json["galleries"]["runs"][id]["steps"].as_array().unwrap();
        assert_eq!(steps.len(), stored.len());
        for (step, p) in steps.iter().zip(&stored) {
            assert_eq!(
                step["after_epoch"].as_u64().unwrap() as usize,
                p.after_epoch
            );
            let probs = p.partition.softmax(1, Kind::Float);
            let assign = Vec::<i64>::try_from(probs.argmax(1, false)).unwrap();
            for env in step["envs"].as_array().unwrap() {
                let e = env["env"].as_u64().unwrap() as i64;
                let p_e = Vec::<f32>::try_from(probs.select(1, e)).unwrap();
                let members: Vec<usize> = (0..assign.len()).filter(|&i| assign[i] == e).collect();
                let ids = |grid: &str| -> Vec<usize> {
                    env[grid]["indices"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|i| i.as_u64().unwrap() as usize)
                        .collect()
                };
                let (confident, sample) = (ids("confident"), ids("sample"));
                let k = 16.min(members.len());
                assert_eq!((confident.len(), sample.len()), (k, k));
                assert!(confident.iter().chain(&sample).all(|i| assign[*i] == e));
                assert_eq!(sample.iter().collect::<BTreeSet<_>>().len(), k);
                // No member left out is more confident than the least confident shown.
                let least = confident.iter().map(|&i| p_e[i]).fold(f32::MAX, f32::min);
                assert!(members
                    .iter()
                    .filter(|i| !confident.contains(i))
                    .all(|&i| p_e[i] <= least));
                assert!(confident.windows(2).all(|w| p_e[w[0]] >= p_e[w[1]]));
                // The classes beside them: labels cycle through 0..10 in the tiny folder.
                for grid in ["confident", "sample"] {
                    let mut counts = vec![0u64; 11];
                    ids(grid).iter().for_each(|i| counts[i % 10] += 1);
                    let stored: Vec<u64> = env[grid]["classes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|c| c.as_u64().unwrap())
                        .collect();
                    assert_eq!(stored, counts);
                }
                grids += 2;
            }
        }

        // What notebook 02 calls gives the report's gallery.
        let data = view.data(&opened).unwrap();
        let last = stored.last().unwrap();
        let g = step_gallery(
            &last.partition,
            last.after_epoch,
            &data.train,
            &GalleryOptions::default(),
        )
        .unwrap();
        let names = view.cfg.data.dataset.class_names();
        assert!(
            ipirm::data::classes::composition_mix(&g.envs[0].classes, names, 10)
                .contains("T-shirt/top")
        );
        let fragment = g.html(names);
        assert!(html.contains(&fragment), "{name}: the notebook's gallery");
        ipirm::plot::show_html(&fragment);
    }

    assert_eq!(
        html.matches(&svg_text("Class composition of each environment"))
            .count(),
        6
    );
    // Every gallery image is the dataset's images at its stored indices, and a PNG file too.
    let tags = img_tags(&html);
    assert_eq!(tags.len(), grids);
    let files: BTreeSet<Vec<u8>> = common::files_under(&out.join("gallery"))
        .iter()
        .map(|f| std::fs::read(f).unwrap())
        .collect();
    for tag in tags {
        let uri = attr(tag, "src").unwrap();
        let png = base64::engine::general_purpose::STANDARD
            .decode(uri.strip_prefix("data:image/png;base64,").unwrap())
            .unwrap();
        assert!(files.contains(&png), "the PNG file of {tag:.80}");
        let indices: Vec<usize> = attr(tag, "data-indices")
            .unwrap()
            .split(',')
            .map(|i| i.parse().unwrap())
            .collect();
        let cols: usize = attr(tag, "data-columns").unwrap().parse().unwrap();
        let scale: usize = attr(tag, "data-scale").unwrap().parse().unwrap();
        assert_eq!(scale, 2, "28-pixel images are drawn twice as large");
        let (width, pixels) = decode_grey(&png);
        let cell = 28 * scale + 2;
        assert_eq!(width, cols.min(indices.len()) * cell + 2);
        for (k, &i) in indices.iter().enumerate() {
            let (ox, oy) = (2 + (k % cols) * cell, 2 + (k / cols) * cell);
            for y in 0..28 * scale {
                for x in 0..28 * scale {
                    assert_eq!(
                        pixels[(oy + y) * width + ox + x],
                        common::pattern(i, 0, y / scale, x / scale),
                        "image {i} at ({y}, {x})"
                    );
                }
            }
        }
    }
    // Fashion-MNIST's classes by name, in the composition charts and the class mixes.
    for class in ["T-shirt/top", "Trouser", "Ankle boot"] {
        assert!(html.contains(class), "{class}");
    }
}

#[test]
fn an_empty_store_reports_the_paper_table_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, store, scratch) = (
        tmp.path().join("report"),
        tmp.path().join("store"),
        tmp.path().join("scratch"),
    );
    std::fs::create_dir(&scratch).unwrap();
    let tmpdir = [("TMPDIR", scratch.to_str().unwrap())];
    // No store at --store yet: a note, the paper's table alone, and nothing made at --store
    // (nor left in the temp folder), with or without a gate that fails.
    let (success, text) = ipirm_env(
        &store,
        &["report"],
        &[format!("--out={}", out.display())],
        &tmpdir,
    );
    assert!(success, "{text}");
    assert!(text.contains("note: no artifact store at"), "{text}");
    // Every form names the folder asked for, not the empty store read in its place.
    let named = format!("{} (no store there yet)", store.display());
    assert!(text.contains(&named), "{text}");
    for file in ["report.md", "report.html", "report.json"] {
        let written = std::fs::read_to_string(out.join(file)).unwrap();
        assert!(
            written.contains(&named) && !written.contains("ipirm-empty-store"),
            "{file}"
        );
    }
    // (--check without a file, as the README writes it: the paper's rows alone.)
    let (success, text) = ipirm_env(&store, &["report", "--check"], &[], &tmpdir);
    assert!(success && text.contains("check passed"), "{text}");
    let (success, text) = ipirm_env(
        &store,
        &["report", "--check", "--require-all"],
        &[],
        &tmpdir,
    );
    let failed = "paper `stl10-ipirm` linear_top1: no finished run (--require-all)";
    assert!(!success && text.contains(failed), "{text}");
    assert!(!store.exists());
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("The paper's table") && html.contains("<td>no run</td>"));
    assert!(html.contains("<h2>Other runs</h2>\n<p>None.</p>"));
    assert!(html.contains("None yet: an arm is"));
    assert!(img_tags(&html).is_empty());
    assert!(out.join("report.md").is_file() && out.join("report.json").is_file());
}

#[test]
fn without_its_dataset_a_run_is_reported_without_its_gallery() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    ok(&store, &["run"], &tiny_run(tmp.path()));
    let data = tmp.path().join("data");

    // The folder is gone: the page says so, and still has the run's tables and charts.
    std::fs::remove_dir_all(&data).unwrap();
    let (text, html) = report(&store, &tmp.path().join("gone"));
    assert!(text.contains("no partition gallery for run"), "{text}");
    assert!(
        html.contains("The partition gallery is left out: the run's images are not at hand")
            && html.contains(&data.display().to_string()),
        "{html}"
    );
    assert!(img_tags(&html).is_empty());
    assert!(html.contains(">\nfmnist-ipirm-quick: maximize step after epoch 0 (best at"));
    assert!(html.contains(&svg_text("kNN of fmnist-ipirm-quick over training")));

    // Other images in its place (one more training image): not the run's, so no gallery either.
    common::fashion_folder(&data, 65, 32);
    let (text, html) = report(&store, &tmp.path().join("changed"));
    assert!(text.contains("other images"), "{text}");
    assert!(img_tags(&html).is_empty());

    // --gallery-size 0 turns it off without reading the data.
    let (success, text) = ipirm(
        &store,
        &["report"],
        &[
            format!("--out={}", tmp.path().join("off").display()),
            "--gallery-size=0".into(),
        ],
    );
    assert!(success && !text.contains("no partition gallery"), "{text}");
}

/// Runs whose names differ only by `.` and `_` get files and page sections of their own (their
/// charts and galleries overwrote each other, and both contents links led to the first).
#[test]
fn runs_named_apart_by_a_dot_and_an_underscore_keep_their_own_files() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let args = tiny_run(tmp.path());
    for name in ["lr.3", "lr_3"] {
        ok(&store, &["run"], &with(&args, &[&format!("--name={name}")]));
    }
    let out = tmp.path().join("report");
    let (text, html) = report(&store, &out);
    let wrote: usize = (text.lines())
        .find_map(|l| l.strip_prefix("wrote "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no file count in {text}"));
    let on_disk = walkdir::WalkDir::new(&out)
        .into_iter()
        .filter(|e| e.as_ref().unwrap().file_type().is_file())
        .count();
    assert_eq!(wrote, on_disk, "{text}");
    for name in ["lr.3", "lr_3"] {
        assert_eq!(
            html.matches(&format!("id=\"run-{name}\"")).count(),
            1,
            "{name}"
        );
        assert!(out.join(format!("knn_{name}.svg")).is_file(), "{name}");
    }
}

/// A run named after a paper preset on another dataset is not that row's reproduction: the row
/// says so, the run is among the other runs, and the gate counts no value for the row (it
/// passed a Fashion-MNIST run named `stl10-ipirm` against the paper's STL-10 number). A finished
/// run without a metric is named as such by the gate, not as "no finished run".
#[test]
fn a_paper_name_on_another_dataset_and_a_run_without_a_metric_are_said_as_such() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let args = tiny_run(tmp.path());
    ok(&store, &["run"], &with(&args, &["--name=stl10-ipirm"]));
    ok(
        &store,
        &["run"],
        &with(&args, &["--name=no-probe", "--set=linear.epochs=0"]),
    );
    let out = tmp.path().join("report");
    let (_, html) = report(&store, &out);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let row = (json["paper"].as_array().unwrap().iter())
        .find(|p| p["preset"] == "stl10-ipirm")
        .unwrap();
    assert!(row["ours"].is_null(), "{row}");
    let unmatched = row["unmatched"].as_str().unwrap();
    assert!(unmatched.contains("is on fashion-mnist"), "{unmatched}");
    assert!(html.contains("no run on its dataset"));
    let others: Vec<&str> = (json["others"].as_array().unwrap().iter())
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(others.contains(&"stl10-ipirm"), "{others:?}");

    let file = tmp.path().join("expect.toml");
    std::fs::write(
        &file,
        "[paper_tolerance]\nstl10-ipirm = 90\n\n[[expect]]\nrun = \"no-probe\"\nmetric = \"linear_top1\"\nvalue = 50\ntolerance = 50\n",
    )
    .unwrap();
    let (success, text) = ipirm(
        &store,
        &["report", &format!("--check={}", file.display())],
        &[],
    );
    assert!(!success, "{text}");
    let lines = [
        "paper stl10-ipirm linear_top1: ours its runs are on fashion-mnist, not the paper's dataset",
        "- expect `no-probe` linear_top1: its finished runs have no linear_top1 (the expectations file names it)",
    ];
    for line in lines {
        assert!(text.contains(line), "{line}\n{text}");
    }
    assert!(text.contains("check failed: 1 of"), "{text}");
}

/// A finished run whose first checkpoint's file is gone still reports, its kNN curve from the
/// initialisation included: the epoch of a checkpoint comes from its index entry. (The report
/// read each checkpoint's file header and failed with the OS error, and a rerun does not
/// recompute a checkpoint it does not need.)
#[test]
fn a_run_reports_without_its_first_checkpoint_file() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    ok(&store, &["run"], &tiny_run(tmp.path()));
    let shown = ok(
        &store,
        &["store", "show", "fmnist-ipirm-quick", "--json"],
        &[],
    );
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    let init = (shown["artifact_details"].as_array().unwrap().iter())
        .find(|a| {
            a["stage"] == "checkpoint" && !a["config_json"].as_str().unwrap().contains("epoch")
        })
        .expect("the initialisation's checkpoint");
    std::fs::remove_file(init["file"].as_str().unwrap()).unwrap();
    let out = tmp.path().join("report");
    report(&store, &out);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let curve = json["others"][0]["knn_curve"].as_array().unwrap();
    assert_eq!(curve[0][0], 0, "{curve:?}");
}
