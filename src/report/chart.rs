//! `report.svg`: every measured model as a point, accuracy against latency (size against
//! latency when accuracy is not measured, accuracy against size when latency is not), with
//! the source marked, the Pareto front joined and the winner highlighted.
//!
//! Drawn with `plotters`' SVG backend alone: text is written as SVG `<text>` and laid out
//! with plotters' built-in estimate, so no font is read from the system.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{AccuracyFigure, CandidateReport, Measurement, Report, Status};

/// What one axis shows.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Axis {
    /// Milliseconds of the report's latency statistic.
    Latency,
    /// The accuracy figure: in percent, or cosine similarity as it is.
    Accuracy(AccuracyFigure),
    /// Model size in the unit `divisor` bytes.
    Size { divisor: f64, unit: &'static str },
}

impl Axis {
    fn value(self, m: &Measurement, stat: &str) -> Option<f64> {
        match self {
            Axis::Latency => m.latency_ms.as_ref().map(|l| match stat {
                "p90" => l.p90,
                "p99" => l.p99,
                "mean" => l.mean,
                _ => l.p50,
            }),
            Axis::Accuracy(AccuracyFigure::Cosine) => m.accuracy,
            Axis::Accuracy(_) => m.accuracy.map(|a| a * 100.0),
            Axis::Size { divisor, .. } => Some(m.size_bytes as f64 / divisor),
        }
    }

    fn description(self, stat: &str) -> String {
        match self {
            Axis::Latency => format!("latency {stat} (ms, lower is better)"),
            Axis::Accuracy(AccuracyFigure::Top1) => {
                "top-1 accuracy (%, higher is better)".to_string()
            }
            Axis::Accuracy(AccuracyFigure::Cosine) => {
                "cosine similarity to the source (higher is better)".to_string()
            }
            Axis::Accuracy(AccuracyFigure::Top1Agreement) => {
                "top-1 agreement with the source (%, higher is better)".to_string()
            }
            Axis::Size { unit, .. } => format!("size ({unit}, lower is better)"),
        }
    }
}

/// The axes of the chart for what the report measured: `None` when only size was, which
/// gives no plane to draw.
fn axes(report: &Report) -> Option<(Axis, Axis)> {
    let measured = || std::iter::once(&report.source).chain(measurements(report).map(|(_, m)| m));
    let latency = report.source.latency_ms.is_some();
    let accuracy = report.source.accuracy.is_some();
    let largest = measured().map(|m| m.size_bytes).max().unwrap_or(0);
    let size = match largest {
        0..=9_999 => Axis::Size { divisor: 1.0, unit: "bytes" },
        10_000..=9_999_999 => Axis::Size { divisor: 1024.0, unit: "KiB" },
        10_000_000..=9_999_999_999 => Axis::Size { divisor: 1024.0 * 1024.0, unit: "MiB" },
        _ => Axis::Size { divisor: 1024.0 * 1024.0 * 1024.0, unit: "GiB" },
    };
    match (latency, accuracy) {
        (true, true) => Some((Axis::Latency, Axis::Accuracy(report.accuracy_figure))),
        (true, false) => Some((Axis::Latency, size)),
        (false, true) => Some((size, Axis::Accuracy(report.accuracy_figure))),
        (false, false) => None,
    }
}

/// Whether the report has a chart: whether it measured two metrics to plot.
pub fn has_chart(report: &Report) -> bool {
    axes(report).is_some()
}

/// The measured candidates.
fn measurements(report: &Report) -> impl Iterator<Item = (&CandidateReport, &Measurement)> {
    report.candidates.iter().filter_map(|c| c.measurement.as_ref().map(|m| (c, m)))
}

/// A lower and upper bound around `values` with some room on each side, `headroom` times as
/// much above.
fn range(values: impl Iterator<Item = f64>, headroom: f64) -> std::ops::Range<f64> {
    let (low, high) =
        values.fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), v| (low.min(v), high.max(v)));
    if !low.is_finite() || !high.is_finite() {
        return 0.0..1.0;
    }
    let room = if high > low { (high - low) * 0.12 } else { low.abs().max(1.0) * 0.05 };
    (low - room)..(high + room * headroom)
}

const SOURCE: RGBColor = RGBColor(40, 40, 40);
const PASSED: RGBColor = RGBColor(31, 119, 180);
const MISSED: RGBColor = RGBColor(150, 150, 150);
const FRONT: RGBColor = RGBColor(44, 160, 44);
const BEST: RGBColor = RGBColor(214, 39, 40);

