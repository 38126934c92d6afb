//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs: topic configs can be read and
//! changed; broker settings can be read (they come from the file, environment and flags, and
//! change only with a restart).

use crate::topics::{config_type, ApiError, TOPIC_CONFIGS};
use crate::Broker;
use std::collections::BTreeMap;
use wire::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use wire::messages::*;

const TOPIC: i8 = 2;
const BROKER: i8 = 4;

/// Kafka's `ConfigSource` codes.
const DYNAMIC_TOPIC_CONFIG: i8 = 1;
const STATIC_BROKER_CONFIG: i8 = 4;
const DEFAULT_CONFIG: i8 = 5;

fn unsupported_resource(resource_type: i8) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidRequest,
        format!("resource type {resource_type} is not supported (topics: 2, brokers: 4)"),
    )
}

/// The broker this request names must be this one ("" stands for the cluster default).
fn check_broker(broker: &Broker, name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name == broker.config.node_id.to_string() {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("broker {name} is not this broker ({})", broker.config.node_id),
        ))
    }
}

/// A broker setting's value and whether it was set (rather than left at its default).
fn broker_setting<'a>(broker: &'a Broker, key: &str) -> Option<(&'a str, bool)> {
    broker
        .config
        .settings
        .iter()
        .find(|(k, _, _)| k == key)
        .map(|(_, v, default)| (v.as_str(), !default))
}

fn describe_topic(
    broker: &Broker,
    name: &str,
    keys: Option<&[String]>,
    synonyms: bool,
    documentation: bool,
) -> Result<Vec<DescribeConfigsResourceResult>, ApiError> {
    let topic = broker.topics.get(name).ok_or_else(|| {
        ApiError::new(
            ErrorCode::UnknownTopicOrPartition,
            format!("topic {name} does not exist"),
        )
    })?;
    let defaults = crate::topics::TopicConfig::resolve(broker.topics.defaults(), &BTreeMap::new(), false)?;
    Ok(TOPIC_CONFIGS
        .iter()
        .filter(|(key, ..)| keys.is_none_or(|k| k.iter().any(|x| x == key)))
        .map(|(key, synonym, kind, doc)| {
            let overridden = topic.overrides.get(*key);
            let broker_set = broker_setting(broker, synonym).filter(|(_, set)| *set);
            let default_source = if broker_set.is_some() {
                STATIC_BROKER_CONFIG
            } else {
                DEFAULT_CONFIG
            };
            let mut synonym_list = vec![];
            if synonyms {
                if let Some(v) = overridden {
                    synonym_list.push(DescribeConfigsSynonym {
                        name: key.to_string(),
                        value: Some(v.clone()),
                        source: DYNAMIC_TOPIC_CONFIG,
                        ..Default::default()
                    });
                }
                synonym_list.push(DescribeConfigsSynonym {
                    name: if broker_set.is_some() {
                        synonym.to_string()
                    } else {
                        key.to_string()
                    },
                    value: defaults.value(key),
                    source: default_source,
                    ..Default::default()
                });
            }
            DescribeConfigsResourceResult {
                name: key.to_string(),
                value: topic.config.value(key),
                read_only: false,
                is_default: overridden.is_none(),
                config_source: if overridden.is_some() {
                    DYNAMIC_TOPIC_CONFIG
                } else {
                    default_source
                },
                is_sensitive: false,
                synonyms: synonym_list,
                config_type: *kind,
                documentation: documentation.then(|| doc.to_string()),
                ..Default::default()
            }
        })
        .collect())
}

fn describe_broker(
    broker: &Broker,
    keys: Option<&[String]>,
    documentation: bool,
) -> Vec<DescribeConfigsResourceResult> {
    crate::config::SETTINGS
        .iter()
        .filter(|(key, ..)| keys.is_none_or(|k| k.iter().any(|x| x == key)))
        .map(|(key, _, doc)| {
            let (value, set) = broker_setting(broker, key).unwrap_or(("", false));
            let kind = if value == "true" || value == "false" {
                1 // BOOLEAN
            } else if value.parse::<i64>().is_ok() {
                config_type::LONG
            } else {
                config_type::STRING
            };
            DescribeConfigsResourceResult {
                name: key.to_string(),
                value: Some(value.to_string()),
                // Settings change only with a restart.
                read_only: true,
                is_default: !set,
                config_source: if set { STATIC_BROKER_CONFIG } else { DEFAULT_CONFIG },
                config_type: kind,
                documentation: documentation.then(|| doc.to_string()),
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
                BROKER => check_broker(broker, &r.resource_name)
                    .map(|()| describe_broker(broker, keys, req.include_documentation)),
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

/// Broker settings come from the file, environment and flags; they are not changed live.
fn alter_broker(broker: &Broker, name: &str) -> Result<(), ApiError> {
    check_broker(broker, name)?;
    Err(ApiError::new(
        ErrorCode::InvalidRequest,
        "broker settings cannot be changed at runtime: set them in the config file, environment or flags",
    ))
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
                BROKER => alter_broker(broker, &r.resource_name),
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

/// Applies IncrementalAlterConfigs operations (SET 0, DELETE 1, APPEND 2, SUBTRACT 3) to a
/// topic's overrides.
fn apply_incremental(
    current: &crate::topics::Topic,
    configs: Vec<wire::messages::incremental_alter_configs_request::AlterableConfig>,
) -> Result<BTreeMap<String, String>, ApiError> {
    let mut overrides = current.overrides.clone();
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
                overrides.insert(c.name, v);
            }
            1 => {
                overrides.remove(&c.name);
            }
            op @ (2 | 3) => {
                let is_list = TOPIC_CONFIGS
                    .iter()
                    .any(|(k, _, kind, _)| *k == c.name && *kind == config_type::LIST);
                if !is_list {
                    return Err(bad("APPEND and SUBTRACT apply only to list configs".into()));
                }
                let now = current.config.value(&c.name).unwrap_or_default();
                let mut items: Vec<String> = now.split(',').filter(|s| !s.is_empty()).map(String::from).collect();
                for v in c.value.unwrap_or_default().split(',').filter(|s| !s.is_empty()) {
                    if op == 2 && !items.iter().any(|i| i == v) {
                        items.push(v.to_string());
                    } else if op == 3 {
                        items.retain(|i| i != v);
                    }
                }
                overrides.insert(c.name, items.join(","));
            }
            op => return Err(bad(format!("unknown operation {op}"))),
        }
    }
    Ok(overrides)
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
                    .update_overrides(&r.resource_name, req.validate_only, |t| apply_incremental(t, r.configs)),
                BROKER => alter_broker(broker, &r.resource_name),
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
