//! SVG charts (plotters' SVG backend): the probe's test accuracy by layer.

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

use igpt::analysis::probe::{LayerResult, ProbeReport};

/// Test accuracy by layer for the model and its random-weights twin, with the raw-pixel probe as a
/// horizontal line and the best layer (chosen on held-out train) circled.
pub fn probe_svg(path: &Path, title: &str, report: &ProbeReport) -> anyhow::Result<()> {
    let percent = |a: f64| 100.0 * a;
    let all = report
        .layers
        .iter()
        .chain(&report.random_init_layers)
        .map(|l| percent(l.accuracy))
        .chain([percent(report.raw_pixels)]);
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
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("{title}: linear probe accuracy by layer"),
                ("sans-serif", 18),
            )
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
        let points = |layers: &[LayerResult]| -> Vec<(f64, f64)> {
            layers
                .iter()
                .map(|l| (l.layer as f64, percent(l.accuracy)))
                .collect()
        };
        let model_colour = RGBColor(31, 119, 180);
        let random_colour = RGBColor(150, 150, 150);
        let pixel_colour = RGBColor(214, 39, 40);
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
        let pixels = percent(report.raw_pixels);
        chart
            .draw_series(LineSeries::new(
                [(-0.3, pixels), (last as f64 + 0.3, pixels)],
                pixel_colour.stroke_width(1),
            ))?
            .label(format!("raw pixels {pixels:.1}%"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], pixel_colour));
        let best = (report.best_layer as f64, percent(report.best_accuracy));
        chart.draw_series([Circle::new(best, 7, model_colour.stroke_width(2))])?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("cannot write the chart {}", path.display()))
}
