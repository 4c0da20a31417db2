//! SVG plots of the summaries against pod count: one line per system and policy count.
//!
//! plotters is built without a font engine: its SVG backend writes text as `<text>`
//! elements that the viewer lays out, so nothing here needs fontconfig or freetype.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::stats::{Data, Summary};

/// What a plot puts on its y axis.
#[derive(Clone, Debug, PartialEq)]
pub enum Metric {
    /// Median latency, ms, log scale.
    Median,
    /// 99th percentile latency, ms, log scale.
    P99,
    /// A named figure of the records, divided by `scale`, linear from 0.
    Extra {
        /// The figure's name, e.g. `connects_per_sec`.
        name: &'static str,
        /// What the axis says.
        unit: &'static str,
        /// Divisor from the recorded unit to the axis'.
        scale: f64,
    },
}

impl Metric {
    /// The value one series plots, if it has one.
    pub fn value(&self, s: &Summary) -> Option<f64> {
        match self {
            Metric::Median => s.median_ns.map(|n| n as f64 / 1e6),
            Metric::P99 => s.p99_ns.map(|n| n as f64 / 1e6),
            Metric::Extra { name, scale, .. } => s.get(name).map(|v| v / scale),
        }
        .filter(|v| v.is_finite() && *v > 0.0)
    }

    fn axis(&self) -> String {
        match self {
            Metric::Median => "median latency (ms, log scale)".to_owned(),
            Metric::P99 => "p99 latency (ms, log scale)".to_owned(),
            Metric::Extra { unit, .. } => (*unit).to_owned(),
        }
    }

    fn log(&self) -> bool {
        matches!(self, Metric::Median | Metric::P99)
    }
}

/// One plot to draw.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    /// The scenario plotted.
    pub scenario: String,
    /// File name under the plot directory.
    pub file: String,
    /// Caption, also the report's alt text.
    pub title: String,
    /// The y axis.
    pub metric: Metric,
}

/// The plots the data supports: a median plot of every scenario with samples, a p99
/// plot of the pod deltas (their target has a p99 bound), the data path's rate and the
/// memory figures.
pub fn specs(d: &Data) -> Vec<Spec> {
    let mut out = Vec::new();
    for scenario in d.scenarios() {
        let has = |m: &Metric| d.of(&scenario).iter().any(|s| m.value(s).is_some());
        let mut add = |suffix: &str, title: String, metric: Metric| {
            if has(&metric) {
                out.push(Spec {
                    scenario: scenario.clone(),
                    file: format!("{scenario}{suffix}.svg"),
                    title,
                    metric,
                });
            }
        };
        add("", format!("{scenario}: median latency"), Metric::Median);
        if scenario == "pod_add" || scenario == "pod_delete" {
            add("_p99", format!("{scenario}: p99 latency"), Metric::P99);
        }
        add(
            "_rate",
            format!("{scenario}: connections per second"),
            Metric::Extra {
                name: "connects_per_sec",
                unit: "connections per second",
                scale: 1.0,
            },
        );
        add(
            "_engine_rss",
            format!("{scenario}: engine peak RSS"),
            Metric::Extra {
                name: "engine_rss_bytes",
                unit: "engine peak RSS (MB)",
                scale: 1e6,
            },
        );
        add(
            "_peak_rss",
            format!("{scenario}: process peak RSS"),
            Metric::Extra {
                name: "peak_rss_bytes",
                unit: "process peak RSS (MB)",
                scale: 1e6,
            },
        );
    }
    out
}

/// A colour per system, fixed so that a system looks the same in every plot.
fn colour(system: &str) -> RGBColor {
    match system {
        "netfence" => RGBColor(31, 119, 180),
        "calico-iptables" => RGBColor(214, 39, 40),
        "nft" => RGBColor(44, 160, 44),
        "calico-full" => RGBColor(255, 127, 14),
        "nft-full" => RGBColor(148, 103, 189),
        "calico-restart" => RGBColor(140, 86, 75),
        "nft-restart" => RGBColor(23, 190, 207),
        "none" => RGBColor(90, 90, 90),
        other => {
            // Unknown systems still get distinct, stable colours.
            let h = other
                .bytes()
                .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
            RGBColor(
                (h >> 16) as u8 / 2 + 60,
                (h >> 8) as u8 / 2 + 60,
                h as u8 / 2 + 60,
            )
        }
    }
}

