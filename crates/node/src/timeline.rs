//! The resource timeline: every live sandbox's CPU, memory and disk sampled at a fixed interval
//! into a bounded ring (an hour by default), served as E2B's `SandboxMetric` lists. Samples are
//! compact (20 bytes) and the ring grows only as the sandbox lives, so thousands of idle sandboxes
//! cost little; a paused sandbox repeats its last sample without reading anything.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use warren_types::{SandboxId, SandboxState};

use crate::engine::Engine;
use crate::now_ms;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    /// Unix seconds.
    at: u32,
    /// CPU use in hundredths of a percent of the sandbox's CPU quota.
    cpu_centi_pct: u16,
    mem_used_kib: u32,
    mem_cache_kib: u32,
    disk_used_kib: u32,
}

/// A fresh sample and the cumulative CPU time it was computed from.
struct Reading {
    cpu: (Instant, u64),
    sample: Sample,
}

/// One sandbox's ring of samples.
#[derive(Debug, Default)]
pub(crate) struct Timeline {
    samples: VecDeque<Sample>,
    last_cpu: Option<(Instant, u64)>,
}

/// E2B's `SandboxMetric`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetricPoint {
    pub timestamp: String,
    pub timestamp_unix: u64,
    pub cpu_count: u32,
    pub cpu_used_pct: f64,
    pub mem_used: u64,
    pub mem_total: u64,
    pub mem_cache: u64,
    pub disk_used: u64,
    pub disk_total: u64,
}

/// Cached memory is read every this many samples.
const CACHE_EVERY: u64 = 10;

fn kib(bytes: u64) -> u32 {
    (bytes / 1024).min(u64::from(u32::MAX)) as u32
}

impl Timeline {
    fn push(&mut self, s: Sample, cap: usize) {
        while self.samples.len() >= cap.max(1) {
            self.samples.pop_front();
        }
        self.samples.push_back(s);
    }
}

