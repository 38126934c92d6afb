//! The metadata image at scale: memory held by an image of 100,000 partitions (1,000 topics of
//! 100, three replicas each, one config override per topic, three brokers) and the time to
//! write it as a snapshot and to load that snapshot back, as a node does at start or when it
//! installs the leader's snapshot.
//!
//! `cargo run --release -p sluice-metadata --example image_bench [topics] [partitions]`
//! prints one line per measurement; results go in docs/benchmarks.md.

use metadata::{MetadataDelta, MetadataImage, MetadataRecord};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use wire::kafka_records::metadata::{
    ConfigRecord, FeatureLevelRecord, PartitionRecord, RegisterBrokerRecord, TopicRecord,
};

/// The allocator, counting the bytes live: what an image holds is the difference.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn records(topics: usize, partitions: usize) -> Vec<MetadataRecord> {
    let mut out = vec![MetadataRecord::FeatureLevelRecord(FeatureLevelRecord {
        name: "metadata.version".into(),
        feature_level: metadata::METADATA_VERSION_LEVEL,
        sluice_cluster_id: Some("benchClusterIdXXXXXXXX".into()),
    })];
    for b in 1..=3 {
        out.push(MetadataRecord::RegisterBrokerRecord(RegisterBrokerRecord {
            broker_id: b,
            broker_epoch: i64::from(b),
            ..Default::default()
        }));
    }
    for t in 0..topics {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&(t as u64 + 1).to_be_bytes());
        let topic_id = wire::Uuid(id);
        let name = format!("topic-{t:05}");
        out.push(MetadataRecord::TopicRecord(TopicRecord {
            name: name.clone(),
            topic_id,
        }));
        out.push(MetadataRecord::ConfigRecord(ConfigRecord {
            resource_type: metadata::resource_type::TOPIC,
            resource_name: name,
            name: "retention.ms".into(),
            value: Some("86400000".into()),
        }));
        for p in 0..partitions {
            let first = (t + p) as i32 % 3;
            let replicas: Vec<i32> = (0..3).map(|k| (first + k) % 3 + 1).collect();
            out.push(MetadataRecord::PartitionRecord(PartitionRecord {
                partition_id: p as i32,
                topic_id,
                isr: replicas.clone(),
                leader: replicas[0],
                replicas,
                ..Default::default()
            }));
        }
    }
    out
}

fn main() {
    let mut args = std::env::args().skip(1);
    let topics: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let partitions: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let recs = records(topics, partitions);
    let before = LIVE.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut delta = MetadataDelta::new(Arc::new(MetadataImage::empty()));
    for (i, r) in recs.iter().enumerate() {
        delta.replay(i as i64, 1, r).expect("records fit the image");
    }
    let (image, _) = delta.apply();
    let replayed = started.elapsed();
    let held = LIVE.load(Ordering::Relaxed) - before;
    drop(recs);
    let count = image.partition_count();
    println!(
        "image: {topics} topics, {count} partitions, replayed from records in {:.0} ms",
        replayed.as_secs_f64() * 1e3
    );
    println!(
        "image memory: {:.1} MiB ({:.0} bytes per partition)",
        held as f64 / (1 << 20) as f64,
        held as f64 / count as f64
    );
    let started = Instant::now();
    let bytes = metadata::snapshot::write(&image, 1, 0).expect("snapshot");
    let wrote = started.elapsed();
    println!(
        "snapshot: {:.1} MiB written in {:.0} ms",
        bytes.len() as f64 / (1 << 20) as f64,
        wrote.as_secs_f64() * 1e3
    );
    let end = image.offset + 1;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let started = Instant::now();
        let loaded = metadata::snapshot::read(bytes.clone(), end, 1).expect("snapshot reads back");
        best = best.min(started.elapsed().as_secs_f64());
        assert_eq!(loaded.partition_count(), count);
    }
    println!("snapshot load: {:.0} ms (best of 5)", best * 1e3);
}
