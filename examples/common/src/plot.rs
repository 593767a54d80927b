//! The pictures the examples write, each a PNG with a title, axis labels
//! with tick values and a legend: a loss curve, a 2-D scatter coloured by
//! class, a grouped bar chart and a grid of images.
//!
//! Text is drawn by plotters' `ab_glyph` backend with the Ubuntu Light font
//! that `epaint_default_fonts` embeds, registered once on first use: no
//! system font is read, so a fresh machine draws the same letters.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::Result;

/// The font family every text here uses (registered by [`fonts`]).
const FAMILY: &str = "sans-serif";
const TITLE_PT: u32 = 26;
const LABEL_PT: u32 = 19;
const TICK_PT: u32 = 15;

/// Ten distinguishable colours (Tableau 10): class `i` and series `i` get
/// `PALETTE[i % 10]`.
pub const PALETTE: [(u8, u8, u8); 10] = [
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

/// Colour `i` of [`PALETTE`].
pub fn colour(i: usize) -> RGBColor {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    RGBColor(r, g, b)
}

/// Registers the embedded font with plotters, once per process. Every
/// function here calls it first; call it yourself before drawing text with
/// plotters directly.
pub fn fonts() -> Result<()> {
    static REGISTERED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font(
                FAMILY,
                FontStyle::Normal,
                epaint_default_fonts::UBUNTU_LIGHT,
            )
            .map_err(|_| "the embedded Ubuntu Light font did not parse".to_string())
        })
        .clone()
        .map_err(Into::into)
}

fn text(pt: u32) -> TextStyle<'static> {
    (FAMILY, pt).into_font().color(&BLACK)
}

/// A legend drawn as a column of colour swatches and names in `area`
/// (outside the plot, so it hides no data), under a heading.
fn legend_column(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    heading: &str,
    entries: &[(String, RGBColor)],
) -> Result<()> {
    let line = 28;
    let top = 70;
    area.draw(&Text::new(
        heading.to_string(),
        (10, top - 34),
        text(LABEL_PT),
    ))?;
    for (i, (name, c)) in entries.iter().enumerate() {
        let y = top + i as i32 * line;
        area.draw(&Rectangle::new([(12, y), (30, y + 18)], c.filled()))?;
        area.draw(&Text::new(name.clone(), (40, y), text(LABEL_PT)))?;
    }
    Ok(())
}

/// Draws the loss of each optimiser step (light) and its trailing moving
/// average over `window` steps (dark), with a dashed vertical line and a
/// note at each of `markers` (a step and what changed there, e.g. the end
/// of a warm-up).
pub fn loss_curve(
    path: &Path,
    title: &str,
    losses: &[f32],
    window: usize,
    markers: &[(usize, &str)],
) -> Result<()> {
    fonts()?;
    let window = window.max(1);
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let steps = losses.len().max(2) as f32;
    let top = losses
        .iter()
        .copied()
        .filter(|l| l.is_finite())
        .fold(1e-6f32, f32::max)
        * 1.3; // headroom for the legend
    let mut chart = ChartBuilder::on(&root)
        .caption(title, text(TITLE_PT))
        .margin(16)
        .x_label_area_size(52)
        .y_label_area_size(72)
        .build_cartesian_2d(0f32..steps, 0f32..top)?;
    chart
        .configure_mesh()
        .x_desc("optimiser step")
        .y_desc("loss (mean over the batch)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .axis_desc_style(text(LABEL_PT))
        .label_style(text(TICK_PT))
        .light_line_style(RGBColor(238, 238, 238))
        .draw()?;
    let raw = RGBColor(150, 185, 230);
    chart
        .draw_series(LineSeries::new(
            losses.iter().enumerate().map(|(i, &l)| (i as f32, l)),
            raw,
        ))?
        .label("loss of each step")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], raw.stroke_width(3)));
    let smooth: Vec<(f32, f32)> = (0..losses.len())
        .map(|i| {
            let s = &losses[i.saturating_sub(window - 1)..=i];
            (i as f32, s.iter().sum::<f32>() / s.len() as f32)
        })
        .collect();
    let dark = RGBColor(20, 60, 160);
    chart
        .draw_series(LineSeries::new(smooth, dark.stroke_width(2)))?
        .label(format!("moving average of {window} steps"))
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], dark.stroke_width(3)));
    let grey = RGBColor(110, 110, 110);
    for &(step, note) in markers {
        let x = step as f32;
        chart.draw_series(DashedLineSeries::new(
            [(x, 0.0), (x, top)],
            6,
            4,
            grey.stroke_width(1),
        ))?;
        chart.draw_series(std::iter::once(Text::new(
            note.to_string(),
            (x + steps * 0.008, top * 0.97),
            text(TICK_PT).color(&grey),
        )))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(text(LABEL_PT))
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(180, 180, 180))
        .draw()?;
    root.present()?;
    Ok(())
}

