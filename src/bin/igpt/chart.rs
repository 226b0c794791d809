//! SVG charts (plotters' SVG backend): the probe's test accuracy by layer, several models' probes
//! compared, and the probes of a training run's milestones against their generative quality.

use std::path::Path;

use anyhow::Context;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use igpt::analysis::probe::{LayerResult, ProbeReport};
use serde::Serialize;

/// Test accuracy by layer for the model and its random-weights twin, with the raw-pixel probe as a
/// horizontal line and the best layer (chosen on held-out train) circled.
pub fn probe_svg(path: &Path, title: &str, report: &ProbeReport) -> anyhow::Result<()> {
    let percent = |a: f64| 100.0 * a;
    let all = report
        .layers
        .iter()
        .chain(&report.random_init_layers)
        .map(|l| percent(l.accuracy))
        .chain([percent(report.raw_pixels)])
        .chain(
            report
                .concat
                .iter()
                .flat_map(|c| [c.accuracy, c.random_init_accuracy].map(percent)),
        );
    let (low, high) = all.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    // Room below the curves for the legend.
    let (low, high) = (
        (low - 12.0).floor().max(0.0),
        (high + 2.0).ceil().min(100.0),
    );
    let last = report.layers.iter().map(|l| l.layer).max().unwrap_or(0);

    let root = SVGBackend::new(path, (640, 400)).into_drawing_area();
    let draw = || -> Result<(), Box<dyn std::error::Error + '_>> {
        root.fill(&WHITE)?;
        let caption = format!("{title}: linear probe accuracy by layer");
        let mut chart = layer_axes(&root, Some(&caption), last, (low, high))?;
        let points = |layers: &[LayerResult]| -> Vec<(f64, f64)> {
            layers
                .iter()
                .map(|l| (l.layer as f64, percent(l.accuracy)))
                .collect()
        };
        let model_colour = RGBColor(31, 119, 180);
        let random_colour = RGBColor(150, 150, 150);
        chart
            .draw_series(LineSeries::new(
                points(&report.layers),
                model_colour.stroke_width(2),
            ))?
            .label("trained model")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], model_colour));
        chart.draw_series(
            points(&report.layers)
                .into_iter()
                .map(|p| Circle::new(p, 3, model_colour.filled())),
        )?;
        chart
            .draw_series(LineSeries::new(
                points(&report.random_init_layers),
                random_colour.stroke_width(2),
            ))?
            .label("same architecture, random weights")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], random_colour));
        raw_pixels_line(&mut chart, percent(report.raw_pixels), last)?;
        let best = (report.best_layer as f64, percent(report.best_accuracy));
        chart.draw_series([Circle::new(best, 7, model_colour.stroke_width(2))])?;
        if let Some(concat) = &report.concat {
            // One probe of the span's layers together: a bar across the layers it read.
            let (first, last) = (concat.layers[0], concat.layers[concat.layers.len() - 1]);
            let bars = [
                (concat.accuracy, RGBColor(44, 160, 44), "trained"),
                (concat.random_init_accuracy, random_colour, "random weights"),
            ];
            for (accuracy, colour, which) in bars {
                let at = percent(accuracy);
                chart
                    .draw_series(LineSeries::new(
                        [(first as f64, at), (last as f64, at)],
                        colour.stroke_width(4),
                    ))?
                    .label(format!("layers {first}-{last} together, {which}"))
                    .legend(move |(x, y)| {
                        PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(4))
                    });
            }
        }
        legend(&mut chart)?;
        root.present()?;
        Ok(())
    };
    written(path, draw())
}

/// One milestone of a run: its step (counted from the first model, across warm restarts), bits/token
/// on the run's held-out training images, its probe.
#[derive(Serialize)]
pub struct ProbedMilestone {
    pub step: usize,
    pub val_bits: f64,
    pub probe: ProbeReport,
}

