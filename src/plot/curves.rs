//! Training curves: loss, contrastive loss and IRM penalty against the epoch.
use plotters::prelude::*;

use super::{
    color, finite_range, legend, message_svg, padded, render, CurvePoint, Mark, FONT, LEGEND_W,
};

const SIZE: (u32, u32) = (820, 420);
const TITLE: &str = "Training curves";

/// One line per recorded series: `loss` and `contrastive` on the left axis, `penalty` on the
/// right axis (the IRM penalty is often orders of magnitude smaller than the loss). A series with
/// no finite value is left out; each point is marked, so a one-epoch run still shows.
pub fn training_curves_svg(curves: &[CurvePoint]) -> String {
    let series = |f: fn(&CurvePoint) -> Option<f64>| -> Vec<(usize, f64)> {
        curves
            .iter()
            .filter_map(|c| f(c).filter(|v| v.is_finite()).map(|v| (c.epoch, v)))
            .collect()
    };
    let left = [
        ("loss", series(|c| Some(c.loss))),
        ("contrastive", series(|c| c.contrastive)),
    ];
    let penalty = series(|c| c.penalty);
    let left_range = finite_range(left.iter().flat_map(|(_, s)| s.iter().map(|p| p.1)));
    let right_range = finite_range(penalty.iter().map(|p| p.1));
    if left_range.is_none() && right_range.is_none() {
        return message_svg(SIZE, TITLE, "no data");
    }
    let first = curves.iter().map(|c| c.epoch).min().unwrap_or(0);
    let last = curves
        .iter()
        .map(|c| c.epoch)
        .max()
        .unwrap_or(0)
        .max(first + 1);
    let left_range = left_range.map_or(0.0..1.0, |(lo, hi)| padded(lo, hi));
    let right_range = right_range.map_or(0.0..1.0, |(lo, hi)| padded(lo, hi));

    render(SIZE, |root| {
        let (plot, side) = root.split_horizontally(SIZE.0 - LEGEND_W);
        let mut chart = ChartBuilder::on(&plot)
            .caption(TITLE, (FONT, 20))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .right_y_label_area_size(if penalty.is_empty() { 0 } else { 60 })
            .build_cartesian_2d(first..last, left_range)?
            .set_secondary_coord(first..last, right_range);
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc("loss")
            .label_style((FONT, 13))
            .draw()?;
        let mut entries = Vec::new();
        for (i, (name, points)) in left.iter().enumerate().filter(|(_, (_, s))| !s.is_empty()) {
            chart.draw_series(line(points, color(i)))?;
            entries.push((name.to_string(), color(i), Mark::Line));
        }
        if !penalty.is_empty() {
            chart
                .configure_secondary_axes()
                .y_desc("penalty")
                .label_style((FONT, 13))
                .draw()?;
            chart.draw_secondary_series(line(&penalty, color(3)))?;
            entries.push(("penalty (right axis)".to_string(), color(3), Mark::Line));
        }
        legend(&side, &entries)
    })
}

/// A 2-pixel line through `points` with a small circle on each.
fn line<DB: DrawingBackend>(
    points: &[(usize, f64)],
    color: RGBColor,
) -> LineSeries<DB, (usize, f64)> {
    LineSeries::new(points.iter().copied(), color.stroke_width(2)).point_size(3)
}

/// One named series of a [`lines_svg`] chart: (x, y) points, x an epoch.
pub type Series = (String, Vec<(usize, f64)>);

/// A line chart of several series over the epoch: `title`, the y axis named `y_label`. Used for
/// the risk of a maximize step over its epochs. Non-finite points are left out; a chart with
/// none says "no data".
pub fn lines_svg(title: &str, y_label: &str, series: &[Series]) -> String {
    lines_with_references_svg(title, y_label, series, &[])
}

/// A horizontal line across a [`lines_with_references_svg`] chart: a value to read the series
/// against (the raw-pixel kNN under the encoder's).
#[derive(Debug, Clone)]
pub struct Reference {
    /// Its legend entry.
    pub label: String,
    pub value: f64,
    /// The series whose colour it takes (it is drawn dashed).
    pub series: usize,
}

/// [`lines_svg`] with dashed horizontal `references` (non-finite ones left out), each in the
/// colour of the series it goes with; the y axis spans them too. Used for the kNN over training
/// with the raw-pixel kNN beneath it.
pub fn lines_with_references_svg(
    title: &str,
    y_label: &str,
    series: &[Series],
    references: &[Reference],
) -> String {
    let series: Vec<(&str, Vec<(usize, f64)>)> = series
        .iter()
        .map(|(n, pts)| {
            (
                n.as_str(),
                pts.iter()
                    .copied()
                    .filter(|p| p.1.is_finite())
                    .collect::<Vec<_>>(),
            )
        })
        .filter(|(_, pts)| !pts.is_empty())
        .collect();
    let references: Vec<&Reference> = references.iter().filter(|r| r.value.is_finite()).collect();
    if series.is_empty() {
        return message_svg(SIZE, title, "no data");
    }
    let values = series.iter().flat_map(|(_, s)| s.iter().map(|p| p.1));
    let Some((lo, hi)) = finite_range(values.chain(references.iter().map(|r| r.value))) else {
        return message_svg(SIZE, title, "no data");
    };
    let first = series
        .iter()
        .flat_map(|(_, s)| s.iter().map(|p| p.0))
        .min()
        .unwrap_or(0);
    let last = series
        .iter()
        .flat_map(|(_, s)| s.iter().map(|p| p.0))
        .max()
        .unwrap_or(0)
        .max(first + 1);
    render(SIZE, |root| {
        let (plot, side) = root.split_horizontally(SIZE.0 - LEGEND_W);
        let mut chart = ChartBuilder::on(&plot)
            .caption(title, (FONT, 20))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(first..last, padded(lo, hi))?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(y_label)
            .label_style((FONT, 13))
            .draw()?;
        let mut entries = Vec::new();
        for (i, (name, points)) in series.iter().enumerate() {
            chart.draw_series(line(points, color(i)))?;
            entries.push((name.to_string(), color(i), Mark::Line));
        }
        for r in &references {
            let c = color(r.series);
            chart.draw_series(DashedLineSeries::new(
                [(first, r.value), (last, r.value)],
                8,
                5,
                c.stroke_width(2),
            ))?;
            entries.push((r.label.clone(), c, Mark::Dashed));
        }
        legend(&side, &entries)
    })
}
