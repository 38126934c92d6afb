//! Broker settings that change at runtime (Kafka's dynamic broker configs, KIP-226): every
//! config Kafka lets change at runtime (`config::update_mode`). The broker-level defaults of
//! topic configs (`log.retention.ms`, `message.max.bytes`, …) take effect at once; the others
//! (`num.io.threads`, `max.connections`, `sasl.kerberos.*`, …) are stored and reported only.
//!
//! As in Kafka there are two layers over the static settings (file, environment, flags): the
//! cluster-wide default (resource name "") and this broker's own (resource name = node id),
//! which wins. Both are ConfigRecords of the metadata log (`crate::metadata_log`), committed
//! before a change takes effect. In a cluster the active controller makes every change (the
//! brokers forward them), for any broker's layer (`alter_other`), and each broker takes up its
//! layers from the image as it moves (`reload`, by the publisher). Every other setting is
//! read-only at runtime, and a change to one is refused as Kafka refuses it (`INVALID_REQUEST`, "Cannot update these configs dynamically").

use crate::config::{self, UpdateMode};
use crate::metadata_log::MetadataLog;
use crate::topics::{ApiError, Topics, TOPIC_CONFIGS};
use metadata::{resource_type, ConfigResource};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use wire::ErrorCode;

/// Kafka's `ConfigSource` codes, as DescribeConfigs reports them.
pub mod source {
    pub const DYNAMIC_TOPIC_CONFIG: i8 = 1;
    pub const DYNAMIC_BROKER_CONFIG: i8 = 2;
    pub const DYNAMIC_DEFAULT_BROKER_CONFIG: i8 = 3;
    pub const STATIC_BROKER_CONFIG: i8 = 4;
    pub const DEFAULT_CONFIG: i8 = 5;
}

/// Which dynamic layer a change addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// Resource name "": the default for every broker of the cluster.
    Cluster,
    /// Resource name = this node's id.
    Broker,
}

#[derive(Debug, Clone, Default)]
struct Layers {
    cluster: BTreeMap<String, String>,
    broker: BTreeMap<String, String>,
}

impl Layers {
    fn get_mut(&mut self, layer: Layer) -> &mut BTreeMap<String, String> {
        match layer {
            Layer::Cluster => &mut self.cluster,
            Layer::Broker => &mut self.broker,
        }
    }
}

/// Whether a broker setting can change at runtime.
pub fn is_dynamic(key: &str) -> bool {
    config::update_mode(key) != UpdateMode::ReadOnly
}

/// One value a setting has in one layer: what DescribeConfigs lists as synonyms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub value: String,
    pub source: i8,
}

pub struct DynamicConfigs {
    metadata: Arc<MetadataLog>,
    node_id: i32,
    /// The static settings: (key, value, is the default).
    statics: Vec<(String, String, bool)>,
    layers: Mutex<Layers>,
}

impl DynamicConfigs {
    /// Loads the dynamic layers from the metadata image. A stored value that is no longer
    /// valid stops the start-up, rather than being ignored.
    pub fn open(
        metadata: Arc<MetadataLog>,
        node_id: i32,
        statics: Vec<(String, String, bool)>,
    ) -> Result<DynamicConfigs, String> {
        let image = metadata.image();
        let layers = Layers {
            cluster: image.configs(&ConfigResource::broker("")).clone(),
            broker: image.configs(&ConfigResource::broker(&node_id.to_string())).clone(),
        };
        for (layer, values) in [(Layer::Cluster, &layers.cluster), (Layer::Broker, &layers.broker)] {
            check(layer, values)
                .map_err(|e| format!("dynamic broker configs in the metadata log ({layer:?}): {}", e.message))?;
        }
        Ok(DynamicConfigs {
            metadata,
            node_id,
            statics,
            layers: Mutex::new(layers),
        })
    }

    fn layers(&self) -> std::sync::MutexGuard<'_, Layers> {
        self.layers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every layer that gives `key` a value, the one in effect first and the built-in default
    /// last. Empty for a key that is not a setting.
    pub fn lookup(&self, key: &str) -> Vec<Setting> {
        lookup(&self.layers(), &self.statics, key)
    }

    /// The cluster-wide dynamic values (what describing resource "" shows).
    pub fn cluster_layer(&self) -> BTreeMap<String, String> {
        self.layers().cluster.clone()
    }

    /// The defaults of every topic config, by topic config name, as the layers now give them.
    pub fn topic_defaults(&self) -> BTreeMap<String, String> {
        topic_defaults(&self.layers(), &self.statics)
    }

