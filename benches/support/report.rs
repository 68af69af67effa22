//! The report: each figure's repetitions reduced to medians, put next to
//! its baseline from the same repetitions, checked against the issue's
//! targets, printed as one Markdown table and written as JSON.
//!
//! A figure's value is the median over repetitions of each repetition's
//! value (its p50 for a latency). Its ratio to the baseline is the median of
//! the per-repetition ratios: the broker and the baseline of one repetition
//! ran back to back in the same forced CPU placement (each figure is taken
//! co-located and cross-CPU, see `placement`), so pairing them cancels the
//! noise between repetitions that a ratio of medians would keep.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::stats::{median, min_max};

/// What a figure's numbers are.
#[derive(Clone, Copy)]
pub enum Kind {
    /// A latency, in microseconds, with p50 as its value.
    Latency,
    /// A rate per second; the label names what is counted ("op", "msg").
    Rate(&'static str),
    /// Bytes per connection.
    BytesPerConn,
}

/// One repetition's numbers for one side.
#[derive(Clone, Copy, Debug)]
pub struct Rep {
    /// The headline number: p50 for a latency, else the rate or size.
    pub value: f64,
    /// p50 in µs (for a rate: loaded latency), if measured.
    pub p50: Option<f64>,
    /// p99 in µs (for a rate: loaded latency), if measured.
    pub p99: Option<f64>,
}

impl Rep {
    /// A latency repetition.
    pub fn latency(p50: f64, p99: f64) -> Rep {
        Rep {
            value: p50,
            p50: Some(p50),
            p99: Some(p99),
        }
    }

    /// A plain value (rate or size) with no percentiles.
    pub fn value(value: f64) -> Rep {
        Rep {
            value,
            p50: None,
            p99: None,
        }
    }
}

/// One side of a figure (the broker, or a baseline) over all repetitions.
#[derive(Clone)]
pub struct Series {
    /// What ran ("turnstiled", "bare tokio echo", ...).
    pub name: String,
    /// Its repetitions, in order; the i-th of the broker pairs with the i-th
    /// of the baseline.
    pub reps: Vec<Rep>,
}

impl Series {
    /// An empty series.
    pub fn new(name: &str) -> Series {
        Series {
            name: name.to_string(),
            reps: Vec::new(),
        }
    }

    fn values(&self) -> Vec<f64> {
        self.reps.iter().map(|r| r.value).collect()
    }

    /// Median of the values.
    pub fn value(&self) -> f64 {
        median(&self.values())
    }

    fn p50(&self) -> Option<f64> {
        let v: Vec<f64> = self.reps.iter().filter_map(|r| r.p50).collect();
        (!v.is_empty()).then(|| median(&v))
    }

    fn p99(&self) -> Option<f64> {
        let v: Vec<f64> = self.reps.iter().filter_map(|r| r.p99).collect();
        (!v.is_empty()).then(|| median(&v))
    }
}

/// A target from the issue.
#[derive(Clone, Copy)]
pub enum Target {
    /// The broker's p50 (value) at most this many times the baseline's.
    RatioAtMost(f64),
    /// The broker's p99 at most this many times the baseline's.
    P99RatioAtMost(f64),
    /// The broker's value at least this many times the baseline's (rates).
    RatioAtLeast(f64),
    /// The value at most this.
    AtMost(f64),
}

/// One line of the table.
pub struct Row {
    /// A short stable key for the JSON ("ping", "handoff_vs_relay", ...).
    pub key: String,
    /// What is measured, in words.
    pub figure: String,
    /// How to read the numbers.
    pub kind: Kind,
    /// The broker's side.
    pub broker: Series,
    /// The baseline's side, if there is one.
    pub baseline: Option<Series>,
    /// The targets this row is held to.
    pub targets: Vec<Target>,
    /// Extra facts worth a footnote (loaded latency, CPU per op...).
    pub notes: Vec<String>,
    /// Why there are no numbers (a feature not landed, or a failure).
    pub missing: Option<String>,
    /// Where the processes ran ("co-located", "cross-CPU"), or why that
    /// does not matter for this figure.
    pub placement: String,
}

impl Row {
    /// A row with numbers to come.
    pub fn new(key: &str, figure: &str, kind: Kind, broker: Series) -> Row {
        Row {
            key: key.to_string(),
            figure: figure.to_string(),
            kind,
            broker,
            baseline: None,
            targets: Vec::new(),
            notes: Vec::new(),
            missing: None,
            placement: "—".into(),
        }
    }

