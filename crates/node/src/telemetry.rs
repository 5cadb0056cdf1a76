//! The daemon's Prometheus metrics: event counters and latency histograms updated where things
//! happen, and gauges (sandboxes by state, pool sizes) read from the engine at scrape time.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabel {
    pub team: String,
    pub pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

fn latency() -> Histogram {
    // 0.25 ms to ~8 s.
    Histogram::new(exponential_buckets(0.00025, 2.0, 16))
}

pub struct Telemetry {
    registry: Registry,
    pub sandboxes: Family<StateLabel, Gauge>,
    pub pool_ready: Family<PoolLabel, Gauge>,
    pub pool_creating: Family<PoolLabel, Gauge>,
    pub pool_in_use: Family<PoolLabel, Gauge>,
    pub pool_target: Family<PoolLabel, Gauge>,
    pub pool_claims: Family<PoolLabel, Counter>,
    pub pool_empty_claims: Family<PoolLabel, Counter>,
    pub pool_refill_failures: Family<PoolLabel, Counter>,
    pub claim_seconds: Histogram,
    pub cold_create_seconds: Histogram,
    pub pause_seconds: Histogram,
    pub resume_seconds: Histogram,
    pub kills: Family<ReasonLabel, Counter>,
}

impl Default for Telemetry {
    fn default() -> Self {
        let mut t = Telemetry {
            registry: Registry::with_prefix("warren"),
            sandboxes: Default::default(),
            pool_ready: Default::default(),
            pool_creating: Default::default(),
            pool_in_use: Default::default(),
            pool_target: Default::default(),
            pool_claims: Default::default(),
            pool_empty_claims: Default::default(),
            pool_refill_failures: Default::default(),
            claim_seconds: latency(),
            cold_create_seconds: latency(),
            pause_seconds: latency(),
            resume_seconds: latency(),
            kills: Default::default(),
        };
        let r = &mut t.registry;
        r.register("sandboxes", "Sandboxes on this node by state", t.sandboxes.clone());
        r.register("pool_ready", "Ready (unclaimed) sandboxes per pool", t.pool_ready.clone());
        r.register("pool_creating", "Sandboxes being booted per pool", t.pool_creating.clone());
        r.register("pool_in_use", "Claimed sandboxes of each pool's shape that are alive", t.pool_in_use.clone());
        r.register("pool_target", "Ready sandboxes each pool steers toward", t.pool_target.clone());
        r.register("pool_claims", "Creates served from a pool", t.pool_claims.clone());
        r.register("pool_empty_claims", "Creates that found their pool empty", t.pool_empty_claims.clone());
        r.register("pool_refill_failures", "Pool boots that failed", t.pool_refill_failures.clone());
        r.register("claim_duration_seconds", "Time to claim a ready sandbox", t.claim_seconds.clone());
        r.register(
            "cold_create_duration_seconds",
            "Time to boot a sandbox for a create",
            t.cold_create_seconds.clone(),
        );
        r.register("pause_duration_seconds", "Time to pause a sandbox", t.pause_seconds.clone());
        r.register("resume_duration_seconds", "Time to resume a sandbox", t.resume_seconds.clone());
        r.register("sandbox_kills", "Sandboxes killed, by reason", t.kills.clone());
        t
    }
}

impl Telemetry {
    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}