/// Two panels: left, the best layer's test accuracy (the layer chosen on held-out train) against
/// held-out bits/token, with raw pixels as a line; right, every milestone's accuracy by layer, darker
/// as training goes on, its best layer circled.
pub fn probe_curve_svg(
    path: &Path,
    title: &str,
    milestones: &[ProbedMilestone],
) -> anyhow::Result<()> {
    let percent = |a: f64| 100.0 * a;
    let pixels = percent(milestones[0].probe.raw_pixels);
    let all = milestones
        .iter()
        .flat_map(|m| m.probe.layers.iter().map(|l| percent(l.accuracy)))
        .chain([pixels]);
    let (low, high) = all.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (low, high) = ((low - 6.0).floor().max(0.0), (high + 1.0).ceil().min(100.0));
    let bits = milestones.iter().map(|m| m.val_bits);
    let (fewest, most) = bits.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let pad = ((most - fewest) * 0.08).max(0.01);
    let last_layer = milestones
        .iter()
        .flat_map(|m| m.probe.layers.iter().map(|l| l.layer))
        .max()
        .unwrap_or(0);
    let shade = |i: usize| {
        // Light to dark blue, oldest to newest.
        let t = if milestones.len() < 2 {
            1.0
        } else {
            i as f64 / (milestones.len() - 1) as f64
        };
        let mix = |light: f64, dark: f64| (light + t * (dark - light)).round() as u8;
        RGBColor(mix(158.0, 8.0), mix(202.0, 48.0), mix(225.0, 107.0))
    };
    let pixel_colour = RGBColor(214, 39, 40);

    let root = SVGBackend::new(path, (960, 420)).into_drawing_area();
    let draw = || -> Result<(), Box<dyn std::error::Error + '_>> {
        root.fill(&WHITE)?;
        let root = root.titled(
            &format!("{title}: linear probes as generative training goes on"),
            ("sans-serif", 18),
        )?;
        let (left, right) = root.split_horizontally(470);

        // Better models to the right, as in the paper: the bits axis runs from most to fewest.
        let mut chart = ChartBuilder::on(&left)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d((most + pad)..(fewest - pad), low..high)?;
        chart
            .configure_mesh()
            .x_desc("bits/token on held-out training images (fewer is better)")
            .y_desc("test accuracy (%)")
            .x_label_formatter(&|x| format!("{x:.3}"))
            .draw()?;
        let best: Vec<(f64, f64)> = milestones
            .iter()
            .map(|m| (m.val_bits, percent(m.probe.best_accuracy)))
            .collect();
        let line = shade(milestones.len() - 1);
        chart
            .draw_series(LineSeries::new(best.clone(), line.stroke_width(2)))?
            .label("best layer (chosen on held-out train)")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], line));
        chart.draw_series(
            best.iter()
                .enumerate()
                .map(|(i, &p)| Circle::new(p, 4, shade(i).filled())),
        )?;
        chart.draw_series(milestones.iter().zip(&best).map(|(m, &(x, y))| {
            Text::new(format!("{}", m.step), (x, y + 0.6), ("sans-serif", 11))
        }))?;
        chart
            .draw_series(LineSeries::new(
                [(most + pad, pixels), (fewest - pad, pixels)],
                pixel_colour.stroke_width(1),
            ))?
            .label(format!("raw pixels {pixels:.1}%"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], pixel_colour));
        legend(&mut chart)?;

        let mut chart = layer_axes(&right, None, last_layer, (low, high))?;
        for (i, m) in milestones.iter().enumerate() {
            let colour = shade(i);
            let points: Vec<(f64, f64)> = m
                .probe
                .layers
                .iter()
                .map(|l| (l.layer as f64, percent(l.accuracy)))
                .collect();
            chart
                .draw_series(LineSeries::new(points, colour.stroke_width(2)))?
                .label(format!("step {} ({:.3} bits)", m.step, m.val_bits))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], colour));
            let best = (m.probe.best_layer as f64, percent(m.probe.best_accuracy));
            chart.draw_series([Circle::new(best, 6, colour.stroke_width(2))])?;
        }
        chart.draw_series(LineSeries::new(
            [(-0.3, pixels), (last_layer as f64 + 0.3, pixels)],
            pixel_colour.stroke_width(1),
        ))?;
        legend(&mut chart)?;
        root.present()?;
        Ok(())
    };
    written(path, draw())
}

