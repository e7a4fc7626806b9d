//! The chart functions: well-formed SVG documents holding the labels and as many marks (points,
//! bars) as the data asks for, and no panic on empty or non-finite input. Parse-free checks.
use ipirm::plot::{
    composition_svg, lines_svg, lines_with_references_svg, paper_table_svg, save_svg,
    training_curves_svg, CurvePoint, Reference,
};

fn assert_svg(svg: &str) {
    assert!(
        svg.starts_with("<svg"),
        "not an SVG document: {}",
        &svg[..svg.len().min(80)]
    );
    assert!(
        svg.trim_end().ends_with("</svg>"),
        "unterminated SVG document"
    );
}

fn count(svg: &str, needle: &str) -> usize {
    svg.matches(needle).count()
}

/// Bars and legend boxes in one of our palette's colours (`fill="#1F77B4"`, as plotters writes it).
fn fill(hex: &str) -> String {
    format!("fill=\"#{hex}\"")
}

/// The elements `tag` (`<circle`, `<polyline`) stroked in one of our palette's colours.
fn stroked(svg: &str, tag: &str, hex: &str) -> usize {
    let stroke = format!("stroke=\"#{hex}\"");
    svg.lines()
        .filter(|l| l.starts_with(tag) && l.contains(&stroke))
        .count()
}
const BLUE: &str = "1F77B4";
const ORANGE: &str = "FF7F0E";
const RED: &str = "D62728";
const GREY: &str = "969696";

fn curve(epochs: usize, contrastive: bool, penalty: bool) -> Vec<CurvePoint> {
    (0..epochs)
        .map(|e| CurvePoint {
            epoch: e + 1,
            loss: 5.0 - e as f64 * 0.3,
            contrastive: contrastive.then_some(4.5 - e as f64 * 0.3),
            penalty: penalty.then_some(0.01 / (e + 1) as f64),
        })
        .collect()
}

#[test]
fn training_curves_draw_one_marked_line_per_series() {
    let svg = training_curves_svg(&curve(7, true, true));
    assert_svg(&svg);
    for label in [
        "Training curves",
        "epoch",
        "loss",
        "contrastive",
        "penalty (right axis)",
    ] {
        assert!(svg.contains(label), "missing label {label:?}");
    }
    // Each series: its line, its legend line and one circle per epoch, in the series' colour.
    assert_eq!(count(&svg, "<circle"), 3 * 7);
    for colour in [BLUE, ORANGE, RED] {
        assert_eq!(
            stroked(&svg, "<polyline", colour),
            2,
            "line and legend of series {colour}"
        );
        assert_eq!(
            stroked(&svg, "<circle", colour),
            7,
            "points of series {colour}"
        );
    }
}

#[test]
fn training_curves_leave_out_series_never_recorded() {
    let svg = training_curves_svg(&curve(4, false, false));
    assert_svg(&svg);
    assert!(svg.contains("loss"));
    assert!(!svg.contains("contrastive") && !svg.contains("penalty"));
    assert_eq!(count(&svg, "<circle"), 4);
    assert_eq!(stroked(&svg, "<circle", BLUE), 4);
}

#[test]
fn training_curves_one_epoch_and_non_finite_values() {
    let mut points = curve(3, true, true);
    points[1].loss = f64::NAN;
    points[2].penalty = Some(f64::INFINITY);
    let svg = training_curves_svg(&points);
    assert_svg(&svg);
    assert_eq!(
        stroked(&svg, "<circle", BLUE),
        2,
        "the NaN loss is left out"
    );
    assert_eq!(
        stroked(&svg, "<circle", RED),
        2,
        "the infinite penalty is left out"
    );
    assert!(!svg.contains("NaN") && !svg.contains("inf"));

    let svg = training_curves_svg(&curve(1, false, false));
    assert_svg(&svg);
    assert_eq!(count(&svg, "<circle"), 1);
}

#[test]
fn training_curves_empty_says_no_data() {
    for points in [
        vec![],
        vec![CurvePoint {
            epoch: 0,
            loss: f64::NAN,
            contrastive: None,
            penalty: None,
        }],
    ] {
        let svg = training_curves_svg(&points);
        assert_svg(&svg);
        assert!(svg.contains("no data"));
    }
}

#[test]
fn reference_lines_are_dashed_in_their_series_colour() {
    let series = vec![
        ("top-1".to_string(), vec![(0, 50.0), (3, 60.0)]),
        ("top-5".to_string(), vec![(0, 80.0), (3, 90.0)]),
    ];
    let reference = |label: &str, value: f64, series: usize| Reference {
        label: label.into(),
        value,
        series,
    };
    let plain = lines_svg("kNN", "%", &series);
    let svg = lines_with_references_svg(
        "kNN",
        "%",
        &series,
        &[
            reference("raw pixels top-1", 77.0, 0),
            reference("nowhere", f64::NAN, 1),
        ],
    );
    assert_svg(&svg);
    assert!(svg.contains("raw pixels top-1") && !svg.contains("nowhere"));
    // The points are the series'; the reference adds dashes (and two in the legend) in blue only.
    assert_eq!(count(&svg, "<circle"), 4);
    let dashes = stroked(&svg, "<polyline", BLUE) - stroked(&plain, "<polyline", BLUE);
    assert!(dashes >= 4, "{dashes} blue segments more");
    assert_eq!(
        stroked(&svg, "<polyline", ORANGE),
        stroked(&plain, "<polyline", ORANGE)
    );
    // A chart of references alone has no data.
    let svg = lines_with_references_svg("kNN", "%", &[], &[reference("raw", 77.0, 0)]);
    assert!(svg.contains("no data"));
}

