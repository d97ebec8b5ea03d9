//! The bench chart (SVG): per figure, each balancer's median as a ratio to direct's median
//! (a bar), its min–max over the repetitions (a whisker), pen-rs's goal (a mark), on an axis
//! with ticks, with a legend for every mark and a caption naming the run (date, machine,
//! commit). Pure: data in, text out.
//!
//! The layout estimates text extents (no font metrics here) with [`text_width`], generously,
//! so labels never overlap each other, the bars, the whiskers or the goal marks.

use std::fmt::Write as _;

/// Default font size of the chart, px.
const FONT: f64 = 11.0;
const TITLE_FONT: f64 = 14.0;
const CAPTION_FONT: f64 = 10.0;
const WIDTH: f64 = 880.0;
/// Height of one bar's row (the bar is 2 px less), and the gap between figures.
const ROW_H: f64 = 12.0;
const GROUP_GAP: f64 = 16.0;
/// Bars are clipped beyond this ratio (the label still gives the value).
const CAP: f64 = 3.0;

/// The estimated advance width of `text` at `size` px in a sans-serif font: 0.62 em per
/// character, an upper bound for digits and lower-case letters (about 0.5-0.56 em) and close
/// for capitals.
pub fn text_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * size * 0.62
}

/// One balancer in one figure: min, median and max ratio to direct, or `None` (not measured).
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub target: String,
    pub color: String,
    pub ratios: Option<(f64, f64, f64)>,
}

/// One figure: its label, a stable key (written as `data-figure`), pen-rs's goal as a ratio
/// to direct if it has one, and the bars (the first one is pen-rs, whose row carries the
/// goal mark).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub key: String,
    pub label: String,
    pub goal: Option<f64>,
    pub bars: Vec<Bar>,
}

/// Everything drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub title: String,
    pub rows: Vec<Row>,
    /// Repetitions behind each whisker.
    pub reps: usize,
    /// The caption: date, machine, commit and anything else worth a line.
    pub caption: Vec<String>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A tick step giving at most 8 intervals up to `max`, and the axis end (a multiple of it).
pub fn axis_scale(max: f64) -> (f64, f64) {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    for step in [0.1, 0.2, 0.25, 0.5, 1.0] {
        let n = (max / step - 1e-9).ceil();
        if n <= 8.0 {
            return (step, (n * step * 1e6).round() / 1e6);
        }
    }
    (1.0, max.ceil())
}

/// A tick label: as few decimals as the value needs, at least one ("0.0", "0.5", "0.25").
fn tick_label(v: f64) -> String {
    let s = format!("{v:.2}");
    match s.strip_suffix('0') {
        Some(t) if !t.ends_with('.') => t.to_string(),
        _ => s,
    }
}

/// Greedy line breaking of `text` at ", " and spaces so no line is wider than `max` px.
fn wrap(text: &str, size: f64, max: f64) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = String::new();
    for word in text.split(' ') {
        let cand = if cur.is_empty() {
            word.to_string()
        } else {
            format!("{cur} {word}")
        };
        if text_width(&cand, size) > max && !cur.is_empty() {
            lines.push(std::mem::take(&mut cur));
            cur = word.to_string();
        } else {
            cur = cand;
        }
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
}

struct Svg {
    s: String,
}

/// How a text is drawn: size, anchor, colour.
#[derive(Clone, Copy)]
struct Style {
    size: f64,
    anchor: &'static str,
    fill: &'static str,
}

const START: Style = Style {
    size: FONT,
    anchor: "start",
    fill: "#000",
};
const END: Style = Style {
    anchor: "end",
    ..START
};
const MIDDLE: Style = Style {
    anchor: "middle",
    ..START
};
const GREY: Style = Style {
    fill: "#888",
    ..START
};
const TITLE: Style = Style {
    size: TITLE_FONT,
    ..START
};
const CAPTION: Style = Style {
    size: CAPTION_FONT,
    fill: "#444",
    ..START
};

impl Svg {
    fn text(&mut self, class: &str, st: Style, x: f64, y: f64, t: &str) {
        let _ = writeln!(
            self.s,
            r#"<text class="{class}" x="{x:.1}" y="{y:.1}" font-size="{}" text-anchor="{}" fill="{}">{}</text>"#,
            st.size,
            st.anchor,
            st.fill,
            esc(t)
        );
    }

