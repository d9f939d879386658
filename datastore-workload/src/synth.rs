//! Seeded synthetic NVSentinel data: health events shaped like the ones the health monitors
//! send (reference Appendix) and cloud-provider maintenance events.
//!
//! The same seed, fleet size and start time always give the same events.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use datastore::model::{
    BehaviourOverrides, Csp, Entity, HealthEvent, HealthEventStatus, InternalStatus,
    MaintenanceEvent, MaintenanceType, ProcessingStrategy, ProtoTimestamp, ProviderStatus,
    RecommendedAction,
};
use rand::distributions::{Distribution, WeightedIndex};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// The default RNG seed, so that runs are repeatable unless `--seed` says otherwise.
pub const DEFAULT_SEED: u64 = 42;

/// Share of fatal events.
pub const FATAL_SHARE: f64 = 0.30;
/// Share of healthy reports among the non-fatal events.
const HEALTHY_SHARE_OF_NON_FATAL: f64 = 0.40;
/// Share of events sent to the "flaky" tenth of the fleet (real fleets are skewed).
const HOT_NODE_SHARE: f64 = 0.25;
/// GPUs per node (an 8-GPU HGX/DGX system).
const GPUS_PER_NODE: usize = 8;
/// PCI bus numbers of the eight GPUs of an HGX H100 board.
const GPU_PCI_BUSES: [&str; GPUS_PER_NODE] = ["18", "2a", "3a", "5d", "9a", "ab", "ba", "db"];
/// The cluster name used in metadata and maintenance events.
pub const CLUSTER: &str = "dgx-prod-us-east-1";

/// The kind of entities a check reports.
#[derive(Debug, Clone, Copy)]
enum Entities {
    /// GPU index, GPU UUID, PCI address.
    Gpu,
    /// GPU index, GPU UUID, NVLink number.
    NvLink,
    /// An NVSwitch.
    NvSwitch,
    /// A NIC and port.
    Nic,
    /// None (node-level).
    None,
}

/// One health check of a monitor.
#[derive(Debug, Clone, Copy)]
struct Check {
    agent: &'static str,
    name: &'static str,
    component_class: &'static str,
    weight: u32,
    entities: Entities,
    /// `(error code, message)` of fatal reports.
    fatal: &'static [(&'static str, &'static str)],
    /// `(error code, message)` of non-fatal unhealthy reports.
    warning: &'static [(&'static str, &'static str)],
    /// What the monitor recommends for a fatal report.
    fatal_action: RecommendedAction,
}

const XID_FATAL: &[(&str, &str)] = &[
    ("79", "XID 79: GPU has fallen off the bus"),
    ("48", "XID 48: Double Bit ECC Error"),
    ("119", "XID error occurred"),
    ("94", "XID 94: Contained ECC error"),
    ("95", "XID 95: Uncontained ECC error"),
    ("74", "XID 74: NVLink error"),
];
const XID_WARNING: &[(&str, &str)] = &[
    ("13", "XID 13: Graphics Engine Exception"),
    ("31", "XID 31: GPU memory page fault"),
    ("43", "XID 43: GPU stopped processing"),
    (
        "63",
        "XID 63: ECC page retirement or row remapping recording event",
    ),
];

