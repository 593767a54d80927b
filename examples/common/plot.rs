//! The PNGs the examples write.

use super::*;

/// The loss curve (per-step loss, light, and its 20-step moving average,
/// dark) as a PNG, without text (no fonts needed).
pub fn plot_losses(path: &Path, losses: &[f32]) -> Result<()> {
    use plotters::prelude::*;
    let root = BitMapBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let n = losses.len().max(2);
    let max = losses.iter().cloned().fold(1e-6f32, f32::max);
    let area = root.margin(20, 20, 20, 20);
    let mut chart = ChartBuilder::on(&area).build_cartesian_2d(0f32..n as f32, 0f32..max * 1.05)?;
    // a few horizontal guides at quarters of the range
    for q in 1..4 {
        let y = max * 1.05 * q as f32 / 4.0;
        chart.draw_series(LineSeries::new(
            [(0.0, y), (n as f32, y)],
            RGBColor(225, 225, 225),
        ))?;
    }
    chart.draw_series(LineSeries::new(
        losses.iter().enumerate().map(|(i, &l)| (i as f32, l)),
        RGBColor(160, 190, 230),
    ))?;
    let window = 20usize;
    let smooth: Vec<(f32, f32)> = (0..losses.len())
        .map(|i| {
            let lo = i.saturating_sub(window - 1);
            let s = &losses[lo..=i];
            (i as f32, s.iter().sum::<f32>() / s.len() as f32)
        })
        .collect();
    chart.draw_series(LineSeries::new(smooth, BLUE.stroke_width(2)))?;
    area.draw(&Rectangle::new([(0, 0), (759, 459)], BLACK))?;
    root.present()?;
    Ok(())
}

/// Ten distinguishable colours (Tableau 10), one per digit.
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

/// A scatter of 2-D points coloured by label, without text.
pub fn plot_scatter(path: &Path, points: &[f32], labels: &[usize]) -> Result<()> {
    use plotters::prelude::*;
    let xs = points.iter().step_by(2);
    let ys = points.iter().skip(1).step_by(2);
    let (x0, x1) = xs.fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let (y0, y1) = ys.fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let pad_x = (x1 - x0).max(1e-6) * 0.03;
    let pad_y = (y1 - y0).max(1e-6) * 0.03;
    let root = BitMapBackend::new(path, (800, 800)).into_drawing_area();
    root.fill(&WHITE)?;
    let area = root.margin(10, 10, 10, 10);
    let mut chart = ChartBuilder::on(&area)
        .build_cartesian_2d((x0 - pad_x)..(x1 + pad_x), (y0 - pad_y)..(y1 + pad_y))?;
    chart.draw_series(points.chunks(2).zip(labels).map(|(p, &l)| {
        let (r, g, b) = PALETTE[l % 10];
        Circle::new((p[0], p[1]), 2, RGBColor(r, g, b).filled())
    }))?;
    root.present()?;
    Ok(())
}