/// Several probe reports' test accuracy by layer, one colour each, the raw-pixel probe as a line and
/// each report's best layer (chosen on held-out train) circled.
pub fn probe_compare_svg(
    path: &Path,
    title: &str,
    reports: &[(String, ProbeReport)],
) -> anyhow::Result<()> {
    let percent = |a: f64| 100.0 * a;
    let pixels = percent(reports[0].1.raw_pixels);
    let all = reports
        .iter()
        .flat_map(|(_, r)| r.layers.iter().map(|l| percent(l.accuracy)))
        .chain([pixels]);
    let (low, high) = all.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    // Room below the curves for the legend.
    let (low, high) = ((low - 8.0).floor().max(0.0), (high + 1.0).ceil().min(100.0));
    let last = reports
        .iter()
        .flat_map(|(_, r)| r.layers.iter().map(|l| l.layer))
        .max()
        .unwrap_or(0);
    // Tableau's first colours; the raw pixels keep the other charts' red.
    let palette = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
    ];

    let root = SVGBackend::new(path, (640, 400)).into_drawing_area();
    let draw = || -> Result<(), Box<dyn std::error::Error + '_>> {
        root.fill(&WHITE)?;
        let caption = format!("{title}: linear probe accuracy by layer");
        let mut chart = layer_axes(&root, Some(&caption), last, (low, high))?;
        for (i, (label, report)) in reports.iter().enumerate() {
            let colour = palette[i % palette.len()];
            let points: Vec<(f64, f64)> = report
                .layers
                .iter()
                .map(|l| (l.layer as f64, percent(l.accuracy)))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?
                .label(label.as_str())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], colour));
            chart.draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, colour.filled())),
            )?;
            let best = (report.best_layer as f64, percent(report.best_accuracy));
            chart.draw_series([Circle::new(best, 7, colour.stroke_width(2))])?;
        }
        raw_pixels_line(&mut chart, pixels, last)?;
        legend(&mut chart)?;
        root.present()?;
        Ok(())
    };
    written(path, draw())
}

type Axes = Cartesian2d<RangedCoordf64, RangedCoordf64>;
type Drawn<DB, T> = Result<T, DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// Axes of test accuracy (`low..high` percent, up) by layer (0 = the embeddings to `last`, across).
fn layer_axes<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, plotters::coord::Shift>,
    caption: Option<&str>,
    last: usize,
    (low, high): (f64, f64),
) -> Drawn<DB, ChartContext<'a, DB, Axes>> {
    let mut builder = ChartBuilder::on(area);
    if let Some(caption) = caption {
        builder.caption(caption, ("sans-serif", 18));
    }
    let mut chart = builder
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(-0.3f64..last as f64 + 0.3, low..high)?;
    chart
        .configure_mesh()
        .x_desc("layer (0 = embeddings)")
        .y_desc("test accuracy (%)")
        .x_labels(last + 1)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()?;
    Ok(chart)
}

/// The raw-pixel probe's accuracy (`pixels` percent) as a red line across layers 0 to `last`.
fn raw_pixels_line<'a, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<'a, DB, Axes>,
    pixels: f64,
    last: usize,
) -> Drawn<DB, ()> {
    let colour = RGBColor(214, 39, 40);
    chart
        .draw_series(LineSeries::new(
            [(-0.3, pixels), (last as f64 + 0.3, pixels)],
            colour.stroke_width(1),
        ))?
        .label(format!("raw pixels {pixels:.1}%"))
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], colour));
    Ok(())
}

/// The series' labels, boxed at the lower right (the charts leave room there).
fn legend<'a, DB: DrawingBackend + 'a>(chart: &mut ChartContext<'a, DB, Axes>) -> Drawn<DB, ()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
}

/// A drawing's outcome, with the chart's path in the error.
fn written(path: &Path, drawn: Result<(), Box<dyn std::error::Error + '_>>) -> anyhow::Result<()> {
    drawn
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("cannot write the chart {}", path.display()))
}