    fn line(&mut self, class: &str, from: (f64, f64), to: (f64, f64), stroke: &str, extra: &str) {
        let ((x1, y1), (x2, y2)) = (from, to);
        let _ = writeln!(
            self.s,
            r#"<line class="{class}" x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" stroke="{stroke}"{extra}/>"#
        );
    }
}

/// Renders the chart.
pub fn render(c: &Chart) -> String {
    let mut o = Svg { s: String::new() };
    let margin = 10.0;

    // Legend entries: (kind, colour, text); laid out left to right, wrapped.
    let mut legend: Vec<(&str, String, String)> = Vec::new();
    let mut seen = Vec::new();
    for b in c.rows.iter().flat_map(|r| r.bars.iter()) {
        if !seen.contains(&b.target) {
            seen.push(b.target.clone());
            legend.push(("swatch", b.color.clone(), b.target.clone()));
        }
    }
    legend.push((
        "whisker",
        "#222".into(),
        format!(
            "min–max of {} repetition{}",
            c.reps,
            if c.reps == 1 { "" } else { "s" }
        ),
    ));
    if c.rows.iter().any(|r| r.goal.is_some()) {
        legend.push(("goal", "#000".into(), "pen-rs goal (issue)".into()));
    }
    legend.push(("direct", "#444".into(), "direct = 1.0".into()));

    // Vertical layout.
    let title_y = 22.0;
    let mut legend_pos = Vec::new();
    let (mut lx, mut ly) = (margin, 44.0);
    for (_, _, text) in &legend {
        let w = 14.0 + 4.0 + text_width(text, FONT);
        if lx + w > WIDTH - margin && lx > margin {
            lx = margin;
            ly += 16.0;
        }
        legend_pos.push((lx, ly));
        lx += w + 18.0;
    }
    let top = ly + 22.0;
    let group_h = ROW_H * c.rows.iter().map(|r| r.bars.len()).max().unwrap_or(1) as f64;
    let plot_bottom = top + c.rows.len() as f64 * (group_h + GROUP_GAP) - GROUP_GAP + 6.0;

    // Horizontal layout: labels on the left, room for the value labels on the right.
    let label_w = c
        .rows
        .iter()
        .map(|r| text_width(&r.label, FONT))
        .fold(0.0, f64::max);
    let left = (margin + label_w + 10.0).max(160.0);
    // The widest value label: "0.00", or a clipped "99.9 ▸".
    let value_room = text_width("99.9 ▸", FONT) + 12.0;
    let right = WIDTH - margin - value_room;
    let max_seen = c
        .rows
        .iter()
        .flat_map(|r| {
            r.bars
                .iter()
                .filter_map(|b| b.ratios.map(|t| t.2))
                .chain(r.goal)
        })
        .fold(1.2_f64, f64::max)
        .min(CAP);
    let (step, end) = axis_scale(max_seen);
    let x = |r: f64| left + (right - left) * (r.clamp(0.0, end) / end);

    let axis_title = "ratio to direct's median (bar: median; whisker: lowest and highest run)";
    let ticks_y = plot_bottom + 15.0;
    let axis_title_y = ticks_y + 16.0;
    let caption_lines: Vec<String> = c
        .caption
        .iter()
        .flat_map(|l| wrap(l, CAPTION_FONT, WIDTH - 2.0 * margin))
        .collect();
    let caption_y = axis_title_y + 22.0;
    let height = caption_y + 14.0 * caption_lines.len() as f64 + 6.0;

    let _ = writeln!(
        o.s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" font-family="sans-serif" font-size="{FONT}">"#
    );
    let _ = writeln!(
        o.s,
        r##"<rect class="background" x="0" y="0" width="{WIDTH}" height="{height:.0}" fill="#fff"/>"##
    );
    o.text("title", TITLE, margin, title_y, &c.title);

    // Legend.
    for ((kind, color, text), (lx, ly)) in legend.iter().zip(&legend_pos) {
        let cy = ly - 4.0;
        match *kind {
            "swatch" => {
                let _ = writeln!(
                    o.s,
                    r#"<rect class="legend-swatch" x="{lx:.1}" y="{:.1}" width="14" height="9" fill="{color}"/>"#,
                    ly - 8.5
                );
            }
            "whisker" => {
                o.line("legend-whisker", (*lx, cy), (lx + 14.0, cy), color, "");
                o.line(
                    "legend-whisker",
                    (*lx, cy - 4.0),
                    (*lx, cy + 4.0),
                    color,
                    "",
                );
                o.line(
                    "legend-whisker",
                    (lx + 14.0, cy - 4.0),
                    (lx + 14.0, cy + 4.0),
                    color,
                    "",
                );
            }
            "goal" => {
                o.line(
                    "legend-goal",
                    (lx + 7.0, cy - 6.0),
                    (lx + 7.0, cy + 5.0),
                    color,
                    r#" stroke-width="3""#,
                );
            }
            _ => {
                o.line(
                    "legend-direct",
                    (lx + 7.0, cy - 6.0),
                    (lx + 7.0, cy + 5.0),
                    color,
                    r#" stroke-dasharray="3,2""#,
                );
            }
        }
        o.text("legend", START, lx + 18.0, *ly, text);
    }

    // Grid and axis.
    let n_ticks = (end / step).round() as usize;
    for i in 0..=n_ticks {
        let v = step * i as f64;
        let tx = x(v);
        if i > 0 {
            o.line("grid", (tx, top - 4.0), (tx, plot_bottom), "#e6e6e6", "");
        }
        o.line(
            "tick",
            (tx, plot_bottom),
            (tx, plot_bottom + 4.0),
            "#000",
            "",
        );
        o.text("tick-label", MIDDLE, tx, ticks_y, &tick_label(v));
    }
    o.line(
        "axis",
        (left, plot_bottom),
        (right, plot_bottom),
        "#000",
        "",
    );
    o.line("axis", (left, top - 4.0), (left, plot_bottom), "#000", "");
    o.line(
        "direct",
        (x(1.0), top - 4.0),
        (x(1.0), plot_bottom),
        "#444",
        r#" stroke-dasharray="4,3""#,
    );
    o.text(
        "axis-title",
        MIDDLE,
        (left + right) / 2.0,
        axis_title_y,
        axis_title,
    );

    if c.rows.is_empty() {
        o.text(
            "missing",
            GREY,
            left + 4.0,
            top + 12.0,
            "no throughput figure with a direct measurement in this run",
        );
    }

    // Rows.
    for (gi, row) in c.rows.iter().enumerate() {
        let gy = top + gi as f64 * (group_h + GROUP_GAP);
        o.text(
            "figure-label",
            END,
            left - 8.0,
            gy + group_h / 2.0 + 4.0,
            &row.label,
        );
        for (bi, b) in row.bars.iter().enumerate() {
            let y = gy + ROW_H * bi as f64;
            let mid = y + (ROW_H - 2.0) / 2.0;
            let goal_x = if bi == 0 { row.goal.map(&x) } else { None };
            let attrs = format!(
                r#"data-figure="{}" data-target="{}""#,
                esc(&row.key),
                esc(&b.target)
            );
            match b.ratios {
                Some((lo, med, hi)) => {
                    let _ = writeln!(
                        o.s,
                        r#"<rect class="bar" {attrs} x="{left:.1}" y="{y:.1}" width="{:.1}" height="{}" fill="{}"/>"#,
                        (x(med) - left).max(0.5),
                        ROW_H - 2.0,
                        b.color
                    );
                    let _ = writeln!(
                        o.s,
                        r##"<line class="whisker" {attrs} x1="{:.1}" y1="{mid:.1}" x2="{:.1}" y2="{mid:.1}" stroke="#222"/>"##,
                        x(lo),
                        x(hi)
                    );
                    for wx in [x(lo), x(hi)] {
                        o.line("whisker-cap", (wx, mid - 3.5), (wx, mid + 3.5), "#222", "");
                    }
                    let value = if med <= end {
                        format!("{med:.2}")
                    } else if med < 99.95 {
                        format!("{med:.1} ▸")
                    } else {
                        ">99 ▸".to_string()
                    };
                    // Right of the bar and the whisker; moved past the goal mark or the
                    // dashed direct line when it would sit across one of them.
                    let w = text_width(&value, FONT);
                    let mut after = x(med).max(x(hi));
                    for (mark, half) in [(goal_x, 1.5), (Some(x(1.0)), 1.0)] {
                        if let Some(m) = mark
                            && after + 4.0 < m + half
                            && m - half < after + 4.0 + w
                        {
                            after = m + half;
                        }
                    }
                    o.text("value", START, after + 4.0, y + ROW_H - 3.0, &value);
                }
                None => {
                    let text = format!("{}: not measured", b.target);
                    let mut tx = left + 4.0;
                    if let Some(g) = goal_x
                        && tx < g + 1.5
                        && g - 1.5 < tx + text_width(&text, FONT)
                    {
                        tx = g + 1.5 + 4.0;
                    }
                    o.text("missing", GREY, tx, y + ROW_H - 3.0, &text);
                }
            }
            if let Some(gx) = goal_x {
                let _ = writeln!(
                    o.s,
                    r##"<line class="goal" data-figure="{}" x1="{gx:.1}" y1="{:.1}" x2="{gx:.1}" y2="{:.1}" stroke="#000" stroke-width="3"/>"##,
                    esc(&row.key),
                    y - 3.0,
                    y + ROW_H - 2.0
                );
            }
        }
    }

    for (i, l) in caption_lines.iter().enumerate() {
        o.text("caption", CAPTION, margin, caption_y + 14.0 * i as f64, l);
    }
    let _ = writeln!(o.s, "</svg>");
    o.s
}

