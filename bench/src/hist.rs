//! A lock-free latency histogram in microseconds: exact below 256 µs, then 128 sub-buckets per
//! power of two (each bucket under 0.8 % wide). Every receiver task records into the same one
//! with relaxed atomics, so measuring every delivery costs a few nanoseconds.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

const LINEAR: u64 = 256;
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
/// Octaves above the linear part: values up to 2^48 µs (years).
const OCTAVES: u64 = 40;

pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..LINEAR + OCTAVES * SUB).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }
}

fn index(us: u64) -> usize {
    if us < LINEAR {
        return us as usize;
    }
    let exp = 63 - u64::from(us.leading_zeros()); // >= 8
    let shift = exp - u64::from(SUB_BITS);
    let mantissa = (us >> shift) & (SUB - 1);
    let i = LINEAR + (exp - 8) * SUB + mantissa;
    i.min(LINEAR + OCTAVES * SUB - 1) as usize
}

/// The highest value a bucket holds (percentiles are reported conservatively).
fn upper(i: usize) -> u64 {
    let i = i as u64;
    if i < LINEAR {
        return i;
    }
    let exp = 8 + (i - LINEAR) / SUB;
    let mantissa = (i - LINEAR) % SUB;
    let shift = exp - u64::from(SUB_BITS);
    ((SUB + mantissa + 1) << shift) - 1
}

impl Histogram {
    pub fn record(&self, us: u64) {
        self.buckets[index(us)].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.max.fetch_max(us, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    pub fn max(&self) -> u64 {
        self.max.load(Relaxed)
    }

    /// The value at quantile `q` (0..=1), in µs; None when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(upper(i).min(self.max()));
            }
        }
        Some(self.max())
    }
}