/// A tick label with about three significant digits and no trailing zeros.
pub fn tick(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return "0".to_owned();
    }
    let digits = (2 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

fn pods_tick(x: f64) -> String {
    if x >= 1000.0 {
        format!("{}k", tick(x / 1000.0))
    } else {
        tick(x)
    }
}

/// (system, policies) → points (pods, value), sorted by pods.
type Lines = Vec<((String, usize), Vec<(f64, f64)>)>;

fn lines(d: &Data, spec: &Spec) -> Lines {
    let mut out: Lines = Vec::new();
    for system in d.systems(&spec.scenario) {
        let mut pols: Vec<usize> = d
            .of(&spec.scenario)
            .iter()
            .filter(|s| s.key.system == system)
            .map(|s| s.key.policies)
            .collect();
        pols.sort_unstable();
        pols.dedup();
        for pol in pols {
            let pts: Vec<(f64, f64)> = d
                .of(&spec.scenario)
                .iter()
                .filter(|s| s.key.system == system && s.key.policies == pol)
                .filter_map(|s| spec.metric.value(s).map(|v| (s.key.pods as f64, v)))
                .collect();
            if !pts.is_empty() {
                out.push(((system.clone(), pol), pts));
            }
        }
    }
    out
}

type DrawResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Draws one plot into `dir` and returns its path.
pub fn render(d: &Data, spec: &Spec, dir: &Path) -> DrawResult<PathBuf> {
    let lines = lines(d, spec);
    let values = || lines.iter().flat_map(|(_, p)| p.iter().map(|&(_, v)| v));
    let (Some(lo), Some(hi)) = (
        values().min_by(f64::total_cmp),
        values().max_by(f64::total_cmp),
    ) else {
        return Err(format!("{}: nothing to plot", spec.file).into());
    };
    let max_pods = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(x, _)| x))
        .fold(0.0, f64::max);
    let x_range = 0.0..max_pods * 1.08;

    // A macro, not a function: configure_mesh needs the axes' concrete types.
    macro_rules! mesh {
        ($chart:ident) => {
            $chart
                .configure_mesh()
                .x_desc("pods")
                .y_desc(spec.metric.axis())
                .x_label_formatter(&|x| pods_tick(*x))
                .y_label_formatter(&|y| tick(*y))
                // Enough for plotters to label 1..9 within a lone decade; over more
                // decades it labels the powers of ten only.
                .y_labels(12)
                .light_line_style(BLACK.mix(0.03))
                .label_style(("sans-serif", 14))
                .axis_desc_style(("sans-serif", 15))
                .draw()?
        };
    }

    let path = dir.join(&spec.file);
    {
        let root = SVGBackend::new(&path, (1060, 520)).into_drawing_area();
        root.fill(&WHITE)?;
        let body = root.titled(&spec.title, ("sans-serif", 22))?;
        // The legend gets a panel of its own: inside the chart it would hide data
        // wherever it went.
        let (plot_area, legend_area) = body.split_horizontally(790);
        let mut builder = ChartBuilder::on(&plot_area);
        builder
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(78);
        if spec.metric.log() {
            let y = decades(lo, hi).log_scale();
            let mut chart = builder.build_cartesian_2d(x_range, y)?;
            mesh!(chart);
            draw_lines(&mut chart, &lines)?;
        } else {
            let mut chart = builder.build_cartesian_2d(x_range, 0.0..hi * 1.15)?;
            mesh!(chart);
            draw_lines(&mut chart, &lines)?;
        }
        legend(&legend_area, &lines)?;
        root.present()?;
    }
    Ok(path)
}

/// A log axis' range: whole decades around the data, so that plotters (which labels
/// powers of ten) always has labels to draw, with room to keep points off the frame.
fn decades(lo: f64, hi: f64) -> std::ops::Range<f64> {
    let lo = 10f64.powf((lo / 1.1).log10().floor());
    let hi = 10f64.powf((hi * 1.1).log10().ceil());
    // A hair wider than the decades: rounding must not lose the end labels.
    lo * 0.999..hi * 1.001
}

type Chart<'a, X, Y> = ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>;

/// How one line looks: colour says the system; the first policy count of a system is
/// solid with filled dots, the others dashed with rings.
fn styles(system: &str, first: bool) -> (ShapeStyle, ShapeStyle) {
    let c = colour(system);
    let line = c.stroke_width(2);
    (line, if first { c.filled() } else { line })
}

/// Whether each line is its system's first (see [`styles`]).
fn firsts(lines: &Lines) -> Vec<bool> {
    let mut seen: Vec<&str> = Vec::new();
    lines
        .iter()
        .map(|((system, _), _)| {
            let first = !seen.contains(&system.as_str());
            seen.push(system);
            first
        })
        .collect()
}

