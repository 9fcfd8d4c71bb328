//! `--plot`: an SVG with the latency CDF (top) and throughput over time (bottom).

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

/// Writes the two charts to `path`.
pub(super) fn write(
    path: &Path,
    latency: &Histogram<u64>,
    timeline: &[(f64, f64, f64)],
) -> Result<(), String> {
    draw(path, latency, timeline).map_err(|e| format!("plot {}: {e}", path.display()))
}

fn draw(
    path: &Path,
    latency: &Histogram<u64>,
    timeline: &[(f64, f64, f64)],
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (900, 800)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(400);

    // Latency CDF: x = latency (µs, log), y = share of messages at or below it.
    let cdf: Vec<(f64, f64)> = latency
        .iter_recorded()
        .scan(0u64, |seen, v| {
            *seen += v.count_at_value();
            let x = (latency.highest_equivalent(v.value_iterated_to()) as f64).max(1.0);
            Some((x, *seen as f64 * 100.0 / latency.len().max(1) as f64))
        })
        .collect();
    let max_latency = (latency.max() as f64).max(10.0) * 1.1;
    let mut chart = ChartBuilder::on(&top)
        .caption("end-to-end latency (CDF)", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((1.0f64..max_latency).log_scale(), 0.0f64..100.0)?;
    chart
        .configure_mesh()
        .x_desc("latency (µs)")
        .y_desc("% of messages")
        .draw()?;
    chart.draw_series(LineSeries::new(cdf, &BLUE))?;

    // Throughput over time.
    let max_rate = timeline
        .iter()
        .map(|&(_, s, r)| s.max(r))
        .fold(1.0f64, f64::max)
        * 1.1;
    let end = timeline.last().map_or(1.0, |&(t, _, _)| t.max(0.001));
    let mut chart = ChartBuilder::on(&bottom)
        .caption("throughput", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0f64..end, 0.0f64..max_rate)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("messages/s")
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            timeline.iter().map(|&(t, s, _)| (t, s)),
            &RED,
        ))?
        .label("sent")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED));
    chart
        .draw_series(LineSeries::new(
            timeline.iter().map(|&(t, _, r)| (t, r)),
            &BLUE,
        ))?
        .label("received")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