/// Draws 2-D points (`points` holds `x0, y0, x1, y1, ...`) coloured by
/// `labels`, with a legend naming each class (`class_name(label)`) beside
/// the plot.
pub fn scatter_2d(
    path: &Path,
    title: &str,
    points: &[f32],
    labels: &[usize],
    class_name: &dyn Fn(usize) -> String,
) -> Result<()> {
    if points.len() != 2 * labels.len() {
        return Err(format!(
            "scatter_2d: {} coordinates for {} labels",
            points.len(),
            labels.len()
        )
        .into());
    }
    fonts()?;
    let bounds = |axis: usize| {
        let (lo, hi) = points
            .iter()
            .skip(axis)
            .step_by(2)
            .filter(|v| v.is_finite())
            .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        let (lo, hi) = if lo > hi { (-1.0, 1.0) } else { (lo, hi) };
        let pad = (hi - lo).max(1e-6) * 0.04;
        (lo - pad)..(hi + pad)
    };
    let root = BitMapBackend::new(path, (1000, 820)).into_drawing_area();
    root.fill(&WHITE)?;
    let (plot, side) = root.split_horizontally(820);
    let mut chart = ChartBuilder::on(&plot)
        .caption(title, text(TITLE_PT))
        .margin(16)
        .x_label_area_size(52)
        .y_label_area_size(72)
        .build_cartesian_2d(bounds(0), bounds(1))?;
    chart
        .configure_mesh()
        .x_desc("embedding coordinate 1")
        .y_desc("embedding coordinate 2")
        .axis_desc_style(text(LABEL_PT))
        .label_style(text(TICK_PT))
        .light_line_style(RGBColor(238, 238, 238))
        .draw()?;
    let mut classes: Vec<usize> = labels.to_vec();
    classes.sort_unstable();
    classes.dedup();
    for &c in &classes {
        let col = colour(c);
        chart.draw_series(
            points
                .chunks_exact(2)
                .zip(labels)
                .filter(|&(_, &l)| l == c)
                .map(|(p, _)| Circle::new((p[0], p[1]), 2, col.mix(0.8).filled())),
        )?;
    }
    let entries: Vec<(String, RGBColor)> = classes
        .iter()
        .map(|&c| {
            let n = labels.iter().filter(|&&l| l == c).count();
            (format!("{} ({n})", class_name(c)), colour(c))
        })
        .collect();
    legend_column(&side.margin(40, 0, 0, 0), "class (points)", &entries)?;
    root.present()?;
    Ok(())
}

/// A grouped bar chart: one group per category along x, one bar per
/// series in each group, the series named in the legend.
#[derive(Debug, Clone, Copy)]
pub struct Bars<'a> {
    pub title: &'a str,
    /// What the categories are (the x axis' description).
    pub x_desc: &'a str,
    /// What the values are (the y axis' description).
    pub y_desc: &'a str,
    /// The names under the groups.
    pub categories: &'a [&'a str],
    /// `(name, one value per category)`.
    pub series: &'a [(&'a str, &'a [f64])],
    /// The y range; `None`: from 0 (or the smallest value, if negative) to
    /// a little above the largest.
    pub y_range: Option<(f64, f64)>,
    /// Print each value above its bar.
    pub values: bool,
}

