//! The shared view of a cluster: bootstrap, one connection per broker, cached metadata
//! (brokers, topics, partition leaders) and group coordinators. Producers, consumers and the
//! admin client all route requests through a `Client`; nothing here assumes a single broker.

use crate::conn::{Connection, Request};
use crate::error::{Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use wire::messages::metadata_request::MetadataRequestTopic;
use wire::messages::{FindCoordinatorRequest, MetadataRequest};
use wire::{ErrorCode, Uuid};

/// Settings shared by every client type.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// host:port of one or more brokers to start from.
    pub bootstrap: Vec<String>,
    pub client_id: String,
    pub connect_timeout: Duration,
    /// How long to wait for a response (long polls and joins add their own wait).
    pub request_timeout: Duration,
    /// Metadata older than this is refreshed before use (Kafka's metadata.max.age.ms).
    pub metadata_max_age: Duration,
}

impl ClientConfig {
    pub fn new(bootstrap: &str) -> ClientConfig {
        ClientConfig {
            bootstrap: bootstrap
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            client_id: "sluice".into(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            metadata_max_age: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

impl BrokerInfo {
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub id: i32,
    /// -1 while the partition has no leader.
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub error: i16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub id: Uuid,
    pub internal: bool,
    pub partitions: Vec<PartitionInfo>,
}

#[derive(Debug, Default)]
struct Metadata {
    brokers: BTreeMap<i32, BrokerInfo>,
    topics: HashMap<String, (Instant, TopicInfo)>,
    cluster_id: Option<String>,
    controller: i32,
}

struct Inner {
    config: ClientConfig,
    /// Connections by address; a dead one is replaced on next use.
    conns: std::sync::Mutex<HashMap<String, Arc<Connection>>>,
    meta: RwLock<Metadata>,
    coordinators: RwLock<HashMap<String, i32>>,
}

/// A handle to a cluster; cheap to clone, shared by producers, consumers and admin.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// Connects to the first bootstrap broker that answers.
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        if config.bootstrap.is_empty() {
            return Err(Error::Config("no bootstrap servers given".into()));
        }
        let client = Client {
            inner: Arc::new(Inner {
                config,
                conns: Default::default(),
                meta: Default::default(),
                coordinators: Default::default(),
            }),
        };
        client.refresh(&[]).await?;
        Ok(client)
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    async fn conn_to(&self, addr: &str) -> Result<Arc<Connection>> {
        {
            let conns = self.inner.conns.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = conns.get(addr).filter(|c| !c.is_dead()) {
                return Ok(c.clone());
            }
        }
        // Connect without the lock, so a slow or dead broker does not hold up the others. Two
        // callers may race to connect; the first connection stored wins.
        let cfg = &self.inner.config;
        let c = Arc::new(Connection::connect(addr, &cfg.client_id, cfg.connect_timeout, cfg.request_timeout).await?);
        let mut conns = self.inner.conns.lock().unwrap_or_else(|e| e.into_inner());
        match conns.get(addr).filter(|c| !c.is_dead()) {
            Some(existing) => Ok(existing.clone()),
            None => {
                conns.insert(addr.to_string(), c.clone());
                Ok(c)
            }
        }
    }

    /// A connection to any live broker: known brokers first, then the bootstrap list.
    pub async fn any(&self) -> Result<Arc<Connection>> {
        let mut addrs: Vec<String> = {
            let m = self.read_meta();
            m.brokers.values().map(BrokerInfo::addr).collect()
        };
        addrs.extend(self.inner.config.bootstrap.iter().cloned());
        let mut last = None;
        for a in &addrs {
            match self.conn_to(a).await {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Config("no brokers known".into())))
    }

    /// A connection to broker `id`.
    pub async fn broker(&self, id: i32) -> Result<Arc<Connection>> {
        let addr = self.read_meta().brokers.get(&id).map(BrokerInfo::addr);
        match addr {
            Some(a) => self.conn_to(&a).await,
            None => {
                self.refresh(&[]).await?;
                let addr = self.read_meta().brokers.get(&id).map(BrokerInfo::addr);
                let a = addr.ok_or_else(|| Error::Invalid(format!("broker {id} is not in the cluster metadata")))?;
                self.conn_to(&a).await
            }
        }
    }

    pub async fn send_any<R: Request>(&self, req: &R) -> Result<R::Response> {
        self.any().await?.send(req).await
    }

    pub async fn send_to<R: Request>(&self, broker: i32, req: &R) -> Result<R::Response> {
        self.broker(broker).await?.send(req).await
    }

    /// Sends to the controller (metadata changes: topics, partitions, configs). With one node,
    /// any broker.
    pub async fn send_controller<R: Request>(&self, req: &R) -> Result<R::Response> {
        let c = self.read_meta().controller;
        if c >= 0 {
            if let Ok(conn) = self.broker(c).await {
                return conn.send(req).await;
            }
        }
        self.send_any(req).await
    }

    fn read_meta(&self) -> std::sync::RwLockReadGuard<'_, Metadata> {
        self.inner.meta.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Fetches metadata for `topics` (all topics when empty) and merges it into the cache.
    /// Topics the broker does not know are returned with their error, not cached.
    pub async fn refresh(&self, topics: &[String]) -> Result<Vec<(String, i16, Option<TopicInfo>)>> {
        self.refresh_with(topics, false).await
    }

    /// Like `refresh`, but lets the broker create missing topics (auto.create.topics.enable).
    pub async fn refresh_with(
        &self,
        topics: &[String],
        allow_auto_create: bool,
    ) -> Result<Vec<(String, i16, Option<TopicInfo>)>> {
        let req = MetadataRequest {
            topics: if topics.is_empty() {
                None
            } else {
                Some(
                    topics
                        .iter()
                        .map(|t| MetadataRequestTopic {
                            name: Some(t.clone()),
                            ..Default::default()
                        })
                        .collect(),
                )
            },
            allow_auto_topic_creation: allow_auto_create,
            ..Default::default()
        };
        let resp = self.send_any(&req).await?;
        let now = Instant::now();
        let mut out = vec![];
        let mut m = self.inner.meta.write().unwrap_or_else(|e| e.into_inner());
        m.brokers = resp
            .brokers
            .into_iter()
            .map(|b| {
                (
                    b.node_id,
                    BrokerInfo {
                        id: b.node_id,
                        host: b.host,
                        port: b.port,
                        rack: b.rack,
                    },
                )
            })
            .collect();
        m.cluster_id = resp.cluster_id;
        m.controller = resp.controller_id;
        if topics.is_empty() {
            m.topics.clear();
        }
        for t in resp.topics {
            let name = t.name.unwrap_or_default();
            if t.error_code != 0 {
                m.topics.remove(&name);
                out.push((name, t.error_code, None));
                continue;
            }
            let mut partitions: Vec<PartitionInfo> = t
                .partitions
                .into_iter()
                .map(|p| PartitionInfo {
                    id: p.partition_index,
                    leader: p.leader_id,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes,
                    isr: p.isr_nodes,
                    error: p.error_code,
                })
                .collect();
            partitions.sort_by_key(|p| p.id);
            let info = TopicInfo {
                name: name.clone(),
                id: t.topic_id,
                internal: t.is_internal,
                partitions,
            };
            m.topics.insert(name.clone(), (now, info.clone()));
            out.push((name, 0, Some(info)));
        }
        Ok(out)
    }

    /// The cached topic, refreshed when missing or older than metadata.max.age.
    pub async fn topic(&self, name: &str, allow_auto_create: bool) -> Result<TopicInfo> {
        {
            let m = self.read_meta();
            if let Some((at, t)) = m.topics.get(name) {
                if at.elapsed() < self.inner.config.metadata_max_age {
                    return Ok(t.clone());
                }
            }
        }
        let got = self.refresh_with(&[name.to_string()], allow_auto_create).await?;
        for (n, code, info) in got {
            if n == name {
                if let Some(info) = info {
                    return Ok(info);
                }
                Error::check(code, || format!("topic '{name}'"), None)?;
            }
        }
        Err(Error::Kafka {
            code: ErrorCode::UnknownTopicOrPartition.code(),
            context: format!("topic '{name}'"),
            message: None,
        })
    }

    /// Drops a topic from the cache so the next use fetches fresh leaders.
    pub fn invalidate(&self, topic: &str) {
        self.inner
            .meta
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .topics
            .remove(topic);
    }

    pub fn brokers(&self) -> Vec<BrokerInfo> {
        self.read_meta().brokers.values().cloned().collect()
    }

    pub fn cluster_id(&self) -> Option<String> {
        self.read_meta().cluster_id.clone()
    }

    pub fn controller(&self) -> i32 {
        self.read_meta().controller
    }

    /// The broker coordinating `group` (FindCoordinator, cached until `forget_coordinator`).
    pub async fn coordinator(&self, group: &str) -> Result<i32> {
        if let Some(id) = self
            .inner
            .coordinators
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(group)
        {
            return Ok(*id);
        }
        let req = FindCoordinatorRequest {
            key: group.to_string(),
            key_type: 0,
            ..Default::default()
        };
        let mut attempt = 0;
        let resp = loop {
            let resp = self.send_any(&req).await?;
            let retry = resp.error_code == ErrorCode::CoordinatorNotAvailable.code()
                || resp.error_code == ErrorCode::CoordinatorLoadInProgress.code();
            if retry && attempt < 20 {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            break resp;
        };
        Error::check(
            resp.error_code,
            || format!("finding the coordinator of group '{group}'"),
            resp.error_message.as_ref(),
        )?;
        {
            let mut m = self.inner.meta.write().unwrap_or_else(|e| e.into_inner());
            m.brokers.entry(resp.node_id).or_insert_with(|| BrokerInfo {
                id: resp.node_id,
                host: resp.host.clone(),
                port: resp.port,
                rack: None,
            });
        }
        self.inner
            .coordinators
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(group.to_string(), resp.node_id);
        Ok(resp.node_id)
    }

    pub fn forget_coordinator(&self, group: &str) {
        self.inner
            .coordinators
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(group);
    }

    /// Sends a group request to the group's coordinator, finding it again once if it moved.
    pub async fn send_coordinator<R: Request>(
        &self,
        group: &str,
        req: &R,
        error_of: impl Fn(&R::Response) -> i16,
    ) -> Result<R::Response> {
        let mut attempt = 0;
        loop {
            let id = self.coordinator(group).await?;
            let resp = match self.send_to(id, req).await {
                Ok(r) => r,
                Err(e) if attempt < 3 && e.is_retriable() => {
                    self.forget_coordinator(group);
                    attempt += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let code = error_of(&resp);
            let moved = code == ErrorCode::NotCoordinator.code() || code == ErrorCode::CoordinatorNotAvailable.code();
            if moved && attempt < 3 {
                self.forget_coordinator(group);
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            return Ok(resp);
        }
    }
}
