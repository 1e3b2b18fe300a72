//! The experiment's chart, a PNG drawn with `plotters`: sustained req/s against the number of
//! pods for both modes (top), and the p99 at that rate (bottom). Text needs a TrueType font,
//! read at run time from Debian's `fonts-dejavu-core` (or `fonts-liberation`).

use crate::scale::{Mode, Results};
use anyhow::{Result, anyhow};
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};
use std::path::Path;
use std::sync::OnceLock;

/// Fonts tried in order; the first that exists is used.
pub const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];
/// Size of the picture in pixels.
const SIZE: (u32, u32) = (1000, 790);
/// Height of the top panel.
const TOP: u32 = 470;

/// Registers the first font of [`FONTS`] as "sans-serif", once per process.
fn font() -> Result<()> {
    // The outcome is kept as text: an error is reported again on every later call.
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    let done = DONE.get_or_init(|| {
        let (path, bytes) = FONTS
            .iter()
            .find_map(|p| std::fs::read(p).ok().map(|b| (p, b)))
            .ok_or_else(|| format!("no font found (tried {FONTS:?}): apt-get install fonts-dejavu-core"))?;
        // plotters keeps fonts for the whole process: the bytes live as long.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        register_font("sans-serif", FontStyle::Normal, bytes).map_err(|_| format!("{path}: not a usable font"))
    });
    done.clone().map_err(anyhow::Error::msg)
}

fn color(mode: Mode) -> RGBColor {
    match mode {
        Mode::Naive => RGBColor(214, 39, 40),
        Mode::Sidekick => RGBColor(31, 119, 180),
    }
}

/// Draws `results` into the PNG `path`.
pub fn draw(results: &Results, path: &Path) -> Result<()> {
    font()?;
    draw_inner(results, path).map_err(|e| anyhow!("{}: {e}", path.display()))
}

fn draw_inner(r: &Results, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, rest) = root.split_vertically(TOP);
    let (bottom, footer_area) = rest.split_vertically(SIZE.1 - TOP - 30);
    let max_n = r.points.iter().map(|p| p.pods).max().unwrap_or(1) as f64;
    let max_rate = r.points.iter().map(|p| p.sustained).fold(1000.0, f64::max) * 1.18;
    let series = |mode: Mode| -> Vec<(f64, f64, f64)> {
        let mut v: Vec<(f64, f64, f64)> = r
            .points
            .iter()
            .filter(|p| p.mode == mode)
            .map(|p| (p.pods as f64, p.sustained, p.at_sustained.as_ref().map_or(f64::NAN, |t| t.p99_ms)))
            .collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v
    };
    let plan = &r.plan;
    let caption = format!("Sustained GET rate vs pods: master and each replica at {}% of a core", plan.quota_percent);
    let mut chart = ChartBuilder::on(&top)
        .caption(caption, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(72)
        .build_cartesian_2d(0.5..max_n + 0.5, 0.0..max_rate)?;
    chart
        .configure_mesh()
        .x_labels(max_n as usize)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .x_desc("pods (N)")
        .y_desc("sustained req/s")
        .max_light_lines(1)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .draw()?;
    for mode in [Mode::Sidekick, Mode::Naive] {
        let s = series(mode);
        if s.is_empty() {
            continue;
        }
        let c = color(mode);
        let label = match mode {
            Mode::Naive => "naive: every pod reads the master",
            Mode::Sidekick => "sidekick: every pod reads its own replica",
        };
        chart
            .draw_series(LineSeries::new(s.iter().map(|&(x, y, _)| (x, y)), c.stroke_width(3)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(3)));
        chart.draw_series(s.iter().map(|&(x, y, _)| Circle::new((x, y), 5, c.filled())))?;
        // Sidekick's values above its points, naive's below: they coincide at N = 1.
        let dy = if mode == Mode::Sidekick { -24 } else { 10 };
        chart.draw_series(s.iter().map(|&(x, y, _)| {
            EmptyElement::at((x, y)) + Text::new(format!("{y:.0}"), (-18, dy), ("sans-serif", 14).into_font().color(&c))
        }))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.4))
        .draw()?;

    let max_p99 = plan.max_p99_ms * 1.25;
    let mut p99 = ChartBuilder::on(&bottom)
        .caption(
            format!(
                "p99 at the sustained rate (criteria: p99 ≤ {} ms, success ≥ {}%; {} s trials)",
                plan.max_p99_ms,
                plan.min_success * 100.0,
                plan.trial_s
            ),
            ("sans-serif", 17),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(72)
        .build_cartesian_2d(0.5..max_n + 0.5, 0.0..max_p99)?;
    p99.configure_mesh()
        .x_labels(max_n as usize)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .x_desc("pods (N)")
        .y_desc("p99 ms")
        .max_light_lines(1)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .draw()?;
    p99.draw_series(LineSeries::new(
        [(0.5, plan.max_p99_ms), (max_n + 0.5, plan.max_p99_ms)],
        RGBColor(120, 120, 120).stroke_width(2),
    ))?;
    p99.draw_series(std::iter::once(Text::new(
        "threshold",
        (0.55, plan.max_p99_ms * 0.97),
        ("sans-serif", 13).into_font().color(&RGBColor(90, 90, 90)),
    )))?;
    for mode in [Mode::Sidekick, Mode::Naive] {
        let s: Vec<(f64, f64)> = series(mode).into_iter().filter(|t| t.2.is_finite()).map(|(x, _, p)| (x, p)).collect();
        let c = color(mode);
        p99.draw_series(LineSeries::new(s.iter().copied(), c.stroke_width(2)))?;
        p99.draw_series(s.iter().map(|&(x, y)| Circle::new((x, y), 4, c.filled())))?;
    }
    let m = &r.machine;
    let footer = format!(
        "{} × {}, Linux {}; load generator, APIs and Redis share the cores; {} connections; updater 1 POST/s",
        m.cpus, m.cpu_model, m.kernel, plan.connections
    );
    footer_area.draw(&Text::new(footer, (14, 6), ("sans-serif", 14).into_font().color(&RGBColor(90, 90, 90))))?;
    root.present()?;
    Ok(())
}