    /// Changes one layer to what `change` makes of it, after checking every key and value and
    /// that every topic stays valid; the file is written before the change takes effect.
    pub fn alter(
        &self,
        topics: &Topics,
        layer: Layer,
        validate_only: bool,
        change: impl FnOnce(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, ApiError>,
    ) -> Result<(), ApiError> {
        let mut layers = self.layers();
        let mut next = layers.clone();
        let values = change(next.get_mut(layer))?;
        check(layer, &values)?;
        *next.get_mut(layer) = values;
        let defaults = topic_defaults(&next, &self.statics);
        topics.set_config_defaults(defaults.clone(), true)?;
        if validate_only {
            return Ok(());
        }
        let resource = match layer {
            Layer::Cluster => String::new(),
            Layer::Broker => self.node_id.to_string(),
        };
        let records = crate::upgrade::config_changes(
            resource_type::BROKER,
            &resource,
            layers.get_mut(layer),
            next.get_mut(layer),
        );
        self.metadata.commit_now(records).map_err(ApiError::from)?;
        *layers = next;
        topics.set_config_defaults(defaults, false)?;
        tracing::info!(?layer, "dynamic broker configs changed");
        Ok(())
    }

    /// Changes another broker's own layer (resource name = its id), as the active controller
    /// does for a change a client sent to that broker and it forwarded here. The values are
    /// checked as for this broker's layer; that they leave that broker's topics valid is its
    /// own business when it applies them (`reload`), as Kafka's controller checks only the
    /// values. `change` starts from that broker's layer in the metadata image.
    pub fn alter_other(
        &self,
        broker_id: i32,
        validate_only: bool,
        change: impl FnOnce(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, ApiError>,
    ) -> Result<(), ApiError> {
        // Serialised with this broker's own changes, so each diff is against the newest image.
        let _layers = self.layers();
        let resource = broker_id.to_string();
        let before = self
            .metadata
            .image()
            .configs(&ConfigResource::broker(&resource))
            .clone();
        let values = change(&before)?;
        check(Layer::Broker, &values)?;
        if validate_only {
            return Ok(());
        }
        let records = crate::upgrade::config_changes(resource_type::BROKER, &resource, &before, &values);
        self.metadata.commit_now(records).map_err(ApiError::from)?;
        tracing::info!(broker = broker_id, "dynamic broker configs of another broker changed");
        Ok(())
    }

    /// The dynamic layer of broker `broker_id` as the metadata image holds it, over the
    /// cluster's: what an APPEND or SUBTRACT of IncrementalAlterConfigs starts from for
    /// another broker (whose static settings this node cannot know; its own are used).
    pub fn value_for(&self, broker_id: i32, key: &str) -> Option<String> {
        let image = self.metadata.image();
        let layers = Layers {
            cluster: image.configs(&ConfigResource::broker("")).clone(),
            broker: image.configs(&ConfigResource::broker(&broker_id.to_string())).clone(),
        };
        lookup(&layers, &self.statics, key).into_iter().next().map(|s| s.value)
    }

    /// Takes up the layers the metadata image now holds (called by the publisher each time
    /// the image moves): a change committed by the active controller, made for the cluster
    /// or for this broker through another node, takes effect here. A value this broker
    /// cannot take is logged and its layer left as it was (the controller checked it, so
    /// only a newer node's setting can do that).
    pub fn reload(&self, topics: &Topics) {
        let image = self.metadata.image();
        let mut layers = self.layers();
        let next = Layers {
            cluster: image.configs(&ConfigResource::broker("")).clone(),
            broker: image
                .configs(&ConfigResource::broker(&self.node_id.to_string()))
                .clone(),
        };
        if next.cluster == layers.cluster && next.broker == layers.broker {
            return;
        }
        for (layer, values) in [(Layer::Cluster, &next.cluster), (Layer::Broker, &next.broker)] {
            if let Err(e) = check(layer, values) {
                tracing::warn!(?layer, error = %e.message, "dynamic broker configs in the metadata log not taken up");
                return;
            }
        }
        let defaults = topic_defaults(&next, &self.statics);
        if let Err(e) = topics.set_config_defaults(defaults, false) {
            tracing::warn!(error = %e.message, "dynamic broker configs in the metadata log not taken up");
            return;
        }
        *layers = next;
        tracing::info!("dynamic broker configs changed through the active controller");
    }
}

/// The values of one dynamic layer must name settings that can change at runtime there, and
/// be valid for them. As Kafka (`DynamicBrokerConfig.validateConfigs`, answered with
/// `INVALID_REQUEST` since KAFKA-13609): the read-only keys are listed together, then the
/// TLS keys that need a listener prefix, then per-broker keys set as the cluster default, then
/// a bad value. A key that is no broker config at all is refused with `INVALID_CONFIG`
/// (Kafka would store it for plugins; Sluice has none, so it can only be a mistake).
fn check(layer: Layer, values: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if let Some(key) = values.keys().find(|k| !config::is_broker_config(k)) {
        return Err(ApiError::new(
            ErrorCode::InvalidConfig,
            format!("unknown broker config {key}"),
        ));
    }
    let with = |mode: UpdateMode| -> Vec<&str> {
        values
            .keys()
            .filter(|k| config::update_mode(k) == mode)
            .map(String::as_str)
            .collect()
    };
    let refuse = |what: &str, keys: Vec<&str>| -> Result<(), ApiError> {
        if keys.is_empty() {
            return Ok(());
        }
        Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("{what}: Set({})", keys.join(", ")),
        ))
    };
    refuse("Cannot update these configs dynamically", with(UpdateMode::ReadOnly))?;
    refuse(
        "These security configs can be dynamically updated only per-listener using the listener prefix",
        with(UpdateMode::PerListener),
    )?;
    if layer == Layer::Cluster {
        refuse(
            "Cannot update these configs at default cluster level, broker id must be specified",
            with(UpdateMode::PerBroker),
        )?;
    }
    for (key, value) in values {
        config::check_broker_value(key, value).map_err(|why| ApiError::new(ErrorCode::InvalidRequest, why))?;
    }
    Ok(())
}