impl Engine {
    /// Starts the sampler (when `sandbox.sample_interval_ms` is not 0).
    pub(crate) fn start_sampler(self: &Arc<Self>) {
        let every = self.cfg.sandbox.sample_interval_ms;
        if every == 0 {
            return;
        }
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(every));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                let Some(e) = me.upgrade() else { return };
                let e2 = e.clone();
                let _ = tokio::task::spawn_blocking(move || e2.sample_all()).await;
            }
        });
    }

    fn sample_all(&self) {
        let started = Instant::now();
        let cap = (self.cfg.sandbox.timeline_secs * 1000 / self.cfg.sandbox.sample_interval_ms.max(1)) as usize;
        let live: Vec<(SandboxId, SandboxState, u32, Option<warren_runtime::Handle>)> = self
            .sandboxes
            .lock()
            .unwrap()
            .values()
            .filter(|r| r.state.is_claimed())
            .map(|r| (r.id.clone(), r.state, r.cpu_count, r.handle.clone()))
            .collect();
        let at = (now_ms() / 1000) as u32;
        // `None`: frozen, nothing moves; the last sample stands (with no CPU use).
        let mut fresh: Vec<(SandboxId, Option<Reading>)> = Vec::with_capacity(live.len());
        for (id, state, cpus, handle) in live {
            if state != SandboxState::Running {
                fresh.push((id, None));
                continue;
            }
            let Some(h) = handle else { continue };
            // Cached memory costs the kernel a whole memory.stat: read it every tenth sample
            // (staggered across sandboxes) and repeat it in between.
            let (prev, prev_cache) = {
                let t = self.timelines.lock().unwrap();
                let t = t.get(&id);
                (t.and_then(|t| t.last_cpu), t.and_then(|t| t.samples.back().map(|s| s.mem_cache_kib)))
            };
            let stagger = id.as_str().bytes().fold(0u64, |a, b| a.wrapping_add(u64::from(b)));
            let with_cache = prev_cache.is_none() || (u64::from(at) + stagger) % CACHE_EVERY == 0;
            let Ok(st) = self.runtime.sample(&id, &h, with_cache) else { continue };
            let now = Instant::now();
            let pct = match prev {
                Some((t, ns)) => {
                    let wall = now.duration_since(t).as_nanos() as f64 * f64::from(cpus.max(1));
                    if wall > 0.0 {
                        (st.cpu_usage_ns.saturating_sub(ns) as f64 / wall * 100.0).min(100.0)
                    } else {
                        0.0
                    }
                }
                None => 0.0,
            };
            let sample = Sample {
                at,
                cpu_centi_pct: (pct * 100.0).round() as u16,
                mem_used_kib: kib(st.memory_used_bytes),
                mem_cache_kib: if with_cache { kib(st.memory_cache_bytes) } else { prev_cache.unwrap_or(0) },
                disk_used_kib: kib(st.disk_used_bytes),
            };
            fresh.push((id, Some(Reading { cpu: (now, st.cpu_usage_ns), sample })));
        }
        let mut timelines = self.timelines.lock().unwrap();
        for (id, reading) in fresh {
            let t = timelines.entry(id).or_default();
            match reading {
                Some(r) => {
                    t.last_cpu = Some(r.cpu);
                    t.push(r.sample, cap);
                }
                None => {
                    // Paused: repeat the last values, CPU at zero; its CPU clock restarts on resume.
                    t.last_cpu = None;
                    if let Some(last) = t.samples.back().copied() {
                        t.push(Sample { at, cpu_centi_pct: 0, ..last }, cap);
                    }
                }
            }
        }
        tracing::debug!(sandboxes = timelines.len(), elapsed_us = started.elapsed().as_micros() as u64, "sampled");
    }

    /// The sandbox's samples between `start` and `end` (Unix seconds, inclusive), oldest first.
    /// Before the first sample exists, one taken now.
    pub fn timeline(
        &self,
        id: &str,
        start: Option<u64>,
        end: Option<u64>,
    ) -> Result<Vec<MetricPoint>, crate::NodeError> {
        let rec = self.get(id)?;
        let mem_total = rec.memory_mb * 1024 * 1024;
        let disk_total = rec.disk_mb * 1024 * 1024;
        let point = |s: &Sample| MetricPoint {
            timestamp: crate::rfc3339(u64::from(s.at) * 1000),
            timestamp_unix: u64::from(s.at),
            cpu_count: rec.cpu_count,
            cpu_used_pct: f64::from(s.cpu_centi_pct) / 100.0,
            mem_used: u64::from(s.mem_used_kib) * 1024,
            mem_total,
            mem_cache: u64::from(s.mem_cache_kib) * 1024,
            disk_used: u64::from(s.disk_used_kib) * 1024,
            disk_total,
        };
        let points: Option<Vec<MetricPoint>> = self.timelines.lock().unwrap().get(&rec.id).map(|t| {
            t.samples
                .iter()
                .filter(|s| start.is_none_or(|a| u64::from(s.at) >= a) && end.is_none_or(|b| u64::from(s.at) <= b))
                .map(point)
                .collect()
        });
        match points {
            Some(p) if !p.is_empty() || start.is_some() || end.is_some() => Ok(p),
            _ => {
                let m = self.metrics(id)?;
                let now = now_ms() / 1000;
                Ok(vec![MetricPoint {
                    timestamp: crate::rfc3339(now * 1000),
                    timestamp_unix: now,
                    cpu_count: rec.cpu_count,
                    cpu_used_pct: m["cpu_used_pct"].as_f64().unwrap_or(0.0),
                    mem_used: m["mem_used"].as_u64().unwrap_or(0),
                    mem_total,
                    mem_cache: m["mem_cache"].as_u64().unwrap_or(0),
                    disk_used: m["disk_used"].as_u64().unwrap_or(0),
                    disk_total,
                }])
            }
        }
    }

    /// The newest sample of each sandbox named (those that exist).
    pub fn latest_metrics(&self, ids: &[&str]) -> HashMap<String, MetricPoint> {
        let mut out = HashMap::new();
        for id in ids {
            if let Ok(mut v) = self.timeline(id, None, None) {
                if let Some(p) = v.pop() {
                    out.insert((*id).to_owned(), p);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_samples() {
        let mut t = Timeline::default();
        for i in 0..10 {
            t.push(Sample { at: i, cpu_centi_pct: 0, mem_used_kib: i, mem_cache_kib: 0, disk_used_kib: 0 }, 4);
        }
        let ats: Vec<u32> = t.samples.iter().map(|s| s.at).collect();
        assert_eq!(ats, [6, 7, 8, 9]);
    }

    #[test]
    fn samples_are_small() {
        assert!(std::mem::size_of::<Sample>() <= 20);
    }
}
