//! Line charts as plain SVG: titles, labelled axes with round ticks, a
//! legend. Written by hand so the charts need no fonts or libraries to
//! render, and open in any browser.

use std::fmt::Write;

pub struct Series {
    pub name: String,
    pub color: &'static str,
    pub points: Vec<(f64, f64)>,
}

const WIDTH: f64 = 820.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 48.0;
const BOTTOM: f64 = 56.0;

pub const COLORS: [&str; 5] = ["#d7263d", "#1b6ca8", "#17804a", "#b36b00", "#6b4fa0"];

/// Round tick spacing (1, 2 or 5 × 10^k) giving about five ticks up to `max`.
fn tick_step(max: f64) -> f64 {
    let raw = (max / 5.0).max(f64::MIN_POSITIVE);
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw);
    step.unwrap_or(10.0 * magnitude)
}

fn label(value: f64) -> String {
    if value >= 10_000.0 {
        format!("{}k", (value / 1_000.0).round())
    } else if value.fract() == 0.0 {
        format!("{value}")
    } else {
        format!("{value:.2}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let all = series.iter().flat_map(|s| s.points.iter());
    let x_max = all.clone().map(|p| p.0).fold(0.0, f64::max).max(1.0);
    let y_max = all.map(|p| p.1).fold(0.0, f64::max).max(1e-9);
    let (x_step, y_step) = (tick_step(x_max), tick_step(y_max));
    let x_top = (x_max / x_step).ceil() * x_step;
    let y_top = (y_max / y_step).ceil() * y_step;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x_at = |x: f64| LEFT + x / x_top * plot_w;
    let y_at = |y: f64| TOP + plot_h - y / y_top * plot_h;

    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="system-ui, sans-serif" font-size="12">
<rect width="100%" height="100%" fill="#ffffff"/>
<text x="{}" y="26" font-size="16" font-weight="600" text-anchor="middle">{}</text>
"##,
        WIDTH / 2.0,
        escape(title)
    );
    let mut y = 0.0;
    while y <= y_top + y_step / 2.0 {
        let py = y_at(y);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{py}" y2="{py}" stroke="#e3e6ee"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 8.0,
            py + 4.0,
            label(y)
        );
        y += y_step;
    }
    let mut x = 0.0;
    while x <= x_top + x_step / 2.0 {
        let px = x_at(x);
        let _ = writeln!(
            svg,
            r##"<line x1="{px}" x2="{px}" y1="{}" y2="{}" stroke="#9aa1b1"/><text x="{px}" y="{}" text-anchor="middle">{}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 5.0,
            TOP + plot_h + 20.0,
            label(x)
        );
        x += x_step;
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{}" stroke="#5b6478"/><line x1="{LEFT}" x2="{}" y1="{}" y2="{}" stroke="#5b6478"/>
<text x="{}" y="{}" text-anchor="middle">{}</text>
<text transform="translate(18 {}) rotate(-90)" text-anchor="middle">{}</text>"##,
        TOP + plot_h,
        WIDTH - RIGHT,
        TOP + plot_h,
        TOP + plot_h,
        LEFT + plot_w / 2.0,
        HEIGHT - 12.0,
        escape(x_label),
        TOP + plot_h / 2.0,
        escape(y_label)
    );
    for (i, s) in series.iter().enumerate() {
        let points: Vec<String> = s
            .points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", x_at(*x), y_at(*y)))
            .collect();
        let _ = writeln!(
            svg,
            r##"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"##,
            s.color,
            points.join(" ")
        );
        let ly = TOP + 8.0 + 18.0 * i as f64;
        let lx = WIDTH - RIGHT - 190.0;
        let _ = writeln!(
            svg,
            r##"<rect x="{lx}" y="{}" width="14" height="4" fill="{}"/><text x="{}" y="{}">{}</text>"##,
            ly - 2.0,
            s.color,
            lx + 20.0,
            ly + 4.0,
            escape(&s.name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        assert_eq!(tick_step(100.0), 20.0);
        assert_eq!(tick_step(37.0), 10.0);
        assert_eq!(tick_step(0.9), 0.2);
        assert_eq!(tick_step(52_000.0), 20_000.0);
    }

    #[test]
    fn a_chart_is_an_svg_with_its_series() {
        let svg = line_chart(
            "Requests <per> second",
            "seconds",
            "requests/s",
            &[Series {
                name: "202".into(),
                color: COLORS[0],
                points: vec![(0.0, 1.0), (1.0, 3.0)],
            }],
        );
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("Requests &lt;per&gt; second"));
        assert!(svg.contains("<polyline"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }
}
