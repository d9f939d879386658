//! The analyzer's rules, read exactly as NVSentinel's Helm chart carries them: TOML
//! `[[rules]]` (`name`, `description`, `stage`, `recommended_action`, `message`,
//! `evaluate_rule`, `processing_strategy`), either as the TOML text the analyzer reads from
//! its ConfigMap or inside the chart's values file (its `config` block, whose
//! `{{ .Values.<key> }}` references are rendered from the same file, as the chart's
//! `tpl` does).

use serde::Deserialize;

use datastore_api::error::{Error, Result};
use datastore_api::value::Value;
use datastore_query::Pipeline;

/// One rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// `name`: the published event's check name.
    pub name: String,
    /// `description` (not used when running).
    pub description: String,
    /// `stage`: the aggregation stages as written (JSON text each).
    pub stages: Vec<String>,
    /// The stages parsed, placeholders unbound.
    pub pipeline: Pipeline,
    /// `recommended_action`: a `RecommendedAction` name (`CONTACT_SUPPORT` when empty or
    /// unknown, as in the analyzer).
    pub recommended_action: String,
    /// `message`: the published event's message (`""` when absent).
    pub message: String,
    /// `evaluate_rule`: whether the rule runs at all (false when absent, as in the analyzer).
    pub evaluate_rule: bool,
    /// `processing_strategy`: the published event's strategy, overriding the analyzer's.
    pub processing_strategy: Option<String>,
}

#[derive(Deserialize)]
struct TomlRules {
    #[serde(default)]
    rules: Vec<TomlRule>,
}

#[derive(Deserialize)]
struct TomlRule {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    stage: Vec<String>,
    #[serde(default)]
    recommended_action: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    evaluate_rule: bool,
    #[serde(default)]
    processing_strategy: String,
}

/// The `RecommendedAction` names the analyzer knows, with their numbers.
pub const RECOMMENDED_ACTIONS: &[(&str, i64)] = &[
    ("NONE", 0),
    ("COMPONENT_RESET", 2),
    ("CONTACT_SUPPORT", 5),
    ("RUN_FIELDDIAG", 6),
    ("RESTART_VM", 15),
    ("RESTART_BM", 24),
    ("REPLACE_VM", 25),
    ("RUN_DCGMEUD", 26),
    ("CUSTOM", 27),
    ("UNKNOWN", 99),
];

/// The `ProcessingStrategy` names, with their numbers.
pub const PROCESSING_STRATEGIES: &[(&str, i64)] = &[
    ("UNSPECIFIED", 0),
    ("EXECUTE_REMEDIATION", 1),
    ("STORE_ONLY", 2),
    ("STORE_AND_ANALYSE", 3),
];

impl Rule {
    /// The recommended action's number: `CONTACT_SUPPORT` (5) for an empty or unknown name.
    pub fn recommended_action_value(&self) -> i64 {
        RECOMMENDED_ACTIONS
            .iter()
            .find(|(n, _)| *n == self.recommended_action)
            .map_or(5, |(_, v)| *v)
    }
}

/// Reads the rules of the analyzer's TOML configuration (`config.toml`). Every rule's stages
/// must parse; an error names the rule and the stage.
pub fn from_toml(text: &str) -> Result<Vec<Rule>> {
    let parsed: TomlRules = toml::from_str(text).map_err(|e| {
        Error::configuration(format!("analyzer rules: not valid TOML: {}", e.message()))
    })?;
    parsed.rules.into_iter().map(rule).collect()
}

