//! The short table printed to the terminal at the end of a run.

use comfy_table::{presets::UTF8_FULL_CONDENSED, ContentArrangement, Table};

use super::{human_bytes, millis, AccuracyFigure, Measurement, Report};

/// Renders one row for the source model and one per candidate.
pub fn render_table(report: &Report) -> String {
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic);
    let figure = report.accuracy_figure;
    // tract's figures say so; ONNX Runtime's columns keep their short names.
    let (p50, p90) = match report.runtime.name.as_str() {
        "onnxruntime" => ("p50".to_string(), "p90".to_string()),
        other => (format!("{other} p50"), format!("{other} p90")),
    };
    table.set_header([
        "",
        "candidate",
        figure.header(),
        p50.as_str(),
        p90.as_str(),
        "size",
        "result",
    ]);

    table.add_row(row(figure, "source", "original model", &report.source, "baseline"));
    for candidate in &report.candidates {
        let marker = if report.best.as_deref() == Some(candidate.id.as_str()) { "* " } else { "" };
        let mut result = candidate.status.as_str().to_string();
        if let Some(reason) = candidate.reasons.first() {
            result = format!("{result}: {}", shortened(reason));
        }
        for note in &candidate.notes {
            result = format!("{result} ({})", note.kind.as_str());
        }
        let id = format!("{marker}{}", candidate.id);
        let empty = Measurement::default();
        let measured = candidate.measurement.as_ref().unwrap_or(&empty);
        let mut cells = row(figure, &id, &candidate.label, measured, &result);
        cells[3] += &super::markdown::other_batch(measured.latency_ms.as_ref(), &report.source);
        if candidate.measurement.is_none() {
            cells[5] = "-".to_string();
        }
        table.add_row(cells);
    }
    table.to_string()
}

fn row(
    figure: AccuracyFigure,
    id: &str,
    label: &str,
    m: &Measurement,
    result: &str,
) -> Vec<String> {
    let latency = m.latency_ms.as_ref();
    vec![
        id.to_string(),
        label.to_string(),
        figure.format(m.accuracy),
        millis(latency.map(|l| l.p50)),
        millis(latency.map(|l| l.p90)),
        human_bytes(m.size_bytes),
        result.to_string(),
    ]
}

/// The most characters of a reason the table shows; report.md and report.json hold it whole.
const MAX_REASON_CHARS: usize = 160;

/// `reason`, cut at a word boundary to at most [`MAX_REASON_CHARS`] characters with an
/// ellipsis and a pointer to the report when longer.
fn shortened(reason: &str) -> String {
    if reason.chars().count() <= MAX_REASON_CHARS {
        return reason.to_string();
    }
    let cut: String = reason.chars().take(MAX_REASON_CHARS).collect();
    let cut = cut.rsplit_once(' ').map_or(cut.as_str(), |(head, _)| head);
    format!("{cut} … (whole reason in report.md)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_reasons_are_cut_at_a_word_and_short_ones_kept() {
        assert_eq!(shortened("a short reason"), "a short reason");

        let long = "word ".repeat(100);
        let cut = shortened(&long);
        assert!(cut.ends_with("word … (whole reason in report.md)"), "{cut}");
        assert!(cut.chars().count() <= MAX_REASON_CHARS + 40, "{cut}");
    }
}
