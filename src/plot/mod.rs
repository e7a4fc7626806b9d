//! Charts for the notebooks and reports, drawn with `plotters` as SVG text.
//!
//! Each chart function returns a whole SVG document as a `String`; [`show_svg`] displays one inline
//! in an evcxr (Rust Jupyter) notebook and [`save_svg`] writes one to a file. Text stays SVG
//! `<text>` (the browser picks the font), so no font files or font crates are needed. Empty input
//! gives a chart that says "no data" rather than a panic, and non-finite values are left out.
use std::path::Path;

use plotters::coord::combinators::WithKeyPoints;
use plotters::coord::types::{RangedCoordf64, RangedCoordi32};
use plotters::coord::Shift;
use plotters::prelude::*;

mod arms;
mod bars;
mod curves;
mod images;

pub use arms::{arm_intervals_svg, ArmInterval};
pub use bars::{composition_svg, paper_table_svg};
pub use curves::{lines_svg, lines_with_references_svg, training_curves_svg, Reference, Series};
pub use images::{image_grid_png, show_png};

/// One epoch of a training run, as [`training_curves_svg`] draws it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurvePoint {
    pub epoch: usize,
    /// The total training loss.
    pub loss: f64,
    /// The contrastive (SimCLR) part of the loss, where recorded.
    pub contrastive: Option<f64>,
    /// The IRM penalty, where recorded; drawn against its own (right-hand) axis.
    pub penalty: Option<f64>,
}

/// Displays an SVG document inline in an evcxr notebook (evcxr's rich-output protocol on
/// stdout). Outside a notebook it just prints the markers and the document. A cell keeps one
/// output per kind, its last: show several charts of one cell with [`show_svgs`].
pub fn show_svg(svg: &str) {
    println!("EVCXR_BEGIN_CONTENT image/svg+xml\n{svg}\nEVCXR_END_CONTENT");
}

/// Displays several SVG documents as one output of an evcxr cell, one below the other (an HTML
/// output holding each inline).
pub fn show_svgs<S: AsRef<str>>(svgs: &[S]) {
    let body: String = svgs
        .iter()
        .map(|s| format!("<div>{}</div>\n", strip_xml_declaration(s.as_ref())))
        .collect();
    println!("EVCXR_BEGIN_CONTENT text/html\n{body}EVCXR_END_CONTENT");
}

/// Displays an HTML fragment as the output of an evcxr cell (a [`crate::gallery`] table).
pub fn show_html(html: &str) {
    println!("EVCXR_BEGIN_CONTENT text/html\n{html}\nEVCXR_END_CONTENT");
}

/// An SVG document as an HTML fragment: without a leading `<?xml …?>` declaration.
fn strip_xml_declaration(svg: &str) -> &str {
    match svg.trim_start().strip_prefix("<?xml") {
        Some(rest) => rest
            .split_once("?>")
            .map_or(svg, |(_, body)| body.trim_start()),
        None => svg,
    }
}

/// Writes an SVG document to `path`, creating its parent folders.
pub fn save_svg(svg: &str, path: impl AsRef<Path>) -> crate::Result<()> {
    let path = path.as_ref();
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| crate::Error::io(parent, e))?;
    }
    std::fs::write(path, svg).map_err(|e| crate::Error::io(path, e))
}

/// The ten "tableau" colours; series and classes take them in turn.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

const FONT: &str = "sans-serif";
/// Width of the legend panel right of the plot.
const LEGEND_W: u32 = 170;

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type DrawResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Width of one category (an environment, a run, an arm) on a [`slotted_chart`]'s x axis; integer
/// coordinates, since plotters formats labels for custom key points only on integer axes.
const SLOT: i32 = 100;

type SlottedChart<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<WithKeyPoints<RangedCoordi32>, RangedCoordf64>>;