/// A minimal reader of the SVG this module writes (flat elements, double-quoted
/// attributes, text only inside `<text>`), for the tests.
#[cfg(test)]
pub(crate) mod parse {
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    pub struct El {
        pub name: String,
        pub attrs: BTreeMap<String, String>,
        pub text: String,
    }

    impl El {
        pub fn class(&self) -> &str {
            self.attrs.get("class").map(String::as_str).unwrap_or("")
        }

        pub fn num(&self, k: &str) -> f64 {
            self.attrs
                .get(k)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{} has no numeric {k}: {self:?}", self.name))
        }

        pub fn attr(&self, k: &str) -> &str {
            self.attrs.get(k).map(String::as_str).unwrap_or("")
        }
    }

    fn unescape(s: &str) -> String {
        s.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
    }

    pub fn elements(svg: &str) -> Vec<El> {
        let mut out = Vec::new();
        let mut rest = svg;
        while let Some(i) = rest.find('<') {
            rest = &rest[i + 1..];
            if rest.starts_with('/') {
                continue;
            }
            let end = rest.find('>').expect("unterminated tag");
            let tag = &rest[..end];
            let self_closing = tag.ends_with('/');
            let tag = tag.trim_end_matches('/');
            let name_end = tag.find(char::is_whitespace).unwrap_or(tag.len());
            let name = tag[..name_end].to_string();
            let mut attrs = BTreeMap::new();
            let mut a = tag[name_end..].trim();
            while let Some(eq) = a.find("=\"") {
                let key = a[..eq].trim().to_string();
                let after = &a[eq + 2..];
                let close = after.find('"').expect("unterminated attribute");
                attrs.insert(key, unescape(&after[..close]));
                a = after[close + 1..].trim();
            }
            rest = &rest[end + 1..];
            let mut text = String::new();
            if !self_closing && name == "text" {
                let close = rest.find("</text>").expect("unterminated text");
                text = unescape(&rest[..close]);
                rest = &rest[close..];
            }
            out.push(El { name, attrs, text });
        }
        out
    }