fn draw_lines<'a, X, Y>(chart: &mut Chart<'a, X, Y>, lines: &Lines) -> DrawResult<()>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for (((system, _), pts), first) in lines.iter().zip(firsts(lines)) {
        let (line, dot) = styles(system, first);
        if first {
            chart.draw_series(LineSeries::new(pts.iter().copied(), line))?;
        } else {
            chart.draw_series(DashedLineSeries::new(pts.iter().copied(), 8, 5, line))?;
        }
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, dot)))?;
    }
    Ok(())
}

fn legend(area: &DrawingArea<SVGBackend<'_>, Shift>, lines: &Lines) -> DrawResult<()> {
    let font =
        TextStyle::from(("sans-serif", 14).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, (((system, pol), _), first)) in lines.iter().zip(firsts(lines)).enumerate() {
        let (line, dot) = styles(system, first);
        let y = 40 + 24 * i as i32;
        let path = if first {
            vec![(0, 0), (26, 0)]
        } else {
            vec![(0, 0), (9, 0)]
        };
        area.draw(
            &(EmptyElement::at((8, y))
                + PathElement::new(path, line)
                + PathElement::new(
                    if first {
                        vec![]
                    } else {
                        vec![(17, 0), (26, 0)]
                    },
                    line,
                )
                + Circle::new((13, 0), 4, dot)
                + Text::new(format!("{system}, {pol} policies"), (34, 0), font.clone())),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::summarize;
    use crate::stats::tests::rec;

    #[test]
    fn log_ranges_are_whole_decades() {
        let close = |r: std::ops::Range<f64>, a: f64, b: f64| {
            assert!(
                (r.start / a - 1.0).abs() < 0.01 && (r.end / b - 1.0).abs() < 0.01,
                "{r:?}"
            );
        };
        close(decades(20.0, 21.0), 10.0, 100.0);
        close(decades(0.2, 31.6), 0.1, 100.0);
        close(decades(0.105, 95.0), 0.01, 1000.0);
        // A point on a power of ten gets room below it.
        close(decades(1.0, 1.0), 0.1, 10.0);
    }

    #[test]
    fn ticks() {
        assert_eq!(tick(0.05), "0.05");
        assert_eq!(tick(0.123456), "0.123");
        assert_eq!(tick(1.0), "1");
        assert_eq!(tick(12.5), "12.5");
        assert_eq!(tick(2000.0), "2000");
        assert_eq!(pods_tick(10_000.0), "10k");
        assert_eq!(pods_tick(2_500.0), "2.5k");
        assert_eq!(pods_tick(0.0), "0");
    }

    #[test]
    fn specs_follow_the_data() {
        let mut tcp = rec("tcp_connect", "none", 1000, 100, &[50_000]);
        tcp.extra = vec![("connects_per_sec".into(), 20_000.0)];
        let mut rss = rec("rss", "netfence", 1000, 100, &[]);
        rss.extra = vec![("peak_rss_bytes".into(), 50e6)];
        let d = summarize(vec![
            rec("pod_add", "netfence", 1000, 100, &[1]),
            rec("policy_add", "netfence", 1000, 100, &[1]),
            tcp,
            rss,
        ]);
        let files: Vec<String> = specs(&d).into_iter().map(|s| s.file).collect();
        assert_eq!(
            files,
            [
                "pod_add.svg",
                "pod_add_p99.svg",
                "policy_add.svg",
                "rss_peak_rss.svg",
                "tcp_connect.svg",
                "tcp_connect_rate.svg"
            ]
        );
    }

    #[test]
    fn svg_smoke() {
        let mut recs = Vec::new();
        for (i, pods) in [1_000, 5_000, 10_000].into_iter().enumerate() {
            for pol in [100, 1_000] {
                let base = 100_000 + 10_000 * i as u64 + pol as u64;
                recs.push(rec(
                    "pod_add",
                    "netfence",
                    pods,
                    pol,
                    &[base, base + 5_000, base * 3],
                ));
                recs.push(rec(
                    "pod_add",
                    "calico-iptables",
                    pods,
                    pol,
                    &[base * 200, base * 210],
                ));
            }
        }
        let mut tcp = rec("tcp_connect", "none", 1_000, 100, &[50_000]);
        tcp.extra = vec![("connects_per_sec".into(), 20_000.0)];
        recs.push(tcp);
        let d = summarize(recs);
        let dir = std::env::temp_dir().join(format!("bench-report-svg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for spec in specs(&d) {
            let path = render(&d, &spec, &dir).unwrap();
            let svg = std::fs::read_to_string(&path).unwrap();
            assert!(
                svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
                "{svg}"
            );
            assert!(svg.contains("<text"), "{svg}");
            assert!(svg.contains(&spec.title), "{}: no title", spec.file);
            if spec.scenario == "pod_add" {
                assert!(svg.contains("calico-iptables, 1000 policies"));
                assert!(svg.contains("<polyline"));
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
