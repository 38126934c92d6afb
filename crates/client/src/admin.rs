//! Admin operations: topics, partitions, configs, groups and their offsets, the cluster. Each
//! call is one or a few requests; errors carry the broker's code and message per item.

use crate::cluster::{BrokerInfo, Client, TopicInfo};
use crate::error::{Error, Result};
use crate::group::{decode_assignment, decode_subscription};
use std::collections::{BTreeMap, HashMap};
use wire::messages::create_partitions_request::CreatePartitionsTopic;
use wire::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use wire::messages::describe_configs_request::DescribeConfigsResource;
use wire::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use wire::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use wire::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use wire::messages::offset_fetch_request::OffsetFetchRequestTopic;
use wire::messages::*;
use wire::ErrorCode;

pub type TopicPartition = (String, i32);

/// Which offset of a partition to look up (ListOffsets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    Earliest,
    Latest,
    /// The first offset whose timestamp is at or after this many ms since the epoch (the end
    /// offset when there is none).
    Timestamp(i64),
}

impl OffsetSpec {
    fn timestamp(self) -> i64 {
        match self {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::Timestamp(t) => t,
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    /// -1 for the broker's default (num.partitions).
    pub partitions: i32,
    /// -1 for the broker's default.
    pub replication_factor: i16,
    pub configs: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceType {
    Topic = 2,
    Broker = 4,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    /// Where the value comes from, as Kafka names it (DEFAULT_CONFIG, DYNAMIC_TOPIC_CONFIG, ...).
    pub source: &'static str,
    pub read_only: bool,
    pub is_default: bool,
    pub sensitive: bool,
}

fn source_name(s: i8) -> &'static str {
    match s {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        6 => "DYNAMIC_BROKER_LOGGER_CONFIG",
        7 => "CLIENT_METRICS_CONFIG",
        8 => "GROUP_CONFIG",
        _ => "UNKNOWN",
    }
}

/// A change to one config key (IncrementalAlterConfigs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOp {
    Set(String),
    /// Back to the default.
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Decoded from the consumer protocol; empty for other protocol types.
    pub assignment: Vec<TopicPartition>,
    pub subscription: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

/// One partition of a group's offsets, with the partition's end and the lag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// -1 when the group has committed nothing for this partition.
    pub committed: i64,
    pub end: i64,
    /// end - committed; `None` when nothing is committed.
    pub lag: Option<i64>,
    /// The member consuming this partition now, if any.
    pub member: Option<String>,
}

/// The metadata quorum as its leader describes it (DescribeQuorum).
#[derive(Debug, Clone)]
pub struct QuorumDescription {
    pub leader: i32,
    pub epoch: i32,
    pub high_watermark: i64,
    pub voters: Vec<QuorumReplica>,
    pub observers: Vec<QuorumReplica>,
}

/// One voter or observer: its log end, and when it last fetched and was caught up (wall
/// milliseconds; -1 never).
#[derive(Debug, Clone)]
pub struct QuorumReplica {
    pub id: i32,
    pub log_end_offset: i64,
    pub last_fetch_ms: i64,
    pub last_caught_up_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDescription {
    pub cluster_id: Option<String>,
    pub controller: i32,
    pub brokers: Vec<BrokerInfo>,
    /// Every registered broker, fenced ones too, from DescribeCluster v2; when the broker
    /// cannot say, Metadata's brokers (all unfenced, epochs unknown).
    pub registered: Vec<RegisteredBroker>,
}

/// A broker as the cluster's metadata registers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredBroker {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    pub fenced: bool,
    /// Its epoch (the offset of its registration), where the broker says (Sluice); else -1.
    pub epoch: i64,
}

pub struct Admin {
    client: Client,
}

fn timeout_ms(client: &Client) -> i32 {
    client.config().request_timeout.as_millis().min(i32::MAX as u128) as i32
}

impl Admin {
    pub fn new(client: Client) -> Admin {
        Admin { client }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Creates topics; one result per topic, in the order given.
    pub async fn create_topics(&self, topics: &[NewTopic], validate_only: bool) -> Result<Vec<(String, Result<()>)>> {
        let req = CreateTopicsRequest {
            topics: topics
                .iter()
                .map(|t| CreatableTopic {
                    name: t.name.clone(),
                    num_partitions: t.partitions,
                    replication_factor: t.replication_factor,
                    assignments: vec![],
                    configs: t
                        .configs
                        .iter()
                        .map(|(k, v)| CreatableTopicConfig {
                            name: k.clone(),
                            value: Some(v.clone()),
                        })
                        .collect(),
                })
                .collect(),
            timeout_ms: timeout_ms(&self.client),
            validate_only,
        };
        let resp = self.client.send_controller(&req).await?;
        let out = resp
            .topics
            .into_iter()
            .map(|r| {
                let name = r.name.clone();
                let res = Error::check(r.error_code, || format!("topic '{name}'"), r.error_message.as_ref());
                (r.name, res)
            })
            .collect();
        for t in topics {
            self.client.invalidate(&t.name);
        }
        Ok(out)
    }

    pub async fn delete_topics(&self, names: &[String]) -> Result<Vec<(String, Result<()>)>> {
        let req = DeleteTopicsRequest {
            topic_names: names.to_vec(),
            timeout_ms: timeout_ms(&self.client),
            ..Default::default()
        };
        let resp = self.client.send_controller(&req).await?;
        for n in names {
            self.client.invalidate(n);
        }
        Ok(resp
            .responses
            .into_iter()
            .map(|r| {
                let name = r.name.unwrap_or_default();
                let res = Error::check(r.error_code, || format!("topic '{name}'"), r.error_message.as_ref());
                (name, res)
            })
            .collect())
    }

    /// Every topic, sorted by name (internal ones included, flagged).
    pub async fn list_topics(&self) -> Result<Vec<TopicInfo>> {
        let mut out: Vec<TopicInfo> = self
            .client
            .refresh(&[])
            .await?
            .into_iter()
            .filter_map(|(_, _, t)| t)
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The named topics; a missing one is an error naming it.
    pub async fn describe_topics(&self, names: &[String]) -> Result<Vec<TopicInfo>> {
        let got = self.client.refresh(names).await?;
        let mut out = vec![];
        for (name, code, info) in got {
            match info {
                Some(i) => out.push(i),
                None => Error::check(code, || format!("topic '{name}'"), None)?,
            }
        }
        Ok(out)
    }

    /// Grows `topic` to `total` partitions.
    pub async fn create_partitions(&self, topic: &str, total: i32, validate_only: bool) -> Result<()> {
        let req = CreatePartitionsRequest {
            topics: vec![CreatePartitionsTopic {
                name: topic.to_string(),
                count: total,
                assignments: None,
            }],
            timeout_ms: timeout_ms(&self.client),
            validate_only,
        };
        let resp = self.client.send_controller(&req).await?;
        self.client.invalidate(topic);
        for r in resp.results {
            Error::check(r.error_code, || format!("topic '{topic}'"), r.error_message.as_ref())?;
        }
        Ok(())
    }

    /// The configs of one resource; `keys` empty means all.
    pub async fn describe_configs(&self, kind: ResourceType, name: &str, keys: &[String]) -> Result<Vec<ConfigEntry>> {
        let req = DescribeConfigsRequest {
            resources: vec![DescribeConfigsResource {
                resource_type: kind as i8,
                resource_name: name.to_string(),
                configuration_keys: if keys.is_empty() { None } else { Some(keys.to_vec()) },
            }],
            include_synonyms: false,
            include_documentation: false,
        };
        let resp = self.client.send_any(&req).await?;
        let mut out = vec![];
        for r in resp.results {
            Error::check(
                r.error_code,
                || format!("configs of '{name}'"),
                r.error_message.as_ref(),
            )?;
            for c in r.configs {
                out.push(ConfigEntry {
                    source: source_name(c.config_source),
                    name: c.name,
                    value: c.value,
                    read_only: c.read_only,
                    is_default: c.is_default || c.config_source == 5,
                    sensitive: c.is_sensitive,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub async fn alter_configs(&self, kind: ResourceType, name: &str, ops: &[(String, ConfigOp)]) -> Result<()> {
        let req = IncrementalAlterConfigsRequest {
            resources: vec![AlterConfigsResource {
                resource_type: kind as i8,
                resource_name: name.to_string(),
                configs: ops
                    .iter()
                    .map(|(k, op)| AlterableConfig {
                        name: k.clone(),
                        config_operation: match op {
                            ConfigOp::Set(_) => 0,
                            ConfigOp::Delete => 1,
                        },
                        value: match op {
                            ConfigOp::Set(v) => Some(v.clone()),
                            ConfigOp::Delete => None,
                        },
                    })
                    .collect(),
            }],
            validate_only: false,
        };
        let resp = self.client.send_controller(&req).await?;
        for r in resp.responses {
            Error::check(
                r.error_code,
                || format!("configs of '{name}'"),
                r.error_message.as_ref(),
            )?;
        }
        Ok(())
    }

    /// Groups known to every broker, sorted by id.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        self.client.refresh(&[]).await?;
        let mut out = vec![];
        for b in self.client.brokers() {
            let resp = self.client.send_to(b.id, &ListGroupsRequest::default()).await?;
            Error::check(resp.error_code, || "listing groups".into(), None)?;
            out.extend(resp.groups.into_iter().map(|g| GroupListing {
                group_id: g.group_id,
                protocol_type: g.protocol_type,
                state: g.group_state,
            }));
        }
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out.dedup_by(|a, b| a.group_id == b.group_id);
        Ok(out)
    }

    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let req = DescribeGroupsRequest {
            groups: vec![group.to_string()],
            ..Default::default()
        };
        let resp = self
            .client
            .send_coordinator(group, &req, |r| r.groups.first().map_or(0, |g| g.error_code))
            .await?;
        let g = resp
            .groups
            .into_iter()
            .next()
            .ok_or_else(|| Error::Invalid(format!("no description of group '{group}' in the answer")))?;
        Error::check(g.error_code, || format!("group '{group}'"), None)?;
        let consumer = g.protocol_type == "consumer";
        let members = g
            .members
            .into_iter()
            .map(|m| MemberDescription {
                assignment: if consumer {
                    decode_assignment(&m.member_assignment).unwrap_or_default()
                } else {
                    vec![]
                },
                subscription: if consumer {
                    decode_subscription(&m.member_metadata)
                        .map(|s| s.topics)
                        .unwrap_or_default()
                } else {
                    vec![]
                },
                member_id: m.member_id,
                instance_id: m.group_instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
            })
            .collect();
        Ok(GroupDescription {
            group_id: g.group_id,
            state: g.group_state,
            protocol_type: g.protocol_type,
            protocol: g.protocol_data,
            members,
        })
    }

    pub async fn delete_groups(&self, groups: &[String]) -> Result<Vec<(String, Result<()>)>> {
        let mut out = vec![];
        for g in groups {
            let req = DeleteGroupsRequest {
                groups_names: vec![g.clone()],
            };
            let resp = self
                .client
                .send_coordinator(g, &req, |r| r.results.first().map_or(0, |x| x.error_code))
                .await?;
            for r in resp.results {
                let id = r.group_id.clone();
                out.push((r.group_id, Error::check(r.error_code, || format!("group '{id}'"), None)));
            }
        }
        Ok(out)
    }

    /// Committed offsets of `group` (for `partitions`, or all it has committed when empty).
    pub async fn group_offsets(
        &self,
        group: &str,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        committed_offsets(&self.client, group, partitions).await
    }

    /// Offsets of partitions by `spec`, asked of each partition's leader.
    pub async fn list_offsets(
        &self,
        partitions: &[TopicPartition],
        spec: OffsetSpec,
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        Ok(list_offsets(&self.client, partitions, spec)
            .await?
            .into_iter()
            .map(|(k, (o, _))| (k, o))
            .collect())
    }

    /// Per partition of every topic the group has committed to or is assigned: committed
    /// offset, end offset and lag, sorted by topic and partition.
    pub async fn group_lag(&self, group: &str) -> Result<Vec<PartitionLag>> {
        let desc = self.describe_group(group).await?;
        let committed = self.group_offsets(group, &[]).await?;
        let mut owner: HashMap<TopicPartition, String> = HashMap::new();
        for m in &desc.members {
            for tp in &m.assignment {
                owner.insert(tp.clone(), m.member_id.clone());
            }
        }
        let mut all: Vec<TopicPartition> = committed.keys().cloned().collect();
        all.extend(owner.keys().cloned());
        all.sort();
        all.dedup();
        let ends = self.list_offsets(&all, OffsetSpec::Latest).await?;
        Ok(all
            .into_iter()
            .map(|tp| {
                let c = committed.get(&tp).copied().unwrap_or(-1);
                let end = ends.get(&tp).copied().unwrap_or(-1);
                PartitionLag {
                    member: owner.get(&tp).cloned(),
                    lag: (c >= 0 && end >= 0).then(|| (end - c).max(0)),
                    topic: tp.0,
                    partition: tp.1,
                    committed: c,
                    end,
                }
            })
            .collect())
    }

    /// Commits `offsets` for a group with no active members (Kafka refuses this while members
    /// are consuming: stop them first).
    pub async fn reset_offsets(&self, group: &str, offsets: &BTreeMap<TopicPartition, i64>) -> Result<()> {
        commit_offsets(&self.client, group, -1, "", offsets).await
    }

    /// Each partition's eligible leader replicas (KIP-966) from DescribeTopicPartitions, by
    /// (topic, partition); empty for a broker that does not serve it (older than Kafka 3.7),
    /// as for a partition without any. Up to 2,000 partitions per topic (the API's default
    /// limit); a topic with more is read in pages.
    pub async fn eligible_leader_replicas(&self, topics: &[String]) -> Result<BTreeMap<(String, i32), Vec<i32>>> {
        use wire::messages::describe_topic_partitions_request::{Cursor, TopicRequest};
        let mut out = BTreeMap::new();
        let mut cursor: Option<Cursor> = None;
        loop {
            let req = wire::messages::DescribeTopicPartitionsRequest {
                topics: topics.iter().map(|name| TopicRequest { name: name.clone() }).collect(),
                response_partition_limit: 2000,
                cursor: cursor.take(),
            };
            let Ok(resp) = self.client.send_any(&req).await else {
                return Ok(out);
            };
            for t in resp.topics.into_iter().filter(|t| t.error_code == 0) {
                let name = t.name.unwrap_or_default();
                for p in t.partitions {
                    out.insert(
                        (name.clone(), p.partition_index),
                        p.eligible_leader_replicas.unwrap_or_default(),
                    );
                }
            }
            match resp.next_cursor {
                // A cursor that does not move on would page forever: stop there.
                Some(next) if !out.contains_key(&(next.topic_name.clone(), next.partition_index)) => {
                    cursor = Some(Cursor {
                        topic_name: next.topic_name,
                        partition_index: next.partition_index,
                    })
                }
                _ => return Ok(out),
            }
        }
    }

    pub async fn describe_cluster(&self) -> Result<ClusterDescription> {
        self.client.refresh(&[]).await?;
        let req = wire::messages::DescribeClusterRequest {
            include_fenced_brokers: true,
            endpoint_type: 1,
            ..Default::default()
        };
        let registered = match self.client.send_any(&req).await {
            Ok(r) if r.error_code == 0 => r
                .brokers
                .into_iter()
                .map(|b| RegisteredBroker {
                    id: b.broker_id,
                    host: b.host,
                    port: b.port,
                    rack: b.rack,
                    fenced: b.is_fenced,
                    epoch: b.sluice_broker_epoch,
                })
                .collect(),
            _ => self
                .client
                .brokers()
                .into_iter()
                .map(|b| RegisteredBroker {
                    id: b.id,
                    host: b.host,
                    port: b.port,
                    rack: b.rack,
                    fenced: false,
                    epoch: -1,
                })
                .collect(),
        };
        Ok(ClusterDescription {
            cluster_id: self.client.cluster_id(),
            controller: self.client.controller(),
            brokers: self.client.brokers(),
            registered,
        })
    }

    /// The metadata quorum (`__cluster_metadata` partition 0), from whichever broker answers
    /// (a broker asks the active controller).
    pub async fn describe_quorum(&self) -> Result<QuorumDescription> {
        use wire::messages::describe_quorum_request::{PartitionData, TopicData};
        let req = DescribeQuorumRequest {
            topics: vec![TopicData {
                topic_name: "__cluster_metadata".into(),
                partitions: vec![PartitionData { partition_index: 0 }],
            }],
        };
        let resp = self.client.send_any(&req).await?;
        Error::check(resp.error_code, || "the metadata quorum".to_string(), None)?;
        let p = resp
            .topics
            .into_iter()
            .next()
            .and_then(|t| t.partitions.into_iter().next())
            .ok_or_else(|| Error::Invalid("DescribeQuorum answered without __cluster_metadata-0".into()))?;
        Error::check(p.error_code, || "the metadata quorum".to_string(), None)?;
        let replica = |r: wire::messages::describe_quorum_response::ReplicaState| QuorumReplica {
            id: r.replica_id,
            log_end_offset: r.log_end_offset,
            last_fetch_ms: r.last_fetch_timestamp,
            last_caught_up_ms: r.last_caught_up_timestamp,
        };
        Ok(QuorumDescription {
            leader: p.leader_id,
            epoch: p.leader_epoch,
            high_watermark: p.high_watermark,
            voters: p.current_voters.into_iter().map(replica).collect(),
            observers: p.observers.into_iter().map(replica).collect(),
        })
    }

    /// Every partition of `topics`.
    pub async fn partitions_of(&self, topics: &[String]) -> Result<Vec<TopicPartition>> {
        let mut out = vec![];
        for t in self.describe_topics(topics).await? {
            out.extend(t.partitions.iter().map(|p| (t.name.clone(), p.id)));
        }
        Ok(out)
    }
}

/// ListOffsets for each partition at its leader: (offset, timestamp) per partition.
pub async fn list_offsets(
    client: &Client,
    partitions: &[TopicPartition],
    spec: OffsetSpec,
) -> Result<BTreeMap<TopicPartition, (i64, i64)>> {
    let mut by_leader: BTreeMap<i32, Vec<&TopicPartition>> = BTreeMap::new();
    for tp in partitions {
        let info = client.topic(&tp.0, false).await?;
        let leader = info
            .partitions
            .iter()
            .find(|p| p.id == tp.1)
            .map(|p| p.leader)
            .ok_or_else(|| Error::Kafka {
                code: ErrorCode::UnknownTopicOrPartition.code(),
                context: format!("{}/{}", tp.0, tp.1),
                message: None,
            })?;
        if leader < 0 {
            client.invalidate(&tp.0);
            return Err(Error::Kafka {
                code: ErrorCode::LeaderNotAvailable.code(),
                context: format!("{}/{}", tp.0, tp.1),
                message: None,
            });
        }
        by_leader.entry(leader).or_default().push(tp);
    }
    let mut out = BTreeMap::new();
    for (leader, tps) in by_leader {
        let mut topics: Vec<ListOffsetsTopic> = vec![];
        for tp in tps {
            let p = ListOffsetsPartition {
                partition_index: tp.1,
                current_leader_epoch: -1,
                timestamp: spec.timestamp(),
                ..Default::default()
            };
            match topics.iter_mut().find(|t| t.name == tp.0) {
                Some(t) => t.partitions.push(p),
                None => topics.push(ListOffsetsTopic {
                    name: tp.0.clone(),
                    partitions: vec![p],
                }),
            }
        }
        let req = ListOffsetsRequest {
            replica_id: -1,
            isolation_level: 0,
            topics,
            ..Default::default()
        };
        let resp = client.send_to(leader, &req).await?;
        for t in resp.topics {
            for p in t.partitions {
                let name = t.name.clone();
                if let Err(e) = Error::check(
                    p.error_code,
                    || format!("offsets of {name}/{}", p.partition_index),
                    None,
                ) {
                    if e.needs_metadata() {
                        client.invalidate(&t.name);
                    }
                    return Err(e);
                }
                out.insert((t.name.clone(), p.partition_index), (p.offset, p.timestamp));
            }
        }
    }
    Ok(out)
}

/// OffsetFetch: committed offsets (partitions with none are left out).
pub async fn committed_offsets(
    client: &Client,
    group: &str,
    partitions: &[TopicPartition],
) -> Result<BTreeMap<TopicPartition, i64>> {
    let topics = if partitions.is_empty() {
        None
    } else {
        let mut ts: Vec<OffsetFetchRequestTopic> = vec![];
        for (t, p) in partitions {
            match ts.iter_mut().find(|x| &x.name == t) {
                Some(x) => x.partition_indexes.push(*p),
                None => ts.push(OffsetFetchRequestTopic {
                    name: t.clone(),
                    partition_indexes: vec![*p],
                }),
            }
        }
        Some(ts)
    };
    let req = OffsetFetchRequest {
        group_id: group.to_string(),
        topics,
        ..Default::default()
    };
    let resp = client.send_coordinator(group, &req, |r| r.error_code).await?;
    Error::check(resp.error_code, || format!("offsets of group '{group}'"), None)?;
    let mut out = BTreeMap::new();
    for t in resp.topics {
        for p in t.partitions {
            let name = t.name.clone();
            Error::check(p.error_code, || format!("offset of {name}/{}", p.partition_index), None)?;
            if p.committed_offset >= 0 {
                out.insert((t.name.clone(), p.partition_index), p.committed_offset);
            }
        }
    }
    Ok(out)
}

/// OffsetCommit as a group member (`generation`, `member`) or, with -1 and "", for a group
/// with no active members.
pub async fn commit_offsets(
    client: &Client,
    group: &str,
    generation: i32,
    member: &str,
    offsets: &BTreeMap<TopicPartition, i64>,
) -> Result<()> {
    if offsets.is_empty() {
        return Ok(());
    }
    let mut topics: Vec<OffsetCommitRequestTopic> = vec![];
    for ((t, p), o) in offsets {
        let part = OffsetCommitRequestPartition {
            partition_index: *p,
            committed_offset: *o,
            committed_leader_epoch: -1,
            committed_metadata: Some(String::new()),
            ..Default::default()
        };
        match topics.iter_mut().find(|x| &x.name == t) {
            Some(x) => x.partitions.push(part),
            None => topics.push(OffsetCommitRequestTopic {
                name: t.clone(),
                partitions: vec![part],
            }),
        }
    }
    let req = OffsetCommitRequest {
        group_id: group.to_string(),
        generation_id_or_member_epoch: generation,
        member_id: member.to_string(),
        group_instance_id: None,
        retention_time_ms: -1,
        topics,
    };
    let first_code = |r: &OffsetCommitResponse| {
        r.topics
            .iter()
            .flat_map(|t| &t.partitions)
            .map(|p| p.error_code)
            .find(|c| *c != 0)
            .unwrap_or(0)
    };
    let resp = client.send_coordinator(group, &req, first_code).await?;
    for t in resp.topics {
        for p in t.partitions {
            let name = t.name.clone();
            Error::check(
                p.error_code,
                || format!("committing {name}/{} for group '{group}'", p.partition_index),
                None,
            )?;
        }
    }
    Ok(())
}