/// Draws a [`Bars`] chart.
pub fn bar_chart(path: &Path, bars: &Bars<'_>) -> Result<()> {
    let n = bars.categories.len();
    if n == 0 || bars.series.is_empty() {
        return Err("bar_chart: no categories or no series".into());
    }
    if let Some((name, v)) = bars.series.iter().find(|(_, v)| v.len() != n) {
        return Err(format!(
            "bar_chart: series {name:?} has {} values for {n} categories",
            v.len()
        )
        .into());
    }
    fonts()?;
    let all = bars.series.iter().flat_map(|(_, v)| v.iter().copied());
    let (lo, hi) = bars.y_range.unwrap_or_else(|| {
        let (lo, hi) = all
            .filter(|v| v.is_finite())
            .fold((0f64, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
        let hi = if hi > lo { hi } else { lo + 1.0 };
        (lo, hi + (hi - lo) * 0.12)
    });
    let width = (260 + 90 * n * bars.series.len()).clamp(700, 1400) as u32;
    let legend_w = 60
        + bars
            .series
            .iter()
            .map(|(name, _)| 11 * name.chars().count() as u32)
            .max()
            .unwrap_or(0);
    let canvas = BitMapBackend::new(path, (width + legend_w, 560)).into_drawing_area();
    canvas.fill(&WHITE)?;
    let (root, side) = canvas.split_horizontally(width);
    let mut chart = ChartBuilder::on(&root)
        .caption(bars.title, text(TITLE_PT))
        .margin(16)
        .x_label_area_size(60)
        .y_label_area_size(76)
        .build_cartesian_2d(0f64..n as f64, lo..hi)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .x_desc(bars.x_desc)
        .y_desc(bars.y_desc)
        .axis_desc_style(text(LABEL_PT))
        .label_style(text(TICK_PT))
        .light_line_style(RGBColor(238, 238, 238))
        .draw()?;
    // The category names, centred under their groups (in the label area,
    // where the tick values of a numeric axis would be).
    let under = Pos::new(HPos::Center, VPos::Top);
    for (i, name) in bars.categories.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(i as f64 + 0.5, lo));
        root.draw(&Text::new(
            name.to_string(),
            (x, y + 8),
            text(TICK_PT).pos(under),
        ))?;
    }
    let s = bars.series.len() as f64;
    let bar = 0.8 / s;
    for (j, (_, values)) in bars.series.iter().enumerate() {
        let col = colour(j);
        let left = |i: usize| i as f64 + 0.1 + j as f64 * bar;
        chart.draw_series(values.iter().enumerate().map(|(i, &v)| {
            Rectangle::new(
                [(left(i), lo.max(0.0)), (left(i) + bar * 0.92, v)],
                col.filled(),
            )
        }))?;
        if bars.values {
            chart.draw_series(values.iter().enumerate().map(|(i, &v)| {
                Text::new(
                    format!("{}", Sig3(v)),
                    (left(i), v + (hi - lo) * 0.035),
                    text(TICK_PT - 2),
                )
            }))?;
        }
    }
    let entries: Vec<(String, RGBColor)> = bars
        .series
        .iter()
        .enumerate()
        .map(|(j, (name, _))| (name.to_string(), colour(j)))
        .collect();
    legend_column(&side, "series", &entries)?;
    canvas.present()?;
    Ok(())
}

/// Three significant digits, no exponent for everyday magnitudes.
struct Sig3(f64);

impl std::fmt::Display for Sig3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = self.0;
        if v == 0.0 || !v.is_finite() {
            return write!(f, "{v}");
        }
        let digits = 2 - v.abs().log10().floor() as i32;
        if (-2..=6).contains(&digits) {
            write!(f, "{:.*}", digits.max(0) as usize, v)
        } else {
            write!(f, "{v:.2e}")
        }
    }
}

/// One cell of an [`ImageGrid`]: a grey-scale image, a caption under it and
/// an optional frame colour (which the legend explains).
#[derive(Debug, Clone)]
pub struct Cell<'a> {
    /// `width * height` intensities in `[0, 1]`, row-major, 1 = ink.
    pub pixels: &'a [f32],
    pub caption: String,
    pub frame: Option<RGBColor>,
}

/// A grid of small grey-scale images (digits, say): rows of cells, the
/// rows and the columns named, and a legend for the frame colours.
#[derive(Debug, Clone)]
pub struct ImageGrid<'a> {
    pub title: &'a str,
    /// Size of every image in pixels.
    pub width: usize,
    pub height: usize,
    /// Each image drawn `scale` times larger.
    pub scale: usize,
    /// Rows of cells (rows may differ in length).
    pub rows: Vec<Vec<Cell<'a>>>,
    /// A name left of each row (may be empty).
    pub row_labels: Vec<String>,
    /// A name above each column (may be empty).
    pub column_labels: Vec<String>,
    /// What each frame colour means.
    pub legend: Vec<(String, RGBColor)>,
}

