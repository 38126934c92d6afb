'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { Kafka, logLevel } = require('kafkajs');
const { startBroker } = require('./broker');

test('kafkajs admin connects and lists an empty cluster', async () => {
  const broker = await startBroker();
  const kafka = new Kafka({ brokers: [broker.bootstrap], logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  try {
    await admin.connect();
    assert.deepStrictEqual(await admin.listTopics(), []);
    const cluster = await admin.describeCluster();
    assert.strictEqual(cluster.controller, 1);
    assert.deepStrictEqual(cluster.brokers, [{ nodeId: 1, host: '127.0.0.1', port: broker.port }]);
    assert.strictEqual(cluster.clusterId.length, 22);
  } finally {
    await admin.disconnect();
    assert.strictEqual(await broker.stop(), 0);
  }
});