fn rule(r: TomlRule) -> Result<Rule> {
    let name = r.name;
    let stages_json = r
        .stage
        .iter()
        .enumerate()
        .map(|(i, text)| {
            serde_json::from_str::<Value>(text).map_err(|e| {
                Error::configuration(format!(
                    "analyzer rule {name:?}: stage {i} is not JSON: {e}"
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let pipeline = Pipeline::parse(&Value::Array(stages_json))
        .map_err(|e| Error::configuration(format!("analyzer rule {name:?}: {}", e.message())))?;
    let processing_strategy = match r.processing_strategy.as_str() {
        "" => None,
        s if PROCESSING_STRATEGIES.iter().any(|(n, _)| *n == s) => Some(s.to_owned()),
        s => {
            return Err(Error::configuration(format!(
                "analyzer rule {name:?}: processing_strategy {s:?} is not one of {}",
                names(PROCESSING_STRATEGIES)
            )))
        }
    };
    Ok(Rule {
        name,
        description: r.description,
        stages: r.stage,
        pipeline,
        recommended_action: r.recommended_action,
        message: r.message,
        evaluate_rule: r.evaluate_rule,
        processing_strategy,
    })
}

fn names(list: &[(&str, i64)]) -> String {
    list.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

/// Reads the rules from the health-events-analyzer chart's values file: its `config` block,
/// with each `{{ .Values.<key> }}` replaced by that key's value in the same file (what the
/// chart's `tpl` renders). Any other template action is refused, naming it.
pub fn from_values_yaml(text: &str) -> Result<Vec<Rule>> {
    let values: Value = serde_saphyr::from_str(text).map_err(|e| {
        Error::configuration("analyzer rules: the values file is not valid YAML").with_source(e)
    })?;
    let Some(config) = values.get("config").and_then(Value::as_str) else {
        return Err(Error::configuration(
            "analyzer rules: the values file has no `config` block (a string of TOML rules)",
        ));
    };
    from_toml(&render(config, &values)?)
}

/// Renders `{{ .Values.a.b }}` references (spaces optional) from `values`.
fn render(template: &str, values: &Value) -> Result<String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find("}}") else {
            return Err(Error::configuration(
                "analyzer rules: a `{{` in the config block is never closed",
            ));
        };
        let action = rest[start + 2..start + len].trim();
        let value = action
            .strip_prefix(".Values.")
            .and_then(|path| path.split('.').try_fold(values, |v, k| v.get(k)))
            .ok_or_else(|| {
                Error::configuration(format!(
                    "analyzer rules: the template action `{{{{ {action} }}}}` is not a reference to a key of the values file"
                ))
            })?;
        match value {
            Value::String(s) => out.push_str(s),
            Value::Bool(_) | Value::Number(_) => out.push_str(&value.to_string()),
            _ => {
                return Err(Error::configuration(format!(
                    "analyzer rules: `{{{{ {action} }}}}` is not a scalar"
                )))
            }
        }
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_values_references() {
        let values = serde_json::json!({"on": true, "a": {"b": "x"}});
        assert_eq!(
            render("e = {{ .Values.on }}, f = \"{{.Values.a.b}}\"", &values).unwrap(),
            "e = true, f = \"x\""
        );
        assert!(render("{{ include \"x\" . }}", &values).is_err());
        assert!(render("{{ .Values.missing }}", &values).is_err());
        assert!(render("{{ .Values.on", &values).is_err());
    }

    #[test]
    fn reads_toml_rules_with_the_analyzers_defaults() {
        let rules = from_toml(
            r#"
            [[rules]]
            name = "R"
            stage = ['{"$match": {"healthevent.nodename": "this.healthevent.nodename"}}', '{"$count": "n"}']
            [[rules]]
            name = "S"
            recommended_action = "RUN_DCGMEUD"
            evaluate_rule = true
            stage = []
            "#,
        )
        .unwrap();
        assert_eq!(rules.len(), 2);
        assert!(!rules[0].evaluate_rule);
        assert_eq!(rules[0].recommended_action_value(), 5);
        assert_eq!(rules[1].recommended_action_value(), 26);
        let bad = from_toml("[[rules]]\nname = \"B\"\nstage = ['{\"$bucket\": {}}']").unwrap_err();
        assert!(bad.message().contains("\"B\""), "{bad}");
        assert!(bad.message().contains("$bucket"), "{bad}");
    }
}