    /// A box (x0, y0, x1, y1) around a `<text>`: the tests' own estimate of its extent
    /// (0.6 em per lower-case letter, digit or sign, 0.72 em per capital; 0.8 em above
    /// the baseline, 0.25 em below).
    pub fn text_box(e: &El) -> (f64, f64, f64, f64) {
        let size = e
            .attrs
            .get("font-size")
            .and_then(|v| v.parse().ok())
            .unwrap_or(11.0);
        let w: f64 = e
            .text
            .chars()
            .map(|c| if c.is_uppercase() { 0.72 } else { 0.6 })
            .sum::<f64>()
            * size;
        let (x, y) = (e.num("x"), e.num("y"));
        let x0 = match e.attr("text-anchor") {
            "end" => x - w,
            "middle" => x - w / 2.0,
            _ => x,
        };
        (x0, y - 0.8 * size, x0 + w, y + 0.25 * size)
    }

    /// The box of a `<rect>` or a `<line>` (its stroke width around it).
    pub fn shape_box(e: &El) -> (f64, f64, f64, f64) {
        if e.name == "rect" {
            let (x, y) = (e.num("x"), e.num("y"));
            (x, y, x + e.num("width"), y + e.num("height"))
        } else {
            let sw = e
                .attrs
                .get("stroke-width")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1.0)
                / 2.0;
            let (x1, x2) = (e.num("x1"), e.num("x2"));
            let (y1, y2) = (e.num("y1"), e.num("y2"));
            (
                x1.min(x2) - sw,
                y1.min(y2) - sw,
                x1.max(x2) + sw,
                y1.max(y2) + sw,
            )
        }
    }

    /// The x position of ratio `r`, from the axis's tick labels.
    pub fn scale(els: &[El]) -> impl Fn(f64) -> f64 {
        let ticks: Vec<(f64, f64)> = els
            .iter()
            .filter(|e| e.class() == "tick-label")
            .map(|e| (e.text.parse::<f64>().unwrap(), e.num("x")))
            .collect();
        let (v0, x0) = ticks[0];
        let (v1, x1) = ticks[ticks.len() - 1];
        move |r| x0 + (r - v0) * (x1 - x0) / (v1 - v0)
    }

    pub fn overlap(a: (f64, f64, f64, f64), b: (f64, f64, f64, f64)) -> bool {
        a.0 < b.2 && b.0 < a.2 && a.1 < b.3 && b.1 < a.3
    }
}