fn lookup(layers: &Layers, statics: &[(String, String, bool)], key: &str) -> Vec<Setting> {
    if !config::is_broker_config(key) {
        return vec![];
    }
    let mut found = vec![];
    let mut push = |value: &str, source: i8| {
        found.push(Setting {
            value: value.to_string(),
            source,
        })
    };
    if let Some(v) = layers.broker.get(key) {
        push(v, source::DYNAMIC_BROKER_CONFIG);
    }
    if let Some(v) = layers.cluster.get(key) {
        push(v, source::DYNAMIC_DEFAULT_BROKER_CONFIG);
    }
    if let Some((_, v, false)) = statics.iter().find(|(k, ..)| k == key) {
        push(v, source::STATIC_BROKER_CONFIG);
    }
    if let Some(default) = config::broker_default(key) {
        push(default, source::DEFAULT_CONFIG);
    }
    found
}

fn topic_defaults(layers: &Layers, statics: &[(String, String, bool)]) -> BTreeMap<String, String> {
    TOPIC_CONFIGS
        .iter()
        .filter_map(|d| {
            let first = lookup(layers, statics, d.synonym?).into_iter().next()?;
            Some((d.name.to_string(), first.value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(key: &str, value: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(key.to_string(), value.to_string())])
    }

    #[test]
    fn changes_are_checked_as_kafka_checks_dynamic_broker_configs() {
        for (key, value) in [
            ("log.retention.ms", "1000"),
            ("num.io.threads", "16"),
            ("sasl.kerberos.min.time.before.relogin", "120000"),
            ("max.connections", "5000"),
            ("log.cleaner.io.max.bytes.per.second", "1e6"),
        ] {
            assert_eq!(check(Layer::Broker, &one(key, value)), Ok(()), "{key}");
        }
        assert_eq!(check(Layer::Cluster, &one("num.io.threads", "16")), Ok(()));
        let refused = |layer, values: &BTreeMap<String, String>| check(layer, values).unwrap_err();
        let e = refused(Layer::Broker, &one("num.partitions", "3"));
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert_eq!(
            e.message,
            "Cannot update these configs dynamically: Set(num.partitions)"
        );
        let both = BTreeMap::from([
            ("default.replication.factor".to_string(), "3".to_string()),
            ("log.dirs".to_string(), "/x".to_string()),
        ]);
        assert_eq!(
            refused(Layer::Broker, &both).message,
            "Cannot update these configs dynamically: Set(default.replication.factor, log.dirs)"
        );
        let e = refused(Layer::Cluster, &one("sasl.kerberos.min.time.before.relogin", "1"));
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(e.message.contains("broker id must be specified"), "{}", e.message);
        let e = refused(Layer::Broker, &one("ssl.keystore.location", "/k.jks"));
        assert!(e.message.contains("listener prefix"), "{}", e.message);
        for (key, value) in [
            ("num.io.threads", "many"),
            ("num.io.threads", "0"),
            ("log.retention.ms", "soon"),
        ] {
            let e = refused(Layer::Broker, &one(key, value));
            assert_eq!(e.code, ErrorCode::InvalidRequest, "{key}={value}");
            assert!(e.message.contains(key), "{}", e.message);
        }
        assert_eq!(
            refused(Layer::Broker, &one("no.such.setting", "1")).code,
            ErrorCode::InvalidConfig
        );
    }

    #[test]
    fn every_broker_config_has_a_valid_default_and_one_name() {
        let mut names = std::collections::BTreeSet::new();
        for (key, default, _) in config::SETTINGS {
            assert!(names.insert(*key), "{key} twice");
            if is_dynamic(key) {
                assert_eq!(config::check_broker_value(key, default), Ok(()), "{key}");
            }
        }
        for s in config::KAFKA_BROKER_CONFIGS {
            assert!(names.insert(s.name), "{} twice", s.name);
            if let Some(d) = s.default {
                assert!(crate::topics::parse_config_value(s.kind, d).is_ok(), "{}", s.name);
            }
        }
        for d in TOPIC_CONFIGS {
            if let Some(synonym) = d.synonym {
                assert!(
                    config::SETTINGS.iter().any(|(k, ..)| *k == synonym),
                    "{synonym} is a setting"
                );
                assert_eq!(config::broker_default(synonym), Some(d.default), "{synonym}");
            }
        }
    }
}