/// Weighted catalogue of checks: gpu-health-monitor sends most events, then
/// syslog-health-monitor, then csp-health-monitor.
const CHECKS: &[Check] = &[
    Check {
        agent: "gpu-health-monitor",
        name: "GpuXidError",
        component_class: "GPU",
        weight: 30,
        entities: Entities::Gpu,
        fatal: XID_FATAL,
        warning: XID_WARNING,
        fatal_action: RecommendedAction::ComponentReset,
    },
    Check {
        agent: "gpu-health-monitor",
        name: "GpuThermalWatch",
        component_class: "GPU",
        weight: 14,
        entities: Entities::Gpu,
        fatal: &[(
            "DCGM_FR_TEMP_VIOLATION",
            "GPU temperature exceeded the shutdown threshold",
        )],
        warning: &[(
            "DCGM_FR_CLOCK_THROTTLE_THERMAL",
            "Clocks are being throttled for thermal reasons",
        )],
        fatal_action: RecommendedAction::RestartBm,
    },
    Check {
        agent: "gpu-health-monitor",
        name: "GpuPcieWatch",
        component_class: "GPU",
        weight: 10,
        entities: Entities::Gpu,
        fatal: &[(
            "DCGM_FR_PCIE_H_REPLAY_VIOLATION",
            "PCIe replay rate exceeded the limit",
        )],
        warning: &[(
            "DCGM_FR_PCI_REPLAY_RATE",
            "PCIe replay counter is increasing",
        )],
        fatal_action: RecommendedAction::RestartVm,
    },
    Check {
        agent: "gpu-health-monitor",
        name: "GpuNvLinkWatch",
        component_class: "GPU",
        weight: 10,
        entities: Entities::NvLink,
        fatal: &[("DCGM_FR_NVLINK_DOWN", "NVLink is down")],
        warning: &[(
            "DCGM_FR_NVLINK_ERROR_THRESHOLD",
            "NVLink error counter exceeded the threshold",
        )],
        fatal_action: RecommendedAction::ComponentReset,
    },
    Check {
        agent: "gpu-health-monitor",
        name: "GpuPowerWatch",
        component_class: "GPU",
        weight: 8,
        entities: Entities::Gpu,
        fatal: &[(
            "DCGM_FR_POWER_UNREADABLE",
            "GPU power readings are unavailable",
        )],
        warning: &[(
            "DCGM_FR_CLOCK_THROTTLE_POWER",
            "Clocks are being throttled for power reasons",
        )],
        fatal_action: RecommendedAction::RestartVm,
    },
    Check {
        agent: "gpu-health-monitor",
        name: "GpuDcgmConnectivityFailure",
        component_class: "GPU",
        weight: 3,
        entities: Entities::None,
        fatal: &[(
            "DCGM_ST_CONNECTION_NOT_VALID",
            "Cannot connect to the DCGM host engine",
        )],
        warning: &[("DCGM_ST_TIMEOUT", "DCGM host engine did not answer in time")],
        fatal_action: RecommendedAction::ContactSupport,
    },
    Check {
        agent: "syslog-health-monitor",
        name: "SysLogsXIDError",
        component_class: "GPU",
        weight: 9,
        entities: Entities::Gpu,
        fatal: XID_FATAL,
        warning: XID_WARNING,
        fatal_action: RecommendedAction::ComponentReset,
    },
    Check {
        agent: "syslog-health-monitor",
        name: "NvswitchErrorFromKmsgWatch",
        component_class: "NVSwitch",
        weight: 2,
        entities: Entities::NvSwitch,
        fatal: &[(
            "SXid 24007",
            "NVSwitch fatal error: NVLink training failure",
        )],
        warning: &[("SXid 20034", "NVSwitch non-fatal error: LTSSM fault")],
        fatal_action: RecommendedAction::RestartBm,
    },
    Check {
        agent: "syslog-health-monitor",
        name: "InfiniBandStateCheck",
        component_class: "NIC",
        weight: 3,
        entities: Entities::Nic,
        fatal: &[("PORT_DOWN", "InfiniBand port is down")],
        warning: &[("PORT_FLAPPING", "InfiniBand port state changed repeatedly")],
        fatal_action: RecommendedAction::RunFieldDiag,
    },
    Check {
        agent: "syslog-health-monitor",
        name: "InfiniBandErrorCheck",
        component_class: "NIC",
        weight: 2,
        entities: Entities::Nic,
        fatal: &[(
            "SYMBOL_ERRORS",
            "InfiniBand symbol errors exceeded the limit",
        )],
        warning: &[("LINK_DOWNED", "InfiniBand link downed counter increased")],
        fatal_action: RecommendedAction::RunFieldDiag,
    },
    Check {
        agent: "csp-health-monitor",
        name: "CSPMaintenance",
        component_class: "Node",
        weight: 5,
        entities: Entities::None,
        fatal: &[(
            "MAINTENANCE_SCHEDULED",
            "Cloud provider scheduled maintenance for this instance",
        )],
        warning: &[(
            "MAINTENANCE_PENDING",
            "Cloud provider maintenance is pending",
        )],
        fatal_action: RecommendedAction::RestartVm,
    },
];

