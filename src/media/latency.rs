//! A latency histogram cheap enough for the media thread: fixed log-linear buckets
//! (four per power of two, so any reported value is within 25 % of the truth), no
//! allocation per sample, mergeable and subtractable so a benchmark can take the
//! difference of two snapshots.

use std::time::Duration;

/// Values below this many microseconds get a bucket each.
const LINEAR: u64 = 8;
/// Buckets per power of two above `LINEAR`.
const SUB: u64 = 4;
/// Up to 2^26 µs (67 s); anything longer lands in the last bucket.
const BUCKETS: usize = (LINEAR + (26 - 3) * SUB) as usize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
    max_us: u64,
    /// The sum of all samples (Prometheus histograms carry it).
    sum_us: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: vec![0; BUCKETS], max_us: 0, sum_us: 0 }
    }
}

fn bucket(us: u64) -> usize {
    if us < LINEAR {
        return us as usize;
    }
    let exp = 63 - u64::from(us.leading_zeros()); // us >= 8, so exp >= 3
    let sub = (us >> (exp - 2)) & (SUB - 1);
    ((LINEAR + (exp - 3) * SUB + sub) as usize).min(BUCKETS - 1)
}

/// The largest value (µs) that lands in bucket `i`.
fn upper(i: usize) -> u64 {
    let i = i as u64;
    if i < LINEAR {
        return i;
    }
    let exp = (i - LINEAR) / SUB + 3;
    let sub = (i - LINEAR) % SUB;
    ((SUB + sub + 1) << (exp - 2)) - 1
}

impl Histogram {
    pub fn record(&mut self, value: Duration) {
        let us = value.as_micros().min(u128::from(u64::MAX)) as u64;
        self.counts[bucket(us)] += 1;
        self.max_us = self.max_us.max(us);
        self.sum_us = self.sum_us.saturating_add(us);
    }

    /// Add `other`'s samples to these.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.max_us = self.max_us.max(other.max_us);
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }

    pub fn sum_us(&self) -> u64 {
        self.sum_us
    }

    /// Samples per Prometheus bucket: at every power of two from 8 µs (`le`, in seconds),
    /// each the exact upper edge of one of these buckets, so nothing is estimated; the
    /// count is of the samples above the previous edge. The last entry is `+Inf`.
    pub fn prometheus_buckets(&self) -> Vec<(f64, u64)> {
        let mut out = Vec::new();
        let mut since_edge = 0;
        for (i, c) in self.counts.iter().enumerate().take(BUCKETS - 1) {
            since_edge += c;
            let edge = upper(i) + 1;
            if edge.is_power_of_two() && edge >= LINEAR {
                out.push((edge as f64 / 1e6, std::mem::take(&mut since_edge)));
            }
        }
        out.push((f64::INFINITY, since_edge + self.counts[BUCKETS - 1]));
        out
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The value (µs) at or below which `p` percent of the samples are: the upper edge of
    /// the bucket that holds that rank (the exact maximum for the top bucket in use).
    pub fn percentile_us(&self, p: f64) -> u64 {
        let count = self.count();
        if count == 0 {
            return 0;
        }
        let rank = ((p / 100.0 * count as f64).ceil() as u64).clamp(1, count);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper(i).min(self.max_us);
            }
        }
        self.max_us
    }

    /// The samples recorded since `earlier`, a snapshot of this histogram (its maximum
    /// is then only known as the upper edge of the highest bucket in use).
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let counts: Vec<u64> = self.counts.iter().zip(&earlier.counts).map(|(a, b)| a.saturating_sub(*b)).collect();
        let max_us = counts.iter().rposition(|c| *c > 0).map(|i| upper(i).min(self.max_us)).unwrap_or(0);
        Histogram { counts, max_us, sum_us: self.sum_us.saturating_sub(earlier.sum_us) }
    }

    pub fn snapshot(&self) -> LatencySnapshot {
        LatencySnapshot {
            count: self.count(),
            p50_us: self.percentile_us(50.0),
            p99_us: self.percentile_us(99.0),
            max_us: self.max_us,
            sum_us: self.sum_us,
            counts: self.counts.clone(),
        }
    }

    pub fn from_snapshot(s: &LatencySnapshot) -> Histogram {
        let mut counts = s.counts.clone();
        counts.resize(BUCKETS, 0);
        Histogram { counts, max_us: s.max_us, sum_us: s.sum_us }
    }
}

/// A histogram as `/rest-api/stats` shows it: the summary, and the bucket counts a client
/// can subtract from a later snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LatencySnapshot {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    #[serde(default)]
    pub sum_us: u64,
    pub counts: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_buckets_hold_every_sample_once_at_exact_edges() {
        let mut h = Histogram::default();
        for us in [3, 100, 100, 5_000, 100_000_000] {
            h.record(Duration::from_micros(us));
        }
        let b = h.prometheus_buckets();
        assert_eq!(b.iter().map(|(_, c)| c).sum::<u64>(), 5);
        assert!(b.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(b[0], (8e-6, 1));
        assert_eq!(b.iter().find(|(le, _)| *le == 128e-6).map(|(_, c)| *c), Some(2));
        assert_eq!(b.last(), Some(&(f64::INFINITY, 1)));
        assert_eq!(h.sum_us(), 100_005_203);
    }

    #[test]
    fn buckets_are_ordered_and_within_a_quarter() {
        let mut last = 0;
        for us in 0..200_000u64 {
            let b = bucket(us);
            assert!(b >= last, "bucket order at {us}");
            last = b;
            assert!(upper(b) >= us, "{us} above its bucket's edge {}", upper(b));
            assert!(upper(b) as f64 <= (us as f64 * 1.25).max(us as f64 + 1.0), "{us}: edge {}", upper(b));
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn percentiles_and_differences() {
        let mut h = Histogram::default();
        for us in 1..=100u64 {
            h.record(Duration::from_micros(us * 10));
        }
        // 500 µs and 990 µs, each reported at its bucket's upper edge.
        assert!((500..=640).contains(&h.percentile_us(50.0)), "{}", h.percentile_us(50.0));
        assert!((990..=1000).contains(&h.percentile_us(99.0)), "{}", h.percentile_us(99.0));
        assert_eq!(h.percentile_us(100.0), 1000);
        let before = h.clone();
        h.record(Duration::from_millis(40));
        let window = h.since(&before);
        assert_eq!(window.count(), 1);
        assert_eq!(window.percentile_us(50.0), 40_000);
        let round_trip = Histogram::from_snapshot(&h.snapshot());
        assert_eq!(round_trip, h);
        assert_eq!(Histogram::default().percentile_us(99.0), 0);
    }
}
