//! The drawing primitives of the report's SVG charts, with plotters' SVG backend (text is
//! written as SVG `<text>`, so no font files are needed): grouped bar charts and grids of line
//! panels, each with its legend in a strip to the right of the data. Colours follow the
//! allocator, not the series' position ([`allocator_color`]), so an allocator keeps its colour
//! in every chart and no two allocators share one. Which charts exist is decided in
//! [`super::charts`].

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

/// One series of a bar or line chart: a name and one value per group (`None`: no bar).
pub type Series = (String, Vec<Option<f64>>);

/// Width of the legend strip to the right of the data.
const LEGEND_W: u32 = 200;

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("chart: {e:?}")
}

/// The colour of an allocator: its place in the registry (a hardened twin takes its plain
/// build's colour; the twins have a chart of their own), so the nine allocators get nine
/// different colours. Other series (percentiles) take [`color`] by position; "live bytes" lines
/// are black.
pub fn allocator_color(name: &str) -> RGBColor {
    let base = crate::registry::base_name(name);
    match crate::registry::ALLOCATORS
        .iter()
        .position(|a| a.name == base)
    {
        Some(i) => color(i),
        None if name.starts_with("live") => BLACK,
        None => color(PALETTE.len() - 1),
    }
}

/// The colour of series `i` of a chart whose series are not allocators.
pub fn color(i: usize) -> RGBColor {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    RGBColor(r, g, b)
}

/// A qualitative palette (Tableau 10) of ten distinct colours.
const PALETTE: [(u8, u8, u8); 10] = [
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

/// How a legend entry is drawn.
#[derive(Clone, Copy)]
enum Mark {
    /// A filled square (bars).
    Bar,
    /// A line.
    Line,
}

/// Draws a legend in `area` (a strip beside the data): one entry per (name, colour), then
/// notes in plain text.
fn legend(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    entries: &[(String, RGBColor)],
    mark: Mark,
    notes: &[&str],
) -> Result<(), String> {
    let font = ("sans-serif", 13);
    let mut y = 50;
    for (name, c) in entries {
        match mark {
            Mark::Bar => area.draw(&Rectangle::new([(10, y - 6), (24, y + 6)], c.filled())),
            Mark::Line => area.draw(&PathElement::new([(8, y), (30, y)], c.stroke_width(3))),
        }
        .map_err(err)?;
        area.draw(&Text::new(name.clone(), (38, y - 7), font))
            .map_err(err)?;
        y += 22;
    }
    y += 10;
    for line in notes {
        area.draw(&Text::new(line.to_string(), (10, y - 7), font))
            .map_err(err)?;
        y += 18;
    }
    Ok(())
}

/// The colour of a series: its allocator's if it names one, else by position.
fn series_color(i: usize, name: &str, by_allocator: bool) -> RGBColor {
    if by_allocator {
        allocator_color(name)
    } else {
        color(i)
    }
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

/// Draws a grouped bar chart with a logarithmic y axis to `path`, the legend to the right;
/// `by_allocator`: the series are allocators (coloured by [`allocator_color`]).
pub fn grouped_bars(
    path: &Path,
    title: &str,
    y_label: &str,
    groups: &[String],
    series: &[Series],
    reference_line: Option<f64>,
    by_allocator: bool,
) -> Result<(), String> {
    let plot_w = (groups.len() as u32 * 14 * (series.len() as u32).max(3)).clamp(800, 1500);
    let whole = SVGBackend::new(path, (plot_w + LEGEND_W, 520)).into_drawing_area();
    whole.fill(&WHITE).map_err(err)?;
    let (root, strip) = whole.split_horizontally(plot_w);
    let entries: Vec<(String, RGBColor)> = series
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (n.clone(), series_color(i, n, by_allocator)))
        .collect();
    let note = reference_line.map(|r| format!("black line: {r}"));
    let notes: Vec<&str> = note.iter().map(String::as_str).collect();
    legend(&strip, &entries, Mark::Bar, &notes)?;
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
    for (j, (_, values)) in series.iter().enumerate() {
        let c = entries[j].1;
        let bars = values.iter().enumerate().filter_map(|(i, v)| {
            let v = (*v)?;
            (v > 0.0).then(|| {
                let x0 = i as f64 + 0.1 + j as f64 * w;
                Rectangle::new([(x0, lo), (x0 + w, v)], c.filled())
            })
        });
        chart.draw_series(bars).map_err(err)?;
    }
    if let Some(r) = reference_line.filter(|r| *r > lo && *r < hi) {
        chart
            .draw_series(LineSeries::new([(0.0, r), (n, r)], BLACK.stroke_width(1)))
            .map_err(err)?;
    }
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
    whole.present().map_err(err)
}

/// One panel of a line chart: a title and named lines of (x, y) points.
pub struct Panel {
    /// The panel's title.
    pub title: String,
    /// Named lines.
    pub lines: Vec<(String, Vec<(f64, f64)>)>,
}

/// Draws line panels in a grid (`cols` wide) to `path`, one legend for all panels to the
/// right. Lines are coloured by [`allocator_color`] (lines named "live ..." black, dashed).
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
    let plot_w = 380 * cols as u32;
    let whole =
        SVGBackend::new(path, (plot_w + LEGEND_W, 300 * rows as u32 + 40)).into_drawing_area();
    whole.fill(&WHITE).map_err(err)?;
    let whole = whole.titled(title, ("sans-serif", 22)).map_err(err)?;
    let (root, strip) = whole.split_horizontally(plot_w);
    let mut entries: Vec<(String, RGBColor)> = Vec::new();
    for (name, pts) in panels.iter().flat_map(|p| p.lines.iter()) {
        if !pts.is_empty() && !entries.iter().any(|(n, _)| n == name) {
            entries.push((name.clone(), allocator_color(name)));
        }
    }
    legend(&strip, &entries, Mark::Line, &[])?;
    let areas = root.split_evenly((rows, cols));
    for (panel, area) in panels.iter().zip(areas.iter()) {
        draw_panel(area, panel, x_label, y_label)?;
    }
    whole.present().map_err(err)
}

fn draw_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    panel: &Panel,
    x_label: &str,
    y_label: &str,
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
    for (name, points) in &panel.lines {
        let c = allocator_color(name);
        if name.starts_with("live") {
            chart
                .draw_series(DashedLineSeries::new(
                    points.iter().copied(),
                    6,
                    4,
                    c.stroke_width(1),
                ))
                .map_err(err)?;
            continue;
        }
        chart
            .draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))
            .map_err(err)?;
        if points.len() <= 16 {
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, c.filled())))
                .map_err(err)?;
        }
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
                ("slab".into(), vec![Some(1e6), None]),
                ("jemalloc".into(), vec![Some(2e6), Some(3e6)]),
            ],
            Some(1.0),
            true,
        )
        .unwrap();
        let svg = std::fs::read_to_string(&p).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("larson") && svg.contains("jemalloc"));
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

    #[test]
    fn every_allocator_has_its_own_colour() {
        let names: Vec<&str> = crate::registry::ALLOCATORS.iter().map(|a| a.name).collect();
        for (i, a) in names.iter().enumerate() {
            for b in &names[i + 1..] {
                assert_ne!(allocator_color(a), allocator_color(b), "{a} and {b}");
            }
        }
        assert_eq!(allocator_color("slab-hardened"), allocator_color("slab"));
    }
}