/// Renders the chart as an SVG document, or `None` when the report measured only one metric.
pub fn render_chart(report: &Report) -> std::io::Result<Option<String>> {
    let Some((x_axis, y_axis)) = axes(report) else { return Ok(None) };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 600)).into_drawing_area();
        draw(&root, report, x_axis, y_axis).map_err(|e| std::io::Error::other(e.to_string()))?;
        root.present().map_err(|e| std::io::Error::other(e.to_string()))?;
    }
    Ok(Some(svg))
}

type DrawResult =
    Result<(), DrawingAreaErrorKind<<SVGBackend<'static> as DrawingBackend>::ErrorType>>;

fn draw(
    root: &DrawingArea<SVGBackend, Shift>,
    report: &Report,
    x_axis: Axis,
    y_axis: Axis,
) -> DrawResult {
    let stat = report.latency_stat.as_str();
    let point = |m: &Measurement| Some((x_axis.value(m, stat)?, y_axis.value(m, stat)?));
    let source = point(&report.source);
    let points: Vec<(&CandidateReport, (f64, f64))> =
        measurements(report).filter_map(|(c, m)| Some((c, point(m)?))).collect();
    let all = || source.iter().copied().chain(points.iter().map(|(_, p)| *p));

    root.fill(&WHITE)?;
    let title = format!("{}: {} against {}", report.recipe, short(y_axis), short(x_axis));
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 24))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80)
        // Room above the highest point keeps the legend off the points.
        .build_cartesian_2d(range(all().map(|p| p.0), 1.0), range(all().map(|p| p.1), 4.0))?;
    chart
        .configure_mesh()
        .x_desc(x_axis.description(stat))
        .y_desc(y_axis.description(stat))
        .light_line_style(RGBColor(235, 235, 235))
        .axis_desc_style(("sans-serif", 16))
        .label_style(("sans-serif", 14))
        .draw()?;

    let mut front: Vec<(f64, f64)> = report
        .pareto_front
        .iter()
        .filter_map(|id| points.iter().find(|(c, _)| &c.id == id).map(|(_, p)| *p))
        .collect();
    front.sort_by(|a, b| a.0.total_cmp(&b.0));
    chart
        .draw_series(LineSeries::new(front.clone(), FRONT.stroke_width(2)))?
        .label(format!("Pareto front ({})", report.objective.join(", ")))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], FRONT.stroke_width(2)));
    chart.draw_series(front.iter().map(|p| Circle::new(*p, 8, FRONT.stroke_width(2))))?;

    let font = ("sans-serif", 15).into_font();
    let best_id = report.best.as_deref();
    for (status, color, name) in
        [(Status::Passed, PASSED, "met every goal"), (Status::MissedGoals, MISSED, "missed a goal")]
    {
        // The winner is drawn below, in its own colour.
        let of_status: Vec<_> = points
            .iter()
            .filter(|(c, _)| c.status == status && best_id != Some(c.id.as_str()))
            .collect();
        if of_status.is_empty() {
            continue;
        }
        chart
            .draw_series(of_status.iter().map(|(c, p)| {
                let label = Text::new(c.id.clone(), (7, -18), font.clone());
                EmptyElement::at(*p) + Circle::new((0, 0), 4, color.filled()) + label
            }))?
            .label(name)
            .legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
    }

    if let Some(best) = points.iter().find(|(c, _)| report.best.as_deref() == Some(&c.id)) {
        let label = format!("{} (best)", best.0.id);
        let bold = ("sans-serif", 16).into_font().style(FontStyle::Bold).color(&BEST);
        chart
            .draw_series(std::iter::once(
                EmptyElement::at(best.1)
                    + Circle::new((0, 0), 6, BEST.filled())
                    + Text::new(label, (9, 4), bold),
            ))?
            .label("best")
            .legend(|(x, y)| Circle::new((x + 10, y), 6, BEST.filled()));
    }

    if let Some(source) = source {
        chart
            .draw_series(std::iter::once(
                EmptyElement::at(source)
                    + Rectangle::new([(-5, -5), (5, 5)], SOURCE.filled())
                    + Text::new("source".to_string(), (8, 4), font.clone()),
            ))?
            .label("source model")
            .legend(|(x, y)| Rectangle::new([(x + 5, y - 5), (x + 15, y + 5)], SOURCE.filled()));
    }

    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .label_font(("sans-serif", 15))
        .draw()?;
    Ok(())
}

fn short(axis: Axis) -> &'static str {
    match axis {
        Axis::Latency => "latency",
        Axis::Accuracy(_) => "accuracy",
        Axis::Size { .. } => "size",
    }
}

#[cfg(test)]
mod tests;
