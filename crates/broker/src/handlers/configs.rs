//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs: every Kafka 4.0 topic config
//! (`topics::TOPIC_CONFIGS`) can be read and changed; broker configs (Sluice's settings and
//! the Kafka ones in `config::KAFKA_BROKER_CONFIGS`) can be read, and those Kafka lets change
//! at runtime changed for the cluster (resource "") or this broker (its node id), as
//! `dynamic_config` checks. The others are read-only.

use crate::config;
use crate::dynamic_config::{self, source, Layer, Setting};
use crate::topics::{config_type, ApiError, TOPIC_CONFIGS};
use crate::Broker;
use std::collections::BTreeMap;
use wire::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use wire::messages::*;

const TOPIC: i8 = 2;
const BROKER: i8 = 4;

fn unsupported_resource(resource_type: i8) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidRequest,
        format!("resource type {resource_type} is not supported (topics: 2, brokers: 4)"),
    )
}

/// What a change to a broker resource addresses.
enum Target {
    /// A layer this broker holds: the cluster default ("") or its own.
    Mine(Layer),
    /// Another broker's own layer: this node is the active controller, and that broker
    /// forwarded its client's change here.
    Other(i32),
}

/// The broker resource a change names: "" the cluster default, this broker, or another
/// registered broker by id (a change its broker forwarded to this node, the active
/// controller; Kafka's admin clients send a broker's change to that broker).
fn alter_target(broker: &Broker, name: &str) -> Result<Target, ApiError> {
    if let Ok(layer) = broker_layer(broker, name) {
        return Ok(Target::Mine(layer));
    }
    match name.parse::<i32>() {
        Ok(id) if broker.metadata.image().brokers.contains_key(&id) => Ok(Target::Other(id)),
        _ => broker_layer(broker, name).map(Target::Mine),
    }
}

/// The layer a broker resource name addresses: "" the cluster default, else this broker.
fn broker_layer(broker: &Broker, name: &str) -> Result<Layer, ApiError> {
    if name.is_empty() {
        Ok(Layer::Cluster)
    } else if name == broker.config.node_id.to_string() {
        Ok(Layer::Broker)
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("broker {name} is not this broker ({})", broker.config.node_id),
        ))
    }
}

fn synonyms(name: &str, settings: &[Setting], sensitive: bool) -> Vec<DescribeConfigsSynonym> {
    settings
        .iter()
        .map(|s| DescribeConfigsSynonym {
            name: name.to_string(),
            value: (!sensitive).then(|| s.value.clone()),
            source: s.source,
            ..Default::default()
        })
        .collect()
}

/// A topic's configs as DescribeConfigs reports them (also what CreateTopics v5+ returns).
pub(crate) fn describe_topic(
    broker: &Broker,
    name: &str,
    keys: Option<&[String]>,
    include_synonyms: bool,
    documentation: bool,
) -> Result<Vec<DescribeConfigsResourceResult>, ApiError> {
    let topic = broker.topics.settings(name)?;
    Ok(TOPIC_CONFIGS
        .iter()
        .filter(|d| keys.is_none_or(|k| k.iter().any(|x| x == d.name)))
        .map(|d| {
            let key = d.name;
            let overridden = topic.overrides.get(key);
            // The broker layers that give the default, the one in effect first.
            let defaults = d.synonym.map(|s| broker.dynamic.lookup(s)).unwrap_or_default();
            let default_source = defaults.first().map_or(source::DEFAULT_CONFIG, |s| s.source);
            let mut synonym_list = vec![];
            if include_synonyms {
                if let Some(v) = overridden {
                    synonym_list.push(DescribeConfigsSynonym {
                        name: key.to_string(),
                        value: Some(v.clone()),
                        source: source::DYNAMIC_TOPIC_CONFIG,
                        ..Default::default()
                    });
                }
                if let Some(s) = d.synonym {
                    synonym_list.extend(synonyms(s, &defaults, false));
                }
            }
            DescribeConfigsResourceResult {
                name: key.to_string(),
                value: topic.config.value(key),
                read_only: false,
                is_default: overridden.is_none() && default_source == source::DEFAULT_CONFIG,
                config_source: if overridden.is_some() {
                    source::DYNAMIC_TOPIC_CONFIG
                } else {
                    default_source
                },
                is_sensitive: false,
                synonyms: synonym_list,
                config_type: d.kind,
                documentation: documentation.then(|| d.doc.to_string()),
                ..Default::default()
            }
        })
        .collect())
}