#[cfg(test)]
mod tests {
    use super::parse::{El, elements, overlap, scale, shape_box, text_box};
    use super::*;

    fn bar(t: &str, r: Option<(f64, f64, f64)>) -> Bar {
        Bar {
            target: t.into(),
            color: "#123456".into(),
            ratios: r,
        }
    }

    fn chart(rows: Vec<Row>) -> Chart {
        Chart {
            title: "t".into(),
            rows,
            reps: 3,
            caption: vec![
                "Run of 2026-12-06 19:25 UTC; pen-rs git c48fe2a, release build; 3 repetition(s)."
                    .into(),
                "Machine: nproc 2, Intel(R) Xeon(R) Processor, 24 GiB, kernel 6.18.44-fc-v1300, and a long tail of words that must wrap onto a second line of the caption."
                    .into(),
            ],
        }
    }

    fn sample_rows() -> Vec<Row> {
        vec![
            Row {
                key: "AbKeepAlive".into(),
                label: "ab -k -c 20 -n 20000 (100 B page)".into(),
                goal: Some(0.8),
                bars: vec![
                    bar("pen-rs", Some((0.60, 0.63, 0.65))),
                    bar("C Pen", Some((0.62, 0.65, 0.66))),
                    bar("HAProxy", Some((0.60, 0.62, 0.66))),
                ],
            },
            Row {
                key: "Dnsperf".into(),
                label: "dnsperf -c 20, 10 s".into(),
                goal: Some(0.85),
                bars: vec![
                    bar("pen-rs", Some((0.84, 0.86, 1.07))),
                    bar("C Pen", Some((0.60, 0.61, 0.62))),
                    bar("HAProxy", None),
                ],
            },
            Row {
                key: "DsrAbKeepAlive".into(),
                label: "DSR: ab -k -c 20 -n 20000 (100 B page)".into(),
                goal: Some(0.97),
                bars: vec![
                    bar("pen-rs", Some((0.98, 1.01, 1.11))),
                    bar("C Pen", Some((0.97, 1.08, 1.10))),
                    bar("HAProxy", None),
                ],
            },
            Row {
                key: "BulkPar".into(),
                label: "4x3 parallel 100 MiB downloads".into(),
                goal: None,
                bars: vec![
                    bar("pen-rs", Some((0.87, 0.94, 1.03))),
                    bar("C Pen", Some((0.83, 0.90, 0.92))),
                    bar("HAProxy", Some((0.64, 0.66, 0.71))),
                ],
            },
        ]
    }

