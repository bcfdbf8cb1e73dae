//! Hand-written SVG charts: grouped horizontal bars and line series.

/// Colours of the series, in order (linmem allocators come first).
const PALETTE: &[&str] = &[
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// Escapes text for SVG.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn colour(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

fn legend(out: &mut String, names: &[String], x: f64, y: f64) {
    for (i, n) in names.iter().enumerate() {
        let yy = y + i as f64 * 18.0;
        out.push_str(&format!(
            "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>\n",
            yy - 10.0,
            colour(i),
            x + 18.0,
            yy,
            esc(n)
        ));
    }
}

/// A "nice" axis maximum at or above `v`.
pub fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|&m| m >= v)
        .unwrap_or(10.0 * p)
}

/// Grouped horizontal bars: one group per label, one bar per series
/// (`None`: no bar, marked "n/a": failed or not measured). `marker` draws a vertical reference line
/// (e.g. 1.0 for ratios).
/// Titles: a bold title and a smaller subtitle under it.
pub struct Titles<'a> {
    /// The chart's title.
    pub title: &'a str,
    /// Where and when (engine, date).
    pub subtitle: &'a str,
}

fn header(width: f64, height: f64, left: f64, t: &Titles<'_>) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"22\" font-size=\"16\" font-weight=\"bold\">{}</text>\n\
         <text x=\"{left}\" y=\"40\" font-size=\"11\" fill=\"#555\">{}</text>\n",
        esc(t.title),
        esc(t.subtitle)
    )
}

/// Grouped bars. Values above `clip` are drawn to `clip` and labelled with
/// their value.
pub fn grouped_bars(
    titles: &Titles<'_>,
    unit: &str,
    groups: &[String],
    series: &[(String, Vec<Option<f64>>)],
    marker: Option<f64>,
    clip: Option<f64>,
) -> String {
    let bar = 11.0;
    let gap = 10.0;
    let left = 150.0;
    let plot_w = 560.0;
    let top = 60.0;
    let group_h = bar * series.len() as f64 + gap;
    let legend_x = left + plot_w + 30.0;
    let height =
        (top + group_h * groups.len() as f64 + 50.0).max(top + 18.0 * series.len() as f64 + 40.0);
    let width = legend_x + 160.0;
    let clip = clip.unwrap_or(f64::INFINITY);
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten())
        .map(|v| v.min(clip))
        .chain(marker)
        .fold(0.0, f64::max);
    let max = nice_max(max);
    let sx = |v: f64| left + v / max * plot_w;
    let mut out = header(width, height, left, titles);
    let bottom = top + group_h * groups.len() as f64;
    for i in 0..=5 {
        let v = max * i as f64 / 5.0;
        let x = sx(v);
        out += &format!(
            "<line x1=\"{x}\" y1=\"{top}\" x2=\"{x}\" y2=\"{bottom}\" stroke=\"#ddd\"/>\
             <text x=\"{x}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            bottom + 16.0,
            fmt_tick(v)
        );
    }
    out += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
        left + plot_w / 2.0,
        bottom + 34.0,
        esc(unit)
    );
    for (g, label) in groups.iter().enumerate() {
        let y0 = top + g as f64 * group_h;
        out += &format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n",
            left - 8.0,
            y0 + (group_h - gap) / 2.0 + 4.0,
            esc(label)
        );
        for (s, (name, values)) in series.iter().enumerate() {
            let y = y0 + s as f64 * bar;
            match values.get(g).copied().flatten() {
                Some(v) => {
                    out += &format!(
                        "<rect x=\"{left}\" y=\"{y}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{}: {}</title></rect>\n",
                        (sx(v.min(clip)) - left).max(0.5),
                        bar - 1.0,
                        colour(s),
                        esc(name),
                        fmt_tick(v)
                    );
                    if v > clip {
                        out += &format!(
                            "<text x=\"{}\" y=\"{}\" font-size=\"9\">{} →</text>\n",
                            sx(clip) + 3.0,
                            y + bar - 2.0,
                            fmt_tick(v)
                        );
                    }
                }
                None => {
                    out += &format!(
                        "<text x=\"{}\" y=\"{}\" font-size=\"9\" fill=\"#999\">n/a</text>\n",
                        left + 3.0,
                        y + bar - 2.0
                    )
                }
            }
        }
    }
    if let Some(m) = marker {
        let x = sx(m);
        out += &format!(
            "<line x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{bottom}\" stroke=\"black\" stroke-dasharray=\"4 3\"/>\n",
            top - 6.0
        );
    }
    let names: Vec<String> = series.iter().map(|(n, _)| n.clone()).collect();
    legend(&mut out, &names, legend_x, top + 10.0);
    out += "</svg>\n";
    out
}