    /// Marks the row as taken in `placement`, its key suffixed with `key`.
    pub fn placed(mut self, placement: &str, key: &str) -> Row {
        self.placement = placement.to_string();
        self.key = format!("{}@{key}", self.key);
        self
    }

    /// A row that could not be measured, and why.
    pub fn missing(key: &str, figure: &str, kind: Kind, why: &str) -> Row {
        let mut row = Row::new(key, figure, kind, Series::new("turnstiled"));
        row.missing = Some(why.to_string());
        row
    }

    /// Adds the baseline.
    pub fn against(mut self, baseline: Series) -> Row {
        self.baseline = Some(baseline);
        self
    }

    /// Adds a target.
    pub fn target(mut self, target: Target) -> Row {
        self.targets.push(target);
        self
    }

    fn paired(&self, side: impl Fn(&Rep) -> Option<f64>) -> Option<f64> {
        let base = self.baseline.as_ref()?;
        let ratios: Vec<f64> = self
            .broker
            .reps
            .iter()
            .zip(&base.reps)
            .filter_map(|(b, a)| Some(side(b)? / side(a)?))
            .filter(|r| r.is_finite())
            .collect();
        (!ratios.is_empty()).then(|| median(&ratios))
    }

    /// Median of the per-repetition ratios of the values.
    pub fn ratio(&self) -> Option<f64> {
        self.paired(|r| Some(r.value))
    }

    /// Median of the per-repetition ratios of p99.
    pub fn ratio_p99(&self) -> Option<f64> {
        self.paired(|r| r.p99)
    }

    fn measured(&self) -> bool {
        self.missing.is_none() && !self.broker.reps.is_empty()
    }

    /// Each target with its verdict (`None`: not measured).
    pub fn verdicts(&self) -> Vec<(String, Option<bool>)> {
        self.targets
            .iter()
            .map(|t| {
                let (text, met) = match *t {
                    Target::RatioAtMost(x) => (
                        format!("{} ≤ {x}× baseline", self.headline()),
                        self.ratio().map(|r| r <= x),
                    ),
                    Target::RatioAtLeast(x) => (
                        format!("{} ≥ {x}× baseline", self.headline()),
                        self.ratio().map(|r| r >= x),
                    ),
                    Target::P99RatioAtMost(x) => (
                        format!("p99 ≤ {x}× baseline"),
                        self.ratio_p99().map(|r| r <= x),
                    ),
                    Target::AtMost(x) => (
                        format!("≤ {}", fmt_value(self.kind, x)),
                        Some(self.broker.value() <= x),
                    ),
                };
                (text, if self.measured() { met } else { None })
            })
            .collect()
    }

    fn headline(&self) -> &'static str {
        match self.kind {
            Kind::Latency => "p50",
            Kind::Rate(_) | Kind::BytesPerConn => "value",
        }
    }
}

/// Formats a number of the given kind for the table.
pub fn fmt_value(kind: Kind, v: f64) -> String {
    if !v.is_finite() {
        return "—".into();
    }
    match kind {
        Kind::Latency => fmt_us(v),
        Kind::Rate(what) if v >= 10_000.0 => format!("{:.0} k {what}/s", v / 1000.0),
        Kind::Rate(what) => format!("{v:.0} {what}/s"),
        Kind::BytesPerConn => format!("{v:.0} B/conn"),
    }
}

/// Microseconds, in µs or ms.
pub fn fmt_us(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else if us >= 100.0 {
        format!("{us:.0} µs")
    } else {
        format!("{us:.1} µs")
    }
}

fn fmt_opt_us(v: Option<f64>) -> String {
    v.map(fmt_us).unwrap_or_else(|| "—".into())
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.2}×")).unwrap_or_else(|| "—".into())
}

fn fmt_spread(kind: Kind, s: &Series) -> String {
    if s.reps.is_empty() {
        return "—".into();
    }
    let (lo, hi) = min_max(&s.values());
    format!("{}–{}", fmt_value(kind, lo), fmt_value(kind, hi))
}