    #[test]
    fn axis_has_evenly_spaced_labelled_ticks_from_zero_past_every_value() {
        let els = elements(&render(&chart(sample_rows())));
        let ticks: Vec<&El> = els.iter().filter(|e| e.class() == "tick").collect();
        let labels: Vec<&El> = els.iter().filter(|e| e.class() == "tick-label").collect();
        assert!(ticks.len() >= 4, "{} ticks", ticks.len());
        assert_eq!(ticks.len(), labels.len());
        let vals: Vec<f64> = labels.iter().map(|e| e.text.parse().unwrap()).collect();
        assert_eq!(vals[0], 0.0);
        assert!(vals.contains(&1.0), "{vals:?}");
        assert!(
            *vals.last().unwrap() >= 1.11,
            "axis ends before the largest whisker: {vals:?}"
        );
        let step = vals[1] - vals[0];
        let dx = (ticks[ticks.len() - 1].num("x1") - ticks[0].num("x1")) / (ticks.len() - 1) as f64;
        for (i, (t, l)) in ticks.iter().zip(&labels).enumerate() {
            assert!((vals[i] - step * i as f64).abs() < 1e-9, "{vals:?}");
            assert!((t.num("x1") - (ticks[0].num("x1") + dx * i as f64)).abs() < 0.2);
            assert!(
                (t.num("x1") - l.num("x")).abs() < 0.01,
                "label not under its tick"
            );
        }
        assert!(
            els.iter()
                .any(|e| e.class() == "axis-title" && e.text.contains("ratio to direct"))
        );
    }

    #[test]
    fn each_measured_row_has_a_whisker_from_its_min_to_its_max() {
        let rows = sample_rows();
        let els = elements(&render(&chart(rows.clone())));
        let x = scale(&els);
        for row in &rows {
            for b in &row.bars {
                let find = |class: &str| {
                    els.iter()
                        .filter(|e| {
                            e.class() == class
                                && e.attr("data-figure") == row.key
                                && e.attr("data-target") == b.target
                        })
                        .collect::<Vec<_>>()
                };
                let (whiskers, bars) = (find("whisker"), find("bar"));
                match b.ratios {
                    Some((lo, med, hi)) => {
                        assert_eq!(
                            (whiskers.len(), bars.len()),
                            (1, 1),
                            "{} {}",
                            row.key,
                            b.target
                        );
                        let w = whiskers[0];
                        assert!(
                            (w.num("x1") - x(lo)).abs() < 0.2,
                            "{} {} min",
                            row.key,
                            b.target
                        );
                        assert!(
                            (w.num("x2") - x(hi)).abs() < 0.2,
                            "{} {} max",
                            row.key,
                            b.target
                        );
                        let r = bars[0];
                        assert!((r.num("x") + r.num("width") - x(med)).abs() < 0.2);
                        // The whisker crosses its own bar's row.
                        let mid = w.num("y1");
                        assert!(mid > r.num("y") && mid < r.num("y") + r.num("height"));
                    }
                    None => {
                        assert!(whiskers.is_empty() && bars.is_empty());
                        assert!(els.iter().any(|e| e.class() == "missing"
                            && e.text == format!("{}: not measured", b.target)));
                    }
                }
            }
        }
    }

    #[test]
    fn legend_explains_bars_whiskers_goal_marks_and_the_direct_line() {
        let els = elements(&render(&chart(sample_rows())));
        let legend: Vec<&str> = els
            .iter()
            .filter(|e| e.class() == "legend")
            .map(|e| e.text.as_str())
            .collect();
        for want in [
            "pen-rs",
            "C Pen",
            "HAProxy",
            "min–max of 3 repetitions",
            "pen-rs goal (issue)",
            "direct = 1.0",
        ] {
            assert!(
                legend.contains(&want),
                "no legend entry {want:?}: {legend:?}"
            );
        }
        // The goal symbol in the legend looks like the marks: same stroke and width.
        let mark = els.iter().find(|e| e.class() == "goal").unwrap();
        let sym = els.iter().find(|e| e.class() == "legend-goal").unwrap();
        assert_eq!(mark.attr("stroke"), sym.attr("stroke"));
        assert_eq!(mark.attr("stroke-width"), sym.attr("stroke-width"));
        // One goal mark per figure with a goal, on pen-rs's row, at the goal.
        let x = scale(&els);
        for row in sample_rows() {
            let marks: Vec<&El> = els
                .iter()
                .filter(|e| e.class() == "goal" && e.attr("data-figure") == row.key)
                .collect();
            match row.goal {
                Some(g) => {
                    assert_eq!(marks.len(), 1, "{}", row.key);
                    assert!((marks[0].num("x1") - x(g)).abs() < 0.2);
                }
                None => assert!(marks.is_empty()),
            }
        }
    }

