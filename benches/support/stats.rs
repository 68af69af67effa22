//! Percentiles and medians. Latencies are recorded in nanoseconds in an
//! hdrhistogram (3 significant digits) and reported in microseconds.

use hdrhistogram::Histogram;

/// Latency samples of one repetition.
pub struct Latencies(Histogram<u64>);

impl Latencies {
    /// An empty set, for 1 ns to 10 minutes.
    pub fn new() -> Latencies {
        Latencies(Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("valid bounds"))
    }

    /// Records one sample, in nanoseconds.
    pub fn record(&mut self, ns: u64) {
        self.0.saturating_record(ns.max(1));
    }

    /// Number of samples.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// The `q` quantile, in microseconds.
    pub fn us(&self, q: f64) -> f64 {
        self.0.value_at_quantile(q) as f64 / 1000.0
    }

    /// p50 and p99 in microseconds.
    pub fn p50_p99(&self) -> (f64, f64) {
        (self.us(0.5), self.us(0.99))
    }
}

/// The median of some values (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// The smallest and largest of some values.
pub fn min_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}