/// One GPU of a node.
#[derive(Debug, Clone)]
struct Gpu {
    uuid: String,
    pci: String,
}

/// One node of the synthetic fleet.
#[derive(Debug, Clone)]
struct Node {
    name: String,
    gpus: Vec<Gpu>,
}

/// A seeded generator of health and maintenance events for a fleet of nodes named
/// `node-0` … `node-{n-1}`.
pub struct Synth {
    rng: StdRng,
    nodes: Vec<Node>,
    hot: Vec<usize>,
    checks: WeightedIndex<u32>,
    clock: DateTime<Utc>,
    /// The generated timestamps advance by 1 to this many milliseconds per event.
    max_gap_ms: i64,
}

impl Synth {
    /// A generator for `nodes` nodes (at least one) whose first event is generated at `start`.
    pub fn new(seed: u64, nodes: usize, start: DateTime<Utc>) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let nodes: Vec<Node> = (0..nodes.max(1))
            .map(|i| Node {
                name: node_name(i),
                gpus: GPU_PCI_BUSES
                    .iter()
                    .map(|bus| Gpu {
                        uuid: gpu_uuid(&mut rng),
                        pci: format!("0000:{bus}:00"),
                    })
                    .collect(),
            })
            .collect();
        let mut hot: Vec<usize> = (0..nodes.len()).collect();
        hot.shuffle(&mut rng);
        hot.truncate((nodes.len() / 10).max(1));
        // CHECKS is a constant table of positive weights: this cannot fail.
        #[allow(clippy::expect_used)]
        let checks = WeightedIndex::new(CHECKS.iter().map(|c| c.weight))
            .expect("check weights are positive");
        Synth {
            rng,
            nodes,
            hot,
            checks,
            clock: start,
            max_gap_ms: 200,
        }
    }

    /// The same generator with `events` events spread over about `span` (the generated
    /// timestamps of a long history instead of a burst).
    pub fn spread(mut self, events: u64, span: chrono::Duration) -> Self {
        let per_event = span.num_milliseconds() / i64::try_from(events.max(1)).unwrap_or(i64::MAX);
        self.max_gap_ms = (2 * per_event).max(2);
        self
    }

    /// Number of nodes in the fleet.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The next health event with the status platform-connectors stores with it
    /// (`spanids.platform-connector` set, everything else unset).
    pub fn health_event(&mut self) -> (HealthEvent, HealthEventStatus) {
        let rng = &mut self.rng;
        let node = if rng.gen_bool(HOT_NODE_SHARE) {
            self.hot[rng.gen_range(0..self.hot.len())]
        } else {
            rng.gen_range(0..self.nodes.len())
        };
        let node = &self.nodes[node];
        let check = &CHECKS[self.checks.sample(rng)];
        let is_fatal = rng.gen_bool(FATAL_SHARE);
        let is_healthy = !is_fatal && rng.gen_bool(HEALTHY_SHARE_OF_NON_FATAL);
        let (error_code, message, action) = if is_fatal {
            let (code, msg) = check.fatal[rng.gen_range(0..check.fatal.len())];
            (vec![code.to_owned()], msg.to_owned(), check.fatal_action)
        } else if is_healthy {
            (
                Vec::new(),
                "No health failures".to_owned(),
                RecommendedAction::None,
            )
        } else {
            let (code, msg) = check.warning[rng.gen_range(0..check.warning.len())];
            let action = if rng.gen_bool(0.2) {
                RecommendedAction::ContactSupport
            } else {
                RecommendedAction::None
            };
            (vec![code.to_owned()], msg.to_owned(), action)
        };
        let gpu_index = rng.gen_range(0..node.gpus.len());
        let gpu = &node.gpus[gpu_index];
        let entity = |t: &str, v: String| Entity {
            entity_type: t.to_owned(),
            entity_value: v,
        };
        let entities_impacted = match check.entities {
            Entities::Gpu => vec![
                entity("GPU", gpu_index.to_string()),
                entity("GPU_UUID", gpu.uuid.clone()),
                entity("PCI", gpu.pci.clone()),
            ],
            Entities::NvLink => vec![
                entity("GPU", gpu_index.to_string()),
                entity("GPU_UUID", gpu.uuid.clone()),
                entity("NVLINK", rng.gen_range(0..18).to_string()),
            ],
            Entities::NvSwitch => vec![entity("NVSWITCH", rng.gen_range(0..4).to_string())],
            Entities::Nic => vec![
                entity("NIC", format!("mlx5_{}", rng.gen_range(0..8))),
                entity("NICPort", "1".to_owned()),
            ],
            Entities::None => Vec::new(),
        };
        let processing_strategy = match rng.gen_range(0..100) {
            0..=84 => ProcessingStrategy::ExecuteRemediation,
            85..=94 => ProcessingStrategy::StoreOnly,
            _ => ProcessingStrategy::StoreAndAnalyse,
        };
        let mut metadata = BTreeMap::new();
        metadata.insert("traceId".to_owned(), hex(rng, 16));
        metadata.insert("cluster".to_owned(), CLUSTER.to_owned());
        if check.component_class == "GPU" {
            metadata.insert("gpuModel".to_owned(), "NVIDIA H100 80GB HBM3".to_owned());
            metadata.insert("driverVersion".to_owned(), "550.90.07".to_owned());
        }
        let quarantine_overrides = rng.gen_bool(0.01).then_some(BehaviourOverrides {
            force: false,
            skip: true,
        });
        self.clock += chrono::Duration::milliseconds(rng.gen_range(1..self.max_gap_ms));
        let event = HealthEvent {
            version: 1,
            agent: check.agent.to_owned(),
            component_class: check.component_class.to_owned(),
            check_name: check.name.to_owned(),
            is_fatal,
            is_healthy,
            message,
            recommended_action: action,
            error_code,
            entities_impacted,
            metadata,
            generated_timestamp: Some(ProtoTimestamp::from(self.clock)),
            node_name: node.name.clone(),
            quarantine_overrides,
            drain_overrides: None,
            processing_strategy,
            id: String::new(),
            custom_recommended_action: String::new(),
        };
        let mut status = HealthEventStatus::default();
        status
            .span_ids
            .insert("platform-connector".to_owned(), hex(rng, 8));
        (event, status)
    }

    /// The next `n` health events.
    pub fn health_events(&mut self, n: usize) -> Vec<(HealthEvent, HealthEventStatus)> {
        (0..n).map(|_| self.health_event()).collect()
    }

    /// Maintenance event number `i` (id `evt-{i}`) as csp-health-monitor would store it at
    /// `now`: every fourth one has completed half an hour ago, the others are `DETECTED` with
    /// scheduled starts from one hour ago onwards, every ten minutes.
    pub fn maintenance_event(&mut self, i: usize, now: DateTime<Utc>) -> MaintenanceEvent {
        let rng = &mut self.rng;
        let node = &self.nodes[i % self.nodes.len()];
        let csp = if i % 3 == 2 { Csp::Aws } else { Csp::Gcp };
        let minutes = |m: i64| chrono::Duration::minutes(m);
        let start = now - minutes(60) + minutes(10 * i as i64);
        let completed = i % 4 == 3;
        let received = now - minutes(120) + chrono::Duration::seconds(i as i64);
        let mut metadata = BTreeMap::new();
        metadata.insert("zone".to_owned(), "us-east1-b".to_owned());
        metadata.insert("instanceName".to_owned(), node.name.clone());
        MaintenanceEvent {
            event_id: format!("evt-{i}"),
            csp,
            cluster_name: CLUSTER.to_owned(),
            resource_type: match csp {
                Csp::Gcp => "compute#instance".to_owned(),
                Csp::Aws => "ec2:instance".to_owned(),
            },
            resource_id: match csp {
                Csp::Gcp => format!("projects/nvs-prod/zones/us-east1-b/instances/{}", node.name),
                Csp::Aws => format!("i-{}", hex(rng, 8)),
            },
            maintenance_type: if rng.gen_bool(0.8) {
                MaintenanceType::Scheduled
            } else {
                MaintenanceType::Unscheduled
            },
            status: if completed {
                InternalStatus::MaintenanceComplete
            } else {
                InternalStatus::Detected
            },
            csp_status: if completed {
                ProviderStatus::Completed
            } else {
                ProviderStatus::Pending
            },
            scheduled_start_time: Some(start),
            scheduled_end_time: Some(start + minutes(45)),
            actual_start_time: completed.then(|| now - minutes(75)),
            actual_end_time: completed.then(|| now - minutes(30)),
            event_received_timestamp: received,
            last_updated_timestamp: received,
            recommended_action: "RESTART_VM".to_owned(),
            metadata,
            node_name: node.name.clone(),
        }
    }
}