    #[test]
    fn no_label_overlaps_another_label_a_bar_a_whisker_or_a_goal_mark() {
        let mut rows = sample_rows();
        // pen-rs just short of its goal (0.80): the value label must move past the mark.
        rows[0].bars[0].ratios = Some((0.74, 0.76, 0.78));
        // HAProxy just short of direct: its label must not sit across the dashed line.
        rows[3].bars[2].ratios = Some((0.90, 0.95, 0.97));
        // An extreme run: a ratio far beyond the axis's end (3.0) squeezes the scale, and
        // pen-rs is missing in a row whose goal mark then sits near the left edge.
        let mut extreme = sample_rows();
        extreme[3].bars[2].ratios = Some((2.0, 250.0, 400.0));
        extreme[0].bars[1].ratios = Some((2.8, 2.9, 3.5));
        extreme[1].bars[0].ratios = None;
        for c in [chart(rows), chart(sample_rows()), chart(extreme)] {
            let svg = render(&c);
            let els = elements(&svg);
            let width: f64 = els[0].num("width");
            let height: f64 = els[0].num("height");
            let texts: Vec<&El> = els.iter().filter(|e| e.name == "text").collect();
            let shapes: Vec<&El> = els
                .iter()
                .filter(|e| {
                    matches!(
                        e.class(),
                        "bar"
                            | "whisker"
                            | "whisker-cap"
                            | "goal"
                            | "legend-swatch"
                            | "legend-goal"
                            | "legend-whisker"
                            | "legend-direct"
                            | "tick"
                            | "axis"
                    )
                })
                .collect();
            for (i, a) in texts.iter().enumerate() {
                let ba = text_box(a);
                assert!(
                    ba.0 >= 0.0 && ba.2 <= width && ba.1 >= 0.0 && ba.3 <= height,
                    "{:?} {:?} outside the {width}x{height} image",
                    a.text,
                    ba
                );
                for b in texts.iter().skip(i + 1) {
                    assert!(
                        !overlap(ba, text_box(b)),
                        "{:?} {ba:?} overlaps {:?} {:?}",
                        a.text,
                        b.text,
                        text_box(b)
                    );
                }
                for s in &shapes {
                    assert!(
                        !overlap(ba, shape_box(s)),
                        "{:?} {ba:?} overlaps a {} {:?}",
                        a.text,
                        s.class(),
                        shape_box(s)
                    );
                }
            }
        }
    }

    #[test]
    fn caption_names_date_machine_and_commit_and_wraps_inside_the_image() {
        let els = elements(&render(&chart(sample_rows())));
        let caption: Vec<&El> = els.iter().filter(|e| e.class() == "caption").collect();
        assert!(
            caption.len() >= 3,
            "the long machine line wraps: {caption:?}"
        );
        let all: String = caption
            .iter()
            .map(|e| e.text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        for want in [
            "2026-12-06 19:25 UTC",
            "git c48fe2a",
            "nproc 2",
            "kernel 6.18.44",
            "second line of the caption.",
        ] {
            assert!(all.contains(want), "caption lacks {want:?}: {all}");
        }
        // Below the axis title.
        let axis = els.iter().find(|e| e.class() == "axis-title").unwrap();
        assert!(caption.iter().all(|c| c.num("y") > axis.num("y")));
    }

    #[test]
    fn a_run_without_throughput_figures_still_draws_a_readable_chart() {
        let els = elements(&render(&chart(Vec::new())));
        assert!(
            els.iter()
                .any(|e| e.class() == "missing" && e.text.contains("no throughput"))
        );
        assert!(els.iter().any(|e| e.class() == "caption"));
        assert!(
            !els.iter().any(|e| e.class() == "legend-goal"),
            "no goal, no goal legend"
        );
    }

    #[test]
    fn tick_steps_are_round_and_cover_the_largest_value() {
        assert_eq!(axis_scale(1.2), (0.2, 1.2));
        assert_eq!(axis_scale(1.25), (0.2, 1.4));
        assert_eq!(axis_scale(3.0), (0.5, 3.0));
        assert_eq!(axis_scale(0.0), (0.2, 1.0));
        assert_eq!(tick_label(0.0), "0.0");
        assert_eq!(tick_label(0.25), "0.25");
        assert_eq!(tick_label(1.0), "1.0");
    }
}
