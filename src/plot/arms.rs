//! Arms side by side: each arm's mean and 95 % interval per metric, the paper's number as a line.
use plotters::prelude::*;

use super::{
    color, finite_range, legend, message_svg, render, slotted_chart, Mark, LEGEND_W, SLOT,
};

/// A mean and its 95 % interval when there is one.
pub type MeanInterval = (f64, Option<(f64, f64)>);

/// One arm as [`arm_intervals_svg`] draws it.
#[derive(Debug, Clone)]
pub struct ArmInterval {
    pub label: String,
    /// (metric, mean and 95 % interval when there is one); `None` where the arm has no value.
    pub metrics: Vec<(String, Option<MeanInterval>)>,
    /// The paper's linear top-1 where the arm is a paper preset.
    pub paper: Option<f64>,
}

/// One group per arm: a point per metric at its mean with its interval as a bar; a dashed
/// line at the paper's number over the arm's group where it has one.
pub fn arm_intervals_svg(arms: &[ArmInterval]) -> String {
    const TITLE: &str = "Arms: mean and 95 % interval";
    let metrics: Vec<String> = arms
        .first()
        .map(|a| a.metrics.iter().map(|(m, _)| m.clone()).collect())
        .unwrap_or_default();
    let size = ((LEGEND_W + 140 + 140 * arms.len() as u32).max(640), 440);
    let values = arms.iter().flat_map(|a| {
        a.metrics
            .iter()
            .filter_map(|(_, v)| *v)
            .flat_map(|(m, ci)| [m, ci.map_or(m, |c| c.0), ci.map_or(m, |c| c.1)])
            .chain(a.paper)
    });
    let Some((lo, hi)) = finite_range(values) else {
        return message_svg(size, TITLE, "no data");
    };
    let pad = ((hi - lo) * 0.15).max(0.5);
    let (lo, hi) = (lo - pad, hi + pad);
    let arm_label = |a: usize| arms.get(a).map_or(String::new(), |a| a.label.clone());
    render(size, |root| {
        let (plot, side) = root.split_horizontally(size.0 - LEGEND_W);
        let axis = ("%", 1, 60);
        let mut chart = slotted_chart(&plot, TITLE, arms.len(), &arm_label, lo..hi, axis)?;
        let step = SLOT / (metrics.len() as i32 + 1);
        for (i, a) in arms.iter().enumerate() {
            let x0 = i as i32 * SLOT;
            for (j, (_, v)) in a.metrics.iter().enumerate() {
                let Some((mean, ci)) = *v else { continue };
                let x = x0 + step * (j as i32 + 1);
                let c = color(j);
                if let Some((l, h)) = ci.filter(|(l, h)| l.is_finite() && h.is_finite()) {
                    chart.draw_series(std::iter::once(PathElement::new(
                        vec![(x, l), (x, h)],
                        c.stroke_width(2),
                    )))?;
                }
                chart.draw_series(std::iter::once(Circle::new((x, mean), 4, c.filled())))?;
            }
            if let Some(p) = a.paper {
                chart.draw_series(DashedLineSeries::new(
                    vec![(x0 + 5, p), (x0 + SLOT - 5, p)],
                    6,
                    4,
                    BLACK.stroke_width(1),
                ))?;
            }
        }
        let mut entries: Vec<_> = metrics
            .iter()
            .enumerate()
            .map(|(j, m)| (m.clone(), color(j), Mark::Box))
            .collect();
        if arms.iter().any(|a| a.paper.is_some()) {
            entries.push(("paper (linear top-1)".into(), RGBColor(0, 0, 0), Mark::Line));
        }
        legend(&side, &entries)
    })
}