/// A chart titled `title` of `slots` categories along x, [`SLOT`] wide each and named under its
/// centre by `name` (of the category's index), and of `y` up the side, described by `y_desc`
/// and labelled with `decimals` decimals in a margin `y_width` wide: its mesh drawn.
fn slotted_chart<'a, 'b>(
    plot: &'a Area<'b>,
    title: &str,
    slots: usize,
    name: &dyn Fn(usize) -> String,
    y: std::ops::Range<f64>,
    (y_desc, decimals, y_width): (&str, usize, u32),
) -> Result<SlottedChart<'a, 'b>, Box<dyn std::error::Error + Send + Sync>> {
    let centres = (0..slots as i32).map(|i| i * SLOT + SLOT / 2).collect();
    let mut chart = ChartBuilder::on(plot)
        .caption(title, (FONT, 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(y_width)
        .build_cartesian_2d((0..slots as i32 * SLOT).with_key_points(centres), y)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&|x| name((x / SLOT) as usize))
        .y_label_formatter(&|v| format!("{v:.decimals$}"))
        .y_desc(y_desc)
        .label_style((FONT, 13))
        .draw()?;
    Ok(chart)
}

/// Draws into a fresh SVG document of `size` pixels. Drawing into a string does not fail in
/// practice; if it ever does, the document says why instead of the caller panicking.
fn render(size: (u32, u32), draw: impl FnOnce(&Area) -> DrawResult) -> String {
    let mut svg = String::new();
    let result = {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        let result = root
            .fill(&WHITE)
            .map_err(Into::into)
            .and_then(|_| draw(&root));
        result.and_then(|_| root.present().map_err(Into::into))
    };
    match result {
        Ok(()) => svg,
        Err(e) => message_svg(size, "chart error", &e.to_string()),
    }
}

/// A document holding only a title and one line of text (empty input, drawing errors).
fn message_svg(size: (u32, u32), title: &str, message: &str) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        let _ = root.fill(&WHITE);
        let _ = root.draw(&Text::new(
            title.to_string(),
            (20, 20),
            (FONT, 20).into_font(),
        ));
        let grey = BLACK.mix(0.6);
        let style = TextStyle::from((FONT, 16).into_font()).color(&grey).pos(
            plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Center,
                plotters::style::text_anchor::VPos::Center,
            ),
        );
        let _ = root.draw(&Text::new(
            message.to_string(),
            (size.0 as i32 / 2, size.1 as i32 / 2),
            style,
        ));
        let _ = root.present();
    }
    svg
}

/// How a legend entry is marked: a short line (a curve), a dashed one (a reference line) or a
/// filled box (a bar).
#[derive(Clone, Copy)]
enum Mark {
    Line,
    Dashed,
    Box,
}

/// Draws a legend, one entry per row, into `area` (the panel right of the plot).
fn legend(area: &Area, entries: &[(String, RGBColor, Mark)]) -> DrawResult {
    for (i, (name, color, mark)) in entries.iter().enumerate() {
        let y = 50 + 22 * i as i32;
        match mark {
            Mark::Line => area.draw(&PathElement::new(
                vec![(8, y), (28, y)],
                color.stroke_width(2),
            ))?,
            Mark::Dashed => {
                for x in [6, 19] {
                    area.draw(&PathElement::new(
                        vec![(x, y), (x + 8, y)],
                        color.stroke_width(2),
                    ))?
                }
            }
            Mark::Box => area.draw(&Rectangle::new([(12, y - 6), (24, y + 6)], color.filled()))?,
        }
        area.draw(&Text::new(
            name.clone(),
            (34, y - 7),
            (FONT, 14).into_font(),
        ))?;
    }
    Ok(())
}

/// `lo..hi` widened by 5% each side, and to a unit span when all values are equal.
fn padded(lo: f64, hi: f64) -> std::ops::Range<f64> {
    if hi > lo {
        let pad = 0.05 * (hi - lo);
        lo - pad..hi + pad
    } else {
        let pad = if lo == 0.0 { 1.0 } else { 0.1 * lo.abs() };
        lo - pad..hi + pad
    }
}

/// The smallest and largest finite values, or `None` when there are none.
fn finite_range(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}