/// Draws an [`ImageGrid`].
pub fn image_grid(path: &Path, grid: &ImageGrid<'_>) -> Result<()> {
    let (w, h, scale) = (grid.width, grid.height, grid.scale.max(1));
    for cell in grid.rows.iter().flatten() {
        if cell.pixels.len() != w * h {
            return Err(format!(
                "image_grid: a cell has {} pixels, not {w} x {h}",
                cell.pixels.len()
            )
            .into());
        }
    }
    fonts()?;
    let cols = grid.rows.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let (cw, ch) = ((w * scale) as i32, (h * scale) as i32);
    let (gap, caption) = (14, 24);
    // A column is as wide as its widest caption or label, at least the image.
    let measure = |s: &str, pt: u32| {
        FontDesc::new(FontFamily::Name(FAMILY), pt.into(), FontStyle::Normal).box_size(s)
    };
    let measure = |s: &str, pt: u32| measure(s, pt).map(|(w, _)| w as i32 + 10).unwrap_or(0);
    let widest = grid
        .rows
        .iter()
        .flatten()
        .map(|c| measure(&c.caption, TICK_PT))
        .chain(grid.column_labels.iter().map(|l| measure(l, LABEL_PT)))
        .max()
        .unwrap_or(0);
    let cw_slot = cw.max(widest);
    let left = 20
        + grid
            .row_labels
            .iter()
            .map(|l| measure(l, LABEL_PT))
            .max()
            .unwrap_or(0);
    let top = 60 + if grid.column_labels.is_empty() { 0 } else { 30 };
    let legend_h = if grid.legend.is_empty() { 0 } else { 50 };
    let total_w = left + cols as i32 * (cw_slot + gap) + 20;
    let total_h = top + grid.rows.len() as i32 * (ch + caption + gap) + legend_h + 10;
    let root =
        BitMapBackend::new(path, (total_w.max(480) as u32, total_h as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let title_style = text(TITLE_PT).pos(Pos::new(HPos::Center, VPos::Top));
    root.draw(&Text::new(
        grid.title.to_string(),
        (total_w.max(480) / 2, 12),
        title_style,
    ))?;
    let centred = |pt| text(pt).pos(Pos::new(HPos::Center, VPos::Top));
    for (c, label) in grid.column_labels.iter().enumerate() {
        let x = left + c as i32 * (cw_slot + gap) + cw_slot / 2;
        root.draw(&Text::new(label.clone(), (x, top - 28), centred(LABEL_PT)))?;
    }
    for (r, row) in grid.rows.iter().enumerate() {
        let y0 = top + r as i32 * (ch + caption + gap);
        if let Some(label) = grid.row_labels.get(r) {
            root.draw(&Text::new(
                label.clone(),
                (10, y0 + ch / 2 - 10),
                text(LABEL_PT),
            ))?;
        }
        for (c, cell) in row.iter().enumerate() {
            let x0 = left + c as i32 * (cw_slot + gap) + (cw_slot - cw) / 2;
            for (i, &v) in cell.pixels.iter().enumerate() {
                let grey = 255 - (v.clamp(0.0, 1.0) * 255.0).round() as u8;
                let (px, py) = ((i % w) as i32 * scale as i32, (i / w) as i32 * scale as i32);
                root.draw(&Rectangle::new(
                    [
                        (x0 + px, y0 + py),
                        (x0 + px + scale as i32, y0 + py + scale as i32),
                    ],
                    RGBColor(grey, grey, grey).filled(),
                ))?;
            }
            if let Some(frame) = cell.frame {
                root.draw(&Rectangle::new(
                    [(x0 - 3, y0 - 3), (x0 + cw + 2, y0 + ch + 2)],
                    frame.stroke_width(3),
                ))?;
            }
            root.draw(&Text::new(
                cell.caption.clone(),
                (x0 + cw / 2, y0 + ch + 5),
                centred(TICK_PT),
            ))?;
        }
    }
    let mut x = left;
    let y = total_h - legend_h + 12;
    for (name, c) in &grid.legend {
        root.draw(&Rectangle::new(
            [(x, y), (x + 22, y + 22)],
            c.stroke_width(3),
        ))?;
        root.draw(&Text::new(name.clone(), (x + 30, y + 2), text(LABEL_PT)))?;
        let (tw, _) = root.estimate_text_size(name, &text(LABEL_PT))?;
        x += 30 + tw as i32 + 30;
    }
    root.present()?;
    Ok(())
}
