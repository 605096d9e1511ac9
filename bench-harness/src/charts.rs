//! The report's SVG charts, drawn with plotters' SVG backend (text is written as SVG `<text>`,
//! so no font files are needed): grouped bar charts (throughput, ratio to mimalloc, latency
//! percentiles), line panels (thread scaling) and the fragmentation workload's RSS over time.
//! (The program-scale workloads' charts are drawn by [`crate::program_report`].)

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

/// One series of a bar or line chart: a name and one value per group (`None`: no bar).
pub type Series = (String, Vec<Option<f64>>);

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("chart: {e:?}")
}

/// The colour of series `i` (the same allocator index gets the same colour in every chart).
pub fn color(i: usize) -> RGBColor {
    // A qualitative palette that stays readable for up to ten series.
    const C: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    let (r, g, b) = C[i % C.len()];
    RGBColor(r, g, b)
}

/// The range of positive values, padded for a log axis.
fn log_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
    for v in values.filter(|v| *v > 0.0 && v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    (hi > 0.0).then(|| (lo / 1.5, hi * 1.5))
}

/// Draws a grouped bar chart with a logarithmic y axis to `path`.
pub fn grouped_bars(
    path: &Path,
    title: &str,
    y_label: &str,
    groups: &[String],
    series: &[Series],
    reference_line: Option<f64>,
) -> Result<(), String> {
    let width = (groups.len() as u32 * 40 * (series.len() as u32).max(2)).clamp(800, 1600);
    let root = SVGBackend::new(path, (width, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let Some((lo, hi)) = log_range(series.iter().flat_map(|(_, v)| v.iter().flatten().copied()))
    else {
        root.present().map_err(err)?;
        return Ok(());
    };
    let n = groups.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..n, (lo..hi).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(y_label)
        .draw()
        .map_err(err)?;
    let k = series.len().max(1) as f64;
    let w = 0.8 / k;
    for (j, (name, values)) in series.iter().enumerate() {
        let c = color(j);
        let bars = values.iter().enumerate().filter_map(|(i, v)| {
            let v = (*v)?;
            (v > 0.0).then(|| {
                let x0 = i as f64 + 0.1 + j as f64 * w;
                Rectangle::new([(x0, lo), (x0 + w, v)], c.filled())
            })
        });
        chart
            .draw_series(bars)
            .map_err(err)?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], c.filled()));
    }
    if let Some(r) = reference_line.filter(|r| *r > lo && *r < hi) {
        chart
            .draw_series(LineSeries::new([(0.0, r), (n, r)], BLACK.stroke_width(1)))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    // Group names under the axis, staggered so long names do not overlap.
    for (i, g) in groups.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(i as f64 + 0.5, lo));
        let dy = if i % 2 == 0 { 8 } else { 26 };
        root.draw(&Text::new(
            g.clone(),
            (px - (g.len() as i32 * 3), py + dy),
            ("sans-serif", 12),
        ))
        .map_err(err)?;
    }
    root.present().map_err(err)
}

/// One panel of a line chart: a title and named lines of (x, y) points.
pub struct Panel {
    /// The panel's title.
    pub title: String,
    /// Named lines.
    pub lines: Vec<(String, Vec<(f64, f64)>)>,
}

/// Draws line panels in a grid (`cols` wide) to `path`; the legend is drawn in the first panel.
pub fn line_panels(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    panels: &[Panel],
    cols: usize,
) -> Result<(), String> {
    let cols = cols.max(1);
    let rows = panels.len().div_ceil(cols).max(1);
    let root =
        SVGBackend::new(path, (380 * cols as u32, 300 * rows as u32 + 40)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(err)?;
    let areas = root.split_evenly((rows, cols));
    for (idx, (panel, area)) in panels.iter().zip(areas.iter()).enumerate() {
        draw_panel(area, panel, x_label, y_label, idx == 0)?;
    }
    root.present().map_err(err)
}

fn draw_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    panel: &Panel,
    x_label: &str,
    y_label: &str,
    legend: bool,
) -> Result<(), String> {
    let pts = || panel.lines.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
    for &(x, y) in pts() {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if !x0.is_finite() || !x1.is_finite() {
        return Ok(());
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 15))
        .margin(8)
        .x_label_area_size(30)
        .y_label_area_size(55)
        .build_cartesian_2d(x0..x1, 0f64..(y1 * 1.1).max(1e-9))
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_labels(6)
        .y_labels(6)
        .draw()
        .map_err(err)?;
    for (j, (name, points)) in panel.lines.iter().enumerate() {
        let c = color(j);
        let s = chart
            .draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))
            .map_err(err)?;
        if legend {
            s.label(name.as_str())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 14, y)], c.stroke_width(2)));
        }
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 2, c.filled())))
            .map_err(err)?;
    }
    if legend {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 11))
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_svg_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bars.svg");
        grouped_bars(
            &p,
            "t",
            "ops/s",
            &["larson".into(), "xmalloc".into()],
            &[
                ("a".into(), vec![Some(1e6), None]),
                ("b".into(), vec![Some(2e6), Some(3e6)]),
            ],
            Some(1.0),
        )
        .unwrap();
        let svg = std::fs::read_to_string(&p).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("larson"));
        let q = dir.path().join("lines.svg");
        line_panels(
            &q,
            "t",
            "x",
            "y",
            &[Panel {
                title: "p".into(),
                lines: vec![("a".into(), vec![(1.0, 2.0), (2.0, 3.0)])],
            }],
            2,
        )
        .unwrap();
        assert!(std::fs::read_to_string(&q).unwrap().contains("<svg"));
    }
}