/// The name of node `i`.
pub fn node_name(i: usize) -> String {
    format!("node-{i}")
}

/// `n` random bytes as lowercase hex (span and trace ids).
pub fn hex(rng: &mut impl Rng, n: usize) -> String {
    (0..n).map(|_| format!("{:02x}", rng.gen::<u8>())).collect()
}

fn gpu_uuid(rng: &mut impl Rng) -> String {
    let h = hex(rng, 16);
    format!(
        "GPU-{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Events per second for `n` events in `elapsed` (0 for an empty interval).
pub fn per_second(n: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datastore::model::health_event_document;

    fn start() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn seeded_generation_is_repeatable() {
        let a = Synth::new(7, 50, start()).health_events(200);
        let b = Synth::new(7, 50, start()).health_events(200);
        assert_eq!(a, b);
        let c = Synth::new(8, 50, start()).health_events(200);
        assert_ne!(a, c);
    }

    #[test]
    fn events_look_like_nvsentinel_events() {
        let events = Synth::new(1, 200, start()).health_events(20_000);
        let fatal = events.iter().filter(|(e, _)| e.is_fatal).count() as f64 / events.len() as f64;
        assert!((0.27..0.33).contains(&fatal), "fatal share {fatal}");
        let gpu_monitor = events
            .iter()
            .filter(|(e, _)| e.agent == "gpu-health-monitor")
            .count();
        assert!(gpu_monitor > events.len() / 2);
        let strategy_1 = events
            .iter()
            .filter(|(e, _)| e.processing_strategy == ProcessingStrategy::ExecuteRemediation)
            .count();
        assert!(strategy_1 > events.len() * 3 / 4);
        for (e, s) in events.iter().take(500) {
            assert!(e.node_name.starts_with("node-"));
            assert!(s.span_ids.contains_key("platform-connector"));
            if e.is_healthy {
                assert!(e.error_code.is_empty() && !e.is_fatal);
            }
            let doc = health_event_document(e, s);
            assert!(doc.contains_key("healthevent") && doc.contains_key("healtheventstatus"));
        }
        let (e, _) = events
            .iter()
            .find(|(e, _)| e.check_name == "GpuXidError")
            .unwrap();
        let types: Vec<&str> = e
            .entities_impacted
            .iter()
            .map(|x| x.entity_type.as_str())
            .collect();
        assert_eq!(types, ["GPU", "GPU_UUID", "PCI"]);
        assert!(e.entities_impacted[1].entity_value.starts_with("GPU-"));
    }

    #[test]
    fn maintenance_events_cover_both_triggers() {
        let now = start();
        let mut synth = Synth::new(1, 10, now);
        let events: Vec<_> = (0..20).map(|i| synth.maintenance_event(i, now)).collect();
        assert!(events
            .iter()
            .any(|e| e.status == InternalStatus::MaintenanceComplete));
        assert!(events
            .iter()
            .any(|e| e.status == InternalStatus::Detected && e.scheduled_start_time < Some(now)));
        assert!(events.iter().all(|e| e.to_document().is_ok()));
        assert_eq!(events[1].event_id, "evt-1");
    }
}