/// The Markdown table of all rows.
pub fn table(rows: &[Row]) -> String {
    let mut t = String::new();
    t.push_str(
        "| figure | placement | broker p50 / value | broker p99 | baseline | baseline p50 / value \
         | baseline p99 | ratio (p50 / p99) | runs min–max: broker; baseline | target | met |\n",
    );
    t.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for row in rows {
        let verdicts = row.verdicts();
        let targets = verdicts
            .iter()
            .map(|(t, _)| t.clone())
            .collect::<Vec<_>>()
            .join("; ");
        let met = verdicts
            .iter()
            .map(|(_, m)| match m {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "—",
            })
            .collect::<Vec<_>>()
            .join("; ");
        if let Some(why) = &row.missing {
            let _ = writeln!(
                t,
                "| {} | {} | {why} | | | | | | | {} | {} |",
                row.figure,
                row.placement,
                or_dash(&targets),
                or_dash(&met)
            );
            continue;
        }
        let broker_p99 = match row.kind {
            Kind::Latency => fmt_opt_us(row.broker.p99()),
            _ => "—".into(),
        };
        let (base_name, base_value, base_p99, base_spread) = match &row.baseline {
            Some(b) => (
                b.name.clone(),
                fmt_value(row.kind, b.value()),
                match row.kind {
                    Kind::Latency => fmt_opt_us(b.p99()),
                    _ => "—".into(),
                },
                fmt_spread(row.kind, b),
            ),
            None => ("—".into(), "—".into(), "—".into(), "—".into()),
        };
        let ratio = match row.kind {
            Kind::Latency => format!(
                "{} / {}",
                fmt_ratio(row.ratio()),
                fmt_ratio(row.ratio_p99())
            ),
            _ => fmt_ratio(row.ratio()),
        };
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {}; {} | {} | {} |",
            row.figure,
            row.placement,
            fmt_value(row.kind, row.broker.value()),
            broker_p99,
            base_name,
            base_value,
            base_p99,
            ratio,
            fmt_spread(row.kind, &row.broker),
            base_spread,
            or_dash(&targets),
            or_dash(&met),
        );
    }
    t
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "—" } else { s }
}

/// The footnotes and per-repetition values, for reading the noise.
pub fn details(rows: &[Row]) -> String {
    let mut t = String::new();
    for row in rows.iter().filter(|r| r.missing.is_none()) {
        let reps = |s: &Series| {
            s.reps
                .iter()
                .map(|r| fmt_value(row.kind, r.value))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let spread = |s: &Series| {
            let (lo, hi) = min_max(&s.values());
            format!("max/min {:.2}", hi / lo)
        };
        let _ = write!(
            t,
            "- **{}** ({}): runs [{}] ({})",
            row.figure,
            row.placement,
            reps(&row.broker),
            spread(&row.broker)
        );
        if let Some(b) = &row.baseline {
            let _ = write!(t, " vs {} [{}] ({})", b.name, reps(b), spread(b));
        }
        t.push('\n');
        for note in &row.notes {
            let _ = writeln!(t, "  - {note}");
        }
    }
    t
}

/// Every target, met or not, one per line.
pub fn verdicts(rows: &[Row]) -> String {
    let mut t = String::new();
    for row in rows {
        for (text, met) in row.verdicts() {
            let how = match (row.kind, &row.missing) {
                (_, Some(why)) => why.clone(),
                (Kind::Latency, None) => format!(
                    "ratio {} (p99 {})",
                    fmt_ratio(row.ratio()),
                    fmt_ratio(row.ratio_p99())
                ),
                (kind, None) => fmt_value(kind, row.broker.value()),
            };
            let mark = match met {
                Some(true) => "MET    ",
                Some(false) => "NOT MET",
                None => "n/a    ",
            };
            let _ = writeln!(
                t,
                "  {mark} {} ({}): {text} — {how}",
                row.figure, row.placement
            );
        }
    }
    t
}

fn series_json(s: &Series) -> Value {
    json!({
        "name": s.name,
        "value": finite(s.value()),
        "p50_us": s.p50(),
        "p99_us": s.p99(),
        "runs": s.reps.iter().map(|r| json!({
            "value": finite(r.value), "p50_us": r.p50, "p99_us": r.p99,
        })).collect::<Vec<_>>(),
    })
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// The whole report as JSON.
pub fn json(rows: &[Row], header: Value) -> Value {
    let rows: Vec<Value> = rows
        .iter()
        .map(|row| {
            json!({
                "key": row.key,
                "figure": row.figure,
                "placement": row.placement,
                "unit": match row.kind {
                    Kind::Latency => "us".to_string(),
                    Kind::Rate(what) => format!("{what}/s"),
                    Kind::BytesPerConn => "bytes/conn".to_string(),
                },
                "missing": row.missing,
                "broker": series_json(&row.broker),
                "baseline": row.baseline.as_ref().map(series_json),
                "ratio": row.ratio(),
                "ratio_p99": row.ratio_p99(),
                "targets": row.verdicts().into_iter().map(|(t, met)| json!({
                    "target": t, "met": met,
                })).collect::<Vec<_>>(),
                "notes": row.notes,
            })
        })
        .collect();
    json!({ "run": header, "rows": rows })
}
