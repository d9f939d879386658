//! NVSentinel's real analyzer rules (the chart's values file, unchanged; see
//! `fixtures/NOTICE.md`): they load, bind as the Go analyzer binds them, and run.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is the test's

use datastore_analyzer::Analyzer;
use serde_json::json;

const VALUES: &str = include_str!("fixtures/nvsentinel-analyzer-values.yaml");

fn analyzer() -> Analyzer {
    Analyzer::new(datastore_analyzer::rules::from_values_yaml(VALUES).unwrap()).unwrap()
}

fn event(xid: &str) -> datastore_api::Document {
    json!({
        "_id": "e1",
        "healthevent": {
            "agent": "syslog-health-monitor",
            "checkname": "SysLogsXIDError",
            "nodename": "node-1",
            "isfatal": true,
            "ishealthy": false,
            "errorcode": [xid],
            "entitiesimpacted": [{"entitytype": "GPU_UUID", "entityvalue": "GPU-1"}],
            "generatedtimestamp": {"seconds": 1_700_000_000, "nanos": 0},
            "processingstrategy": 1
        },
        "healtheventstatus": {}
    })
    .as_object()
    .cloned()
    .unwrap()
}

#[test]
fn all_22_rules_load_enabled() {
    let a = analyzer();
    let names: Vec<&str> = a.rules().iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names.len(), 22, "{names:?}");
    assert!(a.rules().iter().all(|r| r.evaluate_rule));
    assert_eq!(names[0], "MultipleRemediations");
    assert!(names.contains(&"XID74Reg3Bit18Set"));
}

#[test]
fn every_rule_binds_for_an_event() {
    let a = analyzer();
    for rule in a.rules() {
        let p = a
            .pipeline(rule, &event("31"))
            .unwrap_or_else(|e| panic!("{}: {e}", rule.name));
        let text = serde_json::to_string(p.stages_json()).unwrap();
        assert!(!text.contains("this.healthevent"), "{}: {text}", rule.name);
    }
}

#[test]
fn error_code_placeholders_index_the_list() {
    let a = analyzer();
    let rule = a
        .rules()
        .iter()
        .find(|r| r.name == "RepeatedXID31OnDifferentGPU")
        .unwrap();
    let p = a.pipeline(rule, &event("31")).unwrap();
    let text = serde_json::to_string(p.stages_json()).unwrap();
    assert!(text.contains(r#""healthevent.errorcode":"31""#), "{text}");
}

#[test]
fn most_rules_are_decided_at_plan_time_and_the_rest_scan_bounded() {
    let a = analyzer();
    for xid in ["31", "13", "74", "79"] {
        let mut left = Vec::new();
        for rule in a.rules() {
            let plan = a.pipeline(rule, &event(xid)).unwrap().plan().unwrap();
            if !plan.returns_nothing() {
                println!("XID {xid} {}:\n{plan}", rule.name);
                left.push(rule.name.as_str());
            }
        }
        println!("XID {xid}: {} of 22 rules run: {left:?}", left.len());
    }
}

#[test]
fn the_analyzers_own_match_parses() {
    let stage = datastore_analyzer::analyzed_stage();
    assert_eq!(
        stage["$match"]["healthevent.agent"]["$ne"],
        datastore_analyzer::AGENT
    );
    assert_eq!(stage["$match"]["$or"].as_array().map(Vec::len), Some(3));
}
