//! Bar charts: the class composition of the learned environments, and paper vs ours.
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{
    color, finite_range, legend, message_svg, render, slotted_chart, Mark, FONT, LEGEND_W, SLOT,
};

/// One stacked bar per environment (its height: the environment's size), one segment per class,
/// from `composition[env][class]` counts; classes are named by `class_names` where given, else
/// `class 0`, `class 1`, …. Zero and negative counts draw no segment.
pub fn composition_svg(composition: &[Vec<i64>], class_names: Option<&[&str]>) -> String {
    const TITLE: &str = "Class composition of each environment";
    let classes = composition.iter().map(Vec::len).max().unwrap_or(0);
    let totals: Vec<i64> = composition
        .iter()
        .map(|env| env.iter().map(|&n| n.max(0)).sum())
        .collect();
    let envs = composition.len();
    let size = ((LEGEND_W + 140 + 110 * envs as u32).max(640), 440);
    if classes == 0 || totals.iter().all(|&t| t == 0) {
        return message_svg(size, TITLE, "no data");
    }
    let top = *totals.iter().max().unwrap() as f64 * 1.05;
    let name = |c: usize| match class_names.and_then(|names| names.get(c)) {
        Some(name) => name.to_string(),
        None => format!("class {c}"),
    };
    let env_label = |e: usize| {
        totals
            .get(e)
            .map_or(String::new(), |n| format!("env {e} ({n})"))
    };

    render(size, |root| {
        let (plot, side) = root.split_horizontally(size.0 - LEGEND_W);
        let axis = ("images", 0, 70);
        let mut chart = slotted_chart(&plot, TITLE, envs, &env_label, 0.0..top, axis)?;
        for c in 0..classes {
            let segments = composition.iter().enumerate().filter_map(|(e, env)| {
                let n = env.get(c).copied().unwrap_or(0);
                let below: i64 = env.iter().take(c).map(|&m| m.max(0)).sum();
                let x = e as i32 * SLOT;
                let (lo, hi) = (below as f64, (below + n) as f64);
                (n > 0).then(|| Rectangle::new([(x + 20, lo), (x + 80, hi)], color(c).filled()))
            });
            chart.draw_series(segments)?;
        }
        let entries: Vec<_> = (0..classes)
            .map(|c| (name(c), color(c), Mark::Box))
            .collect();
        legend(&side, &entries)
    })
}

/// Top-1 accuracy per run, the paper's bar beside ours (no bar where we have no number yet), each
/// bar labelled with its value. `rows`: (run name, paper top-1 %, our top-1 %).
pub fn paper_table_svg(rows: &[(String, f64, Option<f64>)]) -> String {
    const TITLE: &str = "Top-1 accuracy: paper vs ours";
    let size = ((LEGEND_W + 120 + 140 * rows.len() as u32).max(640), 440);
    let values = rows
        .iter()
        .flat_map(|(_, paper, ours)| std::iter::once(*paper).chain(*ours));
    let Some((_, hi)) = finite_range(values) else {
        return message_svg(size, TITLE, "no data");
    };
    let top = hi.max(100.0) * 1.06; // room for the value labels above a 100% bar
    let run_label = |r: usize| rows.get(r).map_or(String::new(), |r| r.0.clone());
    let (paper_color, ours_color) = (RGBColor(150, 150, 150), color(0));

    render(size, |root| {
        let (plot, side) = root.split_horizontally(size.0 - LEGEND_W);
        let axis = ("top-1 (%)", 0, 60);
        let mut chart = slotted_chart(&plot, TITLE, rows.len(), &run_label, 0.0..top, axis)?;
        let value_style =
            TextStyle::from((FONT, 12).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
        // (left edge of the bar within its run's slot, value, colour)
        let bars: Vec<(i32, f64, RGBColor)> = rows
            .iter()
            .enumerate()
            .flat_map(|(r, (_, paper, ours))| {
                let x = r as i32 * SLOT;
                [
                    Some((x + 12, *paper, paper_color)),
                    ours.map(|v| (x + 50, v, ours_color)),
                ]
            })
            .flatten()
            .filter(|(_, v, _)| v.is_finite())
            .collect();
        chart.draw_series(
            bars.iter()
                .map(|&(x, v, c)| Rectangle::new([(x, 0.0), (x + 38, v)], c.filled())),
        )?;
        chart
            .draw_series(bars.iter().map(|&(x, v, _)| {
                Text::new(format!("{v:.2}"), (x + 19, v), value_style.clone())
            }))?;
        let entries = [
            ("paper".to_string(), paper_color, Mark::Box),
            ("ours".to_string(), ours_color, Mark::Box),
        ];
        legend(&side, &entries)
    })
}
