//! Latency samples and their percentiles, and the process's resident memory.

use std::time::Duration;

/// Latency samples, in milliseconds.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    samples: Vec<f64>,
}

/// Nearest-rank percentiles of a set of latencies, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    /// Number of samples.
    pub count: usize,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest sample.
    pub max: f64,
}

impl Latencies {
    /// Records one latency.
    pub fn push(&mut self, d: Duration) {
        self.push_ms(d.as_secs_f64() * 1000.0);
    }

    /// Records one latency given in milliseconds.
    pub fn push_ms(&mut self, ms: f64) {
        self.samples.push(ms);
    }

    /// Adds every sample of `other`.
    pub fn extend(&mut self, other: &Latencies) {
        self.samples.extend_from_slice(&other.samples);
    }

    /// The percentiles, or `None` without samples.
    pub fn percentiles(&self) -> Option<Percentiles> {
        if self.samples.is_empty() {
            return None;
        }
        let mut v = self.samples.clone();
        v.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let i = ((p / 100.0) * v.len() as f64).ceil() as usize;
            v[i.clamp(1, v.len()) - 1]
        };
        Some(Percentiles {
            count: v.len(),
            p50: rank(50.0),
            p99: rank(99.0),
            max: v[v.len() - 1],
        })
    }
}

impl Percentiles {
    /// `p50 1.2 ms, p99 3.4 ms` (or `no samples`).
    pub fn describe(p: Option<Percentiles>) -> String {
        match p {
            Some(p) => format!("p50 {:.1} ms, p99 {:.1} ms", p.p50, p.p99),
            None => "no samples".to_owned(),
        }
    }
}

/// A field of `/proc/self/status` in bytes (`VmRSS`, `VmHWM`); `None` where the file or the
/// field does not exist (not Linux).
pub fn proc_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        let kib: u64 = rest.trim().strip_suffix("kB")?.trim().parse().ok()?;
        Some(kib * 1024)
    })
}

/// Bytes as MiB.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut l = Latencies::default();
        assert!(l.percentiles().is_none());
        for ms in (1..=100).rev() {
            l.push_ms(f64::from(ms));
        }
        let p = l.percentiles().unwrap();
        assert_eq!((p.count, p.p50, p.p99, p.max), (100, 50.0, 99.0, 100.0));
        let mut one = Latencies::default();
        one.push(Duration::from_millis(7));
        let p = one.percentiles().unwrap();
        assert_eq!((p.p50, p.p99), (7.0, 7.0));
        l.extend(&one);
        assert_eq!(l.percentiles().unwrap().count, 101);
    }

    #[test]
    fn reads_own_memory() {
        if cfg!(target_os = "linux") {
            assert!(proc_status_bytes("VmRSS").unwrap() > 0);
            assert!(proc_status_bytes("VmHWM").unwrap() > 0);
        }
        assert_eq!(proc_status_bytes("NoSuchField"), None);
        assert_eq!(mib(3 * 1024 * 1024), 3.0);
    }
}
