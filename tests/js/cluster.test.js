// kafkajs against three sluice processes forming one cluster: a topic's partitions are led
// by different brokers, kafkajs producers and a consumer group bootstrapped at one node reach
// every leader, and the group's offsets are committed.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { Kafka, logLevel } = require('kafkajs');
const { startCluster } = require('./broker');

test('kafkajs: produce, consume and a group over three brokers', { timeout: 120000 }, async () => {
  const cluster = await startCluster(3);
  // Bootstrapped at one node only: the rest of the cluster comes from its Metadata.
  const kafka = new Kafka({ clientId: 'js-cluster', brokers: [cluster.bootstrap[1]], logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  const consumers = [0, 1].map(() => kafka.consumer({ groupId: 'js-cluster-group', retry: { retries: 20 } }));
  try {
    await admin.connect();
    await admin.createTopics({ topics: [{ topic: 'spread', numPartitions: 3 }], waitForLeaders: true });
    const md = await admin.fetchTopicMetadata({ topics: ['spread'] });
    const leaders = md.topics[0].partitions.map((p) => p.leader).sort();
    assert.deepStrictEqual(leaders, [1, 2, 3], JSON.stringify(md.topics[0].partitions));

    await producer.connect();
    const sent = [];
    for (let i = 0; i < 30; i++) sent.push({ partition: i % 3, value: `m${i}` });
    await producer.send({ topic: 'spread', acks: -1, messages: sent });

    const got = new Set();
    for (const c of consumers) {
      await c.connect();
      await c.subscribe({ topic: 'spread', fromBeginning: true });
    }
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`read ${got.size} of 30`)), 60000);
      for (const c of consumers) {
        c.run({
          eachMessage: async ({ message }) => {
            got.add(message.value.toString());
            if (got.size === 30) { clearTimeout(timer); resolve(); }
          },
        }).catch(reject);
      }
    });
    assert.strictEqual(got.size, 30);
    // The group's offsets, committed through its coordinator (wherever it is), cover all 30.
    for (const c of consumers) await c.stop();
    let total = 0;
    const deadline = Date.now() + 20000;
    while (Date.now() < deadline) {
      const offsets = await admin.fetchOffsets({ groupId: 'js-cluster-group', topics: ['spread'] });
      total = offsets[0].partitions.reduce((n, p) => n + Math.max(0, Number(p.offset)), 0);
      if (total === 30) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.strictEqual(total, 30);
  } finally {
    for (const c of consumers) await c.disconnect().catch(() => {});
    await producer.disconnect().catch(() => {});
    await admin.disconnect().catch(() => {});
    const codes = await cluster.stop();
    assert.deepStrictEqual(codes, [0, 0, 0], cluster.logs());
  }
});