#[test]
fn composition_stacks_one_segment_per_nonzero_count() {
    let composition = vec![vec![10, 0, 5], vec![3, 4, 6]];
    let svg = composition_svg(&composition, Some(&["T-shirt", "Trouser", "Pullover"]));
    assert_svg(&svg);
    for label in [
        "Class composition",
        "images",
        "env 0 (15)",
        "env 1 (13)",
        "T-shirt",
        "Trouser",
        "Pullover",
    ] {
        assert!(svg.contains(label), "missing label {label:?}");
    }
    // Background + 5 non-zero segments + 3 legend boxes.
    assert_eq!(count(&svg, "<rect"), 1 + 5 + 3);
    assert_eq!(
        count(&svg, &fill(BLUE)),
        2 + 1,
        "class 0 in both environments, and its legend box"
    );
    assert_eq!(count(&svg, &fill(ORANGE)), 1 + 1, "class 1 only in env 1");
}

#[test]
fn composition_names_classes_by_default_and_takes_ragged_rows() {
    let svg = composition_svg(&[vec![1, 2], vec![3], vec![]], Some(&["only one name"]));
    assert_svg(&svg);
    assert!(svg.contains("only one name") && svg.contains("class 1"));
    assert!(svg.contains("env 2 (0)"));
    assert_eq!(count(&svg, "<rect"), 1 + 3 + 2);
    let svg = composition_svg(&[vec![1, 2]], None);
    assert!(svg.contains("class 0") && svg.contains("class 1"));
}

#[test]
fn composition_empty_says_no_data() {
    for composition in [vec![], vec![vec![]], vec![vec![0, 0], vec![0, 0]]] {
        let svg = composition_svg(&composition, None);
        assert_svg(&svg);
        assert!(svg.contains("no data"));
    }
}

#[test]
fn paper_table_draws_paper_and_ours_bars_with_values() {
    let rows = vec![
        ("stl10-ipirm".to_string(), 84.44, Some(81.2)),
        ("stl10-simclr".to_string(), 80.15, None),
        ("fmnist-ipirm-quick".to_string(), 90.0, Some(f64::NAN)),
    ];
    let svg = paper_table_svg(&rows);
    assert_svg(&svg);
    let runs = ["stl10-ipirm", "stl10-simclr", "fmnist-ipirm-quick"];
    let values = ["84.44", "81.20", "80.15", "90.00"];
    for label in ["paper vs ours", "top-1 (%)", "paper", "ours"]
        .iter()
        .chain(&runs)
        .chain(&values)
    {
        assert!(svg.contains(label), "missing label {label:?}");
    }
    assert_eq!(
        count(&svg, &fill(GREY)),
        3 + 1,
        "3 paper bars and a legend box"
    );
    assert_eq!(
        count(&svg, &fill(BLUE)),
        1 + 1,
        "1 finite 'ours' bar and a legend box"
    );
    assert_eq!(count(&svg, "<rect"), 1 + 4 + 2);
    assert!(!svg.contains("NaN"));
}

#[test]
fn paper_table_empty_says_no_data_and_escapes_names() {
    let svg = paper_table_svg(&[]);
    assert_svg(&svg);
    assert!(svg.contains("no data"));
    let svg = paper_table_svg(&[("a<b & c".to_string(), 50.0, Some(49.0))]);
    assert_svg(&svg);
    assert!(svg.contains("a&lt;b &amp; c"));
}

#[test]
fn save_svg_writes_the_document_and_names_the_path_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("charts/curves.svg");
    let svg = training_curves_svg(&curve(3, true, false));
    save_svg(&svg, &path).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), svg);

    let blocked = dir.path().join("charts/curves.svg/inside.svg");
    let err = save_svg(&svg, &blocked).unwrap_err().to_string();
    assert!(err.contains("curves.svg"), "{err}");
}

/// With `IPIRM_PLOT_DUMP=DIR`, writes one example of each chart to DIR to look at.
#[test]
fn dump_examples_when_asked() {
    let Some(dir) = std::env::var_os("IPIRM_PLOT_DUMP") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    save_svg(
        &training_curves_svg(&curve(20, true, true)),
        dir.join("curves.svg"),
    )
    .unwrap();
    let composition: Vec<Vec<i64>> = (0..2)
        .map(|e| {
            (0..10)
                .map(|c| 600 + 300 * ((c + 3 * e) % 4) as i64)
                .collect()
        })
        .collect();
    let names = [
        "T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
        "Boot",
    ];
    save_svg(
        &composition_svg(&composition, Some(&names)),
        dir.join("composition.svg"),
    )
    .unwrap();
    let rows = vec![
        ("stl10-ipirm".to_string(), 84.44, Some(81.2)),
        ("stl10-simclr".to_string(), 80.15, None),
        ("cifar100-ipirm".to_string(), 64.5, Some(60.0)),
    ];
    save_svg(&paper_table_svg(&rows), dir.join("paper.svg")).unwrap();
}
