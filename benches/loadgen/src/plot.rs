//! `--plot FILE`: latency by percentile, one line per server, as SVG.
//!
//! The x axis is in "nines" (−log10(1 − p)): 50 %, 90 %, 99 %, 99.9 % … are
//! evenly spaced, as in HdrHistogram's own plots. The y axis is logarithmic.

use std::path::Path;

use plotters::prelude::*;

/// One line: a label and (percentile, µs) points.
pub struct Line<'a> {
    pub label: String,
    pub points: &'a [(f64, f64)],
}

fn nines(p: f64) -> f64 {
    -(1.0 - (p / 100.0).min(0.99999)).log10()
}

pub fn write_svg(path: &Path, title: &str, lines: &[Line<'_>]) -> anyhow::Result<()> {
    let ys = lines.iter().flat_map(|l| l.points.iter().map(|p| p.1));
    let (lo, hi) = ys.fold((f64::MAX, 0.0f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
    if hi <= 0.0 {
        anyhow::bail!("nothing to plot");
    }
    let (lo, hi) = ((lo * 0.8).max(1.0), hi * 1.25);
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    let err = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("plotting {}: {e:?}", path.display());
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .margin_right(40)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(0.0f64..5.0f64, (lo..hi).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_labels(6)
        .x_label_formatter(&|x| {
            let p = 100.0 * (1.0 - 10f64.powf(-x));
            let s = format!("{p:.3}");
            format!("{}%", s.trim_end_matches('0').trim_end_matches('.'))
        })
        .y_label_formatter(&|y| {
            if *y >= 1000.0 {
                format!("{:.1} ms", y / 1000.0)
            } else {
                format!("{y:.0} µs")
            }
        })
        .x_desc("percentile")
        .y_desc("latency from intended start")
        .draw()
        .map_err(err)?;
    let palette = [
        RGBColor(0xd6, 0x27, 0x28),
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0x2c, 0xa0, 0x2c),
        RGBColor(0xff, 0x7f, 0x0e),
        RGBColor(0x94, 0x67, 0xbd),
    ];
    for (i, line) in lines.iter().enumerate() {
        let color = palette[i % palette.len()];
        let pts: Vec<(f64, f64)> = line
            .points
            .iter()
            .map(|(p, us)| (nines(*p), us.max(lo)))
            .collect();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(err)?
            .label(line.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