/// Line chart of series over their sample index (x scaled to 0..=100%).
pub fn lines(
    titles: &Titles<'_>,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<f64>)],
) -> String {
    let left = 70.0;
    let top = 60.0;
    let plot_w = 560.0;
    let plot_h = 320.0;
    let legend_x = left + plot_w + 30.0;
    let width = legend_x + 160.0;
    let height = top + plot_h + 60.0;
    let max = nice_max(
        series
            .iter()
            .flat_map(|(_, v)| v.iter())
            .copied()
            .fold(0.0, f64::max),
    );
    let mut out = header(width, height, left, titles);
    let bottom = top + plot_h;
    for i in 0..=5 {
        let v = max * i as f64 / 5.0;
        let y = bottom - v / max * plot_h;
        out += &format!(
            "<line x1=\"{left}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n",
            left + plot_w,
            left - 6.0,
            y + 4.0,
            fmt_tick(v)
        );
    }
    out += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n\
         <text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">{}</text>\n",
        left + plot_w / 2.0,
        bottom + 36.0,
        esc(x_label),
        top + plot_h / 2.0,
        top + plot_h / 2.0,
        esc(y_label)
    );
    for (s, (name, v)) in series.iter().enumerate() {
        if v.is_empty() {
            continue;
        }
        let n = (v.len() - 1).max(1) as f64;
        let pts: Vec<String> = v
            .iter()
            .enumerate()
            .map(|(i, &y)| {
                format!(
                    "{:.1},{:.1}",
                    left + i as f64 / n * plot_w,
                    bottom - y / max * plot_h
                )
            })
            .collect();
        out += &format!(
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"><title>{}</title></polyline>\n",
            colour(s),
            pts.join(" "),
            esc(name)
        );
    }
    let names: Vec<String> = series.iter().map(|(n, _)| n.clone()).collect();
    legend(&mut out, &names, legend_x, top + 10.0);
    out += "</svg>\n";
    out
}

fn fmt_tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        format!("{v:.3}").trim_end_matches('0').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_max_rounds_up_to_1_2_2_5_5() {
        assert_eq!(nice_max(0.7), 1.0);
        assert_eq!(nice_max(1.3), 2.0);
        assert_eq!(nice_max(2.2), 2.5);
        assert_eq!(nice_max(420.0), 500.0);
        assert_eq!(nice_max(0.0), 1.0);
    }

    #[test]
    fn bars_draw_one_rect_per_value_and_mark_missing() {
        let s = grouped_bars(
            &Titles {
                title: "T <1>",
                subtitle: "s",
            },
            "x",
            &["w1".into(), "w2".into()],
            &[
                ("a".into(), vec![Some(1.0), None]),
                ("b&c".into(), vec![Some(2.0), Some(0.5)]),
            ],
            Some(1.0),
            None,
        );
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("<rect x=\"150\"").count(), 3);
        assert!(s.contains("n/a"));
        assert!(s.contains("T &lt;1&gt;") && s.contains("b&amp;c"));
        assert!(s.contains("stroke-dasharray"));
    }

    #[test]
    fn clipped_bars_are_labelled_with_their_value() {
        let s = grouped_bars(
            &Titles {
                title: "t",
                subtitle: "s",
            },
            "x",
            &["w".into()],
            &[("a".into(), vec![Some(42.0)])],
            None,
            Some(3.0),
        );
        assert!(s.contains("42 →"));
        assert!(
            !s.contains(">50<"),
            "the axis stops at the clip, not at the value"
        );
    }

    #[test]
    fn lines_draw_one_polyline_per_series() {
        let s = lines(
            &Titles {
                title: "m",
                subtitle: "s",
            },
            "t",
            "pages",
            &[
                ("a".into(), vec![1.0, 2.0, 3.0]),
                ("b".into(), vec![]),
                ("c".into(), vec![5.0]),
            ],
        );
        assert_eq!(s.matches("<polyline").count(), 2);
        assert!(s.contains("<text x=\"16\""));
    }

    #[test]
    fn ticks_are_short() {
        assert_eq!(fmt_tick(1.5), "1.5");
        assert_eq!(fmt_tick(2.0), "2");
        assert_eq!(fmt_tick(250.0), "250");
        assert_eq!(fmt_tick(0.25), "0.25");
    }
}
