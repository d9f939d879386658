//! Health-event histories of the kinds NVSentinel's analyzer rules look for: XID bursts on
//! GPUs, XID 13 with GPC/TPC, XID 74 with NVLink and register entities, NIC driver errors and
//! degradations, remediated fatal events, healthy events and the analyzer's own events. The
//! conformance property and the `rules` bench both use it.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use datastore_api::Document;

/// Register values: all zero but one bit (bit `k` counts from the right).
fn register(bit: Option<u32>) -> String {
    (0..32)
        .map(|i| if Some(31 - i) == bit { '1' } else { '0' })
        .collect()
}

/// The register bits the rules test, per register.
const REGISTER_BITS: &[(usize, &[u32])] = &[
    (0, &[1, 20, 21, 22, 4, 5, 8, 9, 27, 29]),
    (2, &[0, 1, 13, 16, 17, 19]),
    (3, &[16, 17, 18]),
    (4, &[18, 19, 20, 23]),
];

/// `count` events over `nodes`, generated timestamps in `[base, base + span)` seconds, from
/// `seed`. Events come in bursts (on one node and GPU, seconds to minutes apart) so that
/// the rules fire some of the time.
pub fn analyzer_events(
    seed: u64,
    nodes: &[String],
    base: i64,
    span: i64,
    count: usize,
) -> Vec<Document> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(count);
    let mut last: Option<(usize, usize, i64, &str)> = None;
    let xids = ["13", "31", "74", "79", "48", "119", "94"];
    for _ in 0..count {
        let burst = last.filter(|_| rng.gen_bool(0.6));
        let (node, gpu, t, xid) = match burst {
            Some((node, gpu, t, xid)) => (node, gpu, t + rng.gen_range(1..240), xid),
            None => (
                rng.gen_range(0..nodes.len().max(1)),
                rng.gen_range(0..4),
                base + rng.gen_range(0..span.max(1)),
                xids[rng.gen_range(0..xids.len())],
            ),
        };
        last = Some((node, gpu, t, xid));
        let node_name = nodes.get(node).cloned().unwrap_or_default();
        let mut entities =
            vec![json!({"entitytype": "GPU_UUID", "entityvalue": format!("GPU-{node}-{gpu}")})];
        let mut event = json!({
            "version": 1,
            "agent": "syslog-health-monitor",
            "componentclass": "GPU",
            "checkname": "SysLogsXIDError",
            "isfatal": rng.gen_bool(0.7),
            "ishealthy": false,
            "message": "",
            "recommendedaction": 5,
            "errorcode": [xid],
            "metadata": {},
            "generatedtimestamp": {"seconds": t, "nanos": 0},
            "nodename": node_name,
            "processingstrategy": 1,
        });
        let mut remediated = false;
        match rng.gen_range(0..100) {
            0..=9 => {
                event["checkname"] = json!("SysLogsNICDriverError");
                event["isfatal"] = json!(false);
                let code = ["netdev_watchdog", "mlx5_tx_timeout_detected"][rng.gen_range(0..2)];
                event["errorcode"] = json!([code]);
                entities.clear();
            }
            10..=19 => {
                event["agent"] = json!("nic-health-monitor");
                let check =
                    ["InfiniBandDegradationCheck", "EthernetDegradationCheck"][rng.gen_range(0..2)];
                event["checkname"] = json!(check);
                event["isfatal"] = json!(false);
                event["errorcode"] = json!([]);
                entities = vec![
                    json!({"entitytype": "NIC", "entityvalue": format!("mlx5_{}", rng.gen_range(0..2))}),
                    json!({"entitytype": "NICPort", "entityvalue": format!("{}", rng.gen_range(1..3))}),
                ];
            }
            20..=27 => remediated = true,
            28..=31 => event["agent"] = json!("health-events-analyzer"),
            32..=35 => event["ishealthy"] = json!(true),
            36..=39 => {
                event
                    .as_object_mut()
                    .map(|o| o.remove("processingstrategy"));
            }
            40..=41 => event["processingstrategy"] = json!(2),
            _ => {}
        }
        if xid == "13" && event["checkname"] == "SysLogsXIDError" {
            entities.push(
                json!({"entitytype": "GPC", "entityvalue": format!("{}", rng.gen_range(0..2))}),
            );
            entities.push(
                json!({"entitytype": "TPC", "entityvalue": format!("{}", rng.gen_range(0..2))}),
            );
        }
        if xid == "74" && event["checkname"] == "SysLogsXIDError" {
            entities.push(
                json!({"entitytype": "NVLINK", "entityvalue": format!("{}", rng.gen_range(0..3))}),
            );
            let (reg, bits) = REGISTER_BITS[rng.gen_range(0..REGISTER_BITS.len())];
            let bit = bits[rng.gen_range(0..bits.len())];
            for r in 0..7 {
                let value = register((r == reg).then_some(bit));
                entities.push(json!({"entitytype": format!("REG{r}"), "entityvalue": value}));
            }
        }
        event["entitiesimpacted"] = Value::Array(entities);
        let status = json!({
            "nodequarantined": "",
            "userpodsevictionstatus": {"status": "", "message": ""},
            "faultremediated": if remediated { json!({"value": true}) } else { Value::Null },
        });
        let doc = json!({"healthevent": event, "healtheventstatus": status});
        if let Value::Object(d) = doc {
            out.push(d);
        }
    }
    out
}

/// Whether NVSentinel's analyzer watches an insert of `doc` (its watcher's conditions).
pub fn analyzed(doc: &Document) -> bool {
    let e = &doc["healthevent"];
    e["agent"] != "health-events-analyzer"
        && e["ishealthy"] == false
        && (matches!(e.get("processingstrategy"), None | Some(Value::Null))
            || matches!(e["processingstrategy"].as_i64(), Some(1 | 3)))
}