/// Broker settings: for this broker every setting as it is now in effect; for "" (the
/// cluster default) only the cluster-wide dynamic values, as Kafka does.
fn describe_broker(
    broker: &Broker,
    layer: Layer,
    keys: Option<&[String]>,
    include_synonyms: bool,
    documentation: bool,
) -> Vec<DescribeConfigsResourceResult> {
    let cluster = broker.dynamic.cluster_layer();
    let names = config::SETTINGS
        .iter()
        .map(|(key, _, doc)| (*key, *doc))
        .chain(config::KAFKA_BROKER_CONFIGS.iter().map(|s| (s.name, "")));
    names
        .filter(|(key, _)| keys.is_none_or(|k| k.iter().any(|x| x == key)))
        .filter(|(key, _)| layer == Layer::Broker || cluster.contains_key(*key))
        .map(|(key, doc)| {
            let mut found = broker.dynamic.lookup(key);
            if layer == Layer::Cluster {
                found.retain(|s| s.source != source::DYNAMIC_BROKER_CONFIG);
            }
            let kind = config::broker_config_type(key);
            let sensitive = kind == config_type::PASSWORD;
            let (value, config_source) = found
                .first()
                .map_or((None, source::DEFAULT_CONFIG), |s| (Some(s.value.clone()), s.source));
            DescribeConfigsResourceResult {
                name: key.to_string(),
                // Kafka never sends a sensitive value, set or not.
                value: if sensitive { None } else { value },
                read_only: !dynamic_config::is_dynamic(key),
                is_default: config_source == source::DEFAULT_CONFIG,
                config_source,
                is_sensitive: sensitive,
                config_type: kind,
                synonyms: if include_synonyms {
                    synonyms(key, &found, sensitive)
                } else {
                    vec![]
                },
                documentation: documentation.then(|| doc.to_string()).filter(|d| !d.is_empty()),
                ..Default::default()
            }
        })
        .collect()
}

pub fn describe(broker: &Broker, _version: i16, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let results = req
        .resources
        .into_iter()
        .map(|r| {
            let keys = r.configuration_keys.as_deref();
            let configs = match r.resource_type {
                TOPIC => describe_topic(
                    broker,
                    &r.resource_name,
                    keys,
                    req.include_synonyms,
                    req.include_documentation,
                ),
                BROKER => broker_layer(broker, &r.resource_name)
                    .map(|layer| describe_broker(broker, layer, keys, req.include_synonyms, req.include_documentation)),
                t => Err(unsupported_resource(t)),
            };
            let mut result = DescribeConfigsResult {
                resource_type: r.resource_type,
                resource_name: r.resource_name,
                ..Default::default()
            };
            match configs {
                Ok(c) => result.configs = c,
                Err(e) => {
                    result.error_code = e.code as i16;
                    result.error_message = Some(e.message);
                }
            }
            result
        })
        .collect();
    DescribeConfigsResponse {
        results,
        ..Default::default()
    }
}

fn outcome(r: Result<(), ApiError>) -> (i16, Option<String>) {
    match r {
        Ok(()) => (0, None),
        Err(e) => (e.code as i16, Some(e.message)),
    }
}

/// AlterConfigs (the legacy form): the configs given become the topic's whole set of overrides.
pub fn alter(broker: &Broker, _version: i16, req: AlterConfigsRequest) -> AlterConfigsResponse {
    use wire::messages::alter_configs_response::AlterConfigsResourceResponse;
    let responses = req
        .resources
        .into_iter()
        .map(|r| {
            let result = match r.resource_type {
                TOPIC => {
                    let overrides = r
                        .configs
                        .into_iter()
                        .filter_map(|c| c.value.map(|v| (c.name, v)))
                        .collect();
                    broker
                        .topics
                        .update_overrides(&r.resource_name, req.validate_only, |_| Ok(overrides))
                }
                // As for topics, the configs given become the layer's whole set.
                BROKER => {
                    let values: BTreeMap<String, String> = r
                        .configs
                        .into_iter()
                        .filter_map(|c| c.value.map(|v| (c.name, v)))
                        .collect();
                    alter_target(broker, &r.resource_name).and_then(|target| match target {
                        Target::Mine(layer) => broker
                            .dynamic
                            .alter(&broker.topics, layer, req.validate_only, |_| Ok(values)),
                        Target::Other(id) => broker.dynamic.alter_other(id, req.validate_only, |_| Ok(values)),
                    })
                }
                t => Err(unsupported_resource(t)),
            };
            let (error_code, error_message) = outcome(result);
            AlterConfigsResourceResponse {
                error_code,
                error_message,
                resource_type: r.resource_type,
                resource_name: r.resource_name,
                ..Default::default()
            }
        })
        .collect();
    AlterConfigsResponse {
        responses,
        ..Default::default()
    }
}

