// kafkajs against the real sluice binary: answers shaped as a Kafka 4 broker shapes them
// (null error messages on success, manual replica assignments on the only broker).
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { Kafka, logLevel, ConfigResourceTypes } = require('kafkajs');
const { startBroker } = require('./broker');

test('kafkajs: null error messages on success; manual replica assignments', { timeout: 60000 }, async () => {
  const broker = await startBroker();
  const kafka = new Kafka({ clientId: 'js-shapes', brokers: [broker.bootstrap], logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  try {
    await admin.connect();
    const topic = `jss-${Math.random().toString(16).slice(2, 12)}`;
    const cluster = await admin.describeCluster();
    const node = cluster.brokers[0].nodeId;
    await admin.createTopics({
      topics: [{ topic, replicaAssignment: [{ partition: 0, replicas: [node] }, { partition: 1, replicas: [node] }] }],
    });
    const md = await admin.fetchTopicMetadata({ topics: [topic] });
    assert.strictEqual(md.topics[0].partitions.length, 2);
    const r = await admin.describeConfigs({
      includeSynonyms: false,
      resources: [{ type: ConfigResourceTypes.TOPIC, name: topic }],
    });
    assert.strictEqual(r.resources[0].errorCode, 0);
    assert.strictEqual(r.resources[0].errorMessage, null);
    await assert.rejects(
      admin.createTopics({ topics: [{ topic: `${topic}-bad`, replicaAssignment: [{ partition: 0, replicas: [node + 7] }] }] }),
      (e) => e.errors && e.errors[0].type === 'INVALID_REPLICA_ASSIGNMENT',
    );
  } finally {
    await admin.disconnect().catch(() => {});
    const code = await broker.stop();
    assert.strictEqual(code, 0, broker.logs());
  }
});