/// Applies IncrementalAlterConfigs operations (SET 0, DELETE 1, APPEND 2, SUBTRACT 3) to a set
/// of values. `now`: a config's value in effect (what APPEND and SUBTRACT start from);
/// `is_list`: whether a config holds a list.
fn apply_incremental(
    mut values: BTreeMap<String, String>,
    configs: Vec<wire::messages::incremental_alter_configs_request::AlterableConfig>,
    now: impl Fn(&str) -> Option<String>,
    is_list: impl Fn(&str) -> bool,
) -> Result<BTreeMap<String, String>, ApiError> {
    let mut seen = std::collections::HashSet::new();
    for c in configs {
        if !seen.insert(c.name.clone()) {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("config {} appears more than once", c.name),
            ));
        }
        let bad = |why: String| ApiError::new(ErrorCode::InvalidConfig, format!("{}: {why}", c.name));
        match c.config_operation {
            0 => {
                let v = c.value.ok_or_else(|| bad("SET needs a value".into()))?;
                values.insert(c.name, v);
            }
            1 => {
                values.remove(&c.name);
            }
            op @ (2 | 3) => {
                if !is_list(&c.name) {
                    return Err(bad("APPEND and SUBTRACT apply only to list configs".into()));
                }
                let current = values
                    .get(&c.name)
                    .cloned()
                    .or_else(|| now(&c.name))
                    .unwrap_or_default();
                let mut items: Vec<String> = current.split(',').filter(|s| !s.is_empty()).map(String::from).collect();
                for v in c.value.unwrap_or_default().split(',').filter(|s| !s.is_empty()) {
                    if op == 2 && !items.iter().any(|i| i == v) {
                        items.push(v.to_string());
                    } else if op == 3 {
                        items.retain(|i| i != v);
                    }
                }
                values.insert(c.name, items.join(","));
            }
            op => return Err(bad(format!("unknown operation {op}"))),
        }
    }
    Ok(values)
}

pub fn incremental_alter(
    broker: &Broker,
    _version: i16,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    use wire::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
    let responses = req
        .resources
        .into_iter()
        .map(|r| {
            let result = match r.resource_type {
                TOPIC => broker
                    .topics
                    .update_overrides(&r.resource_name, req.validate_only, |t| {
                        let is_list =
                            |name: &str| crate::topics::topic_config(name).is_some_and(|d| d.kind == config_type::LIST);
                        apply_incremental(t.overrides.clone(), r.configs, |name| t.config.value(name), is_list)
                    }),
                BROKER => alter_target(broker, &r.resource_name).and_then(|target| {
                    // Read before `alter` takes the layers' lock.
                    let in_effect: BTreeMap<String, String> = r
                        .configs
                        .iter()
                        .filter_map(|c| {
                            let value = match target {
                                Target::Mine(_) => broker.dynamic.lookup(&c.name).first()?.value.clone(),
                                Target::Other(id) => broker.dynamic.value_for(id, &c.name)?,
                            };
                            Some((c.name.clone(), value))
                        })
                        .collect();
                    let change = |current: &BTreeMap<String, String>| {
                        let now = |name: &str| in_effect.get(name).cloned();
                        apply_incremental(current.clone(), r.configs, now, |name| {
                            config::broker_config_type(name) == config_type::LIST
                        })
                    };
                    match target {
                        Target::Mine(layer) => broker.dynamic.alter(&broker.topics, layer, req.validate_only, change),
                        Target::Other(id) => broker.dynamic.alter_other(id, req.validate_only, change),
                    }
                }),
                t => Err(unsupported_resource(t)),
            };
            let (error_code, error_message) = outcome(result);
            AlterConfigsResourceResponse {
                error_code,
                error_message,
                resource_type: r.resource_type,
                resource_name: r.resource_name,
                ..Default::default()
            }
        })
        .collect();
    IncrementalAlterConfigsResponse {
        responses,
        ..Default::default()
    }
}
