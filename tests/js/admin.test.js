// kafkajs topic admin against the real sluice binary: configs and partitions.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { Kafka, logLevel, ConfigResourceTypes } = require('kafkajs');
const { startBroker } = require('./broker');

test('kafkajs: describe and alter topic configs, add partitions', { timeout: 60000 }, async () => {
  const broker = await startBroker();
  const kafka = new Kafka({ clientId: 'js-admin', brokers: [broker.bootstrap], logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  try {
    await admin.connect();
    const topic = `jsa-${Math.random().toString(16).slice(2, 12)}`;
    await admin.createTopics({
      topics: [{ topic, numPartitions: 1, configEntries: [{ name: 'retention.ms', value: '3600000' }] }],
    });
    const describe = async () => {
      const r = await admin.describeConfigs({
        includeSynonyms: false,
        resources: [{ type: ConfigResourceTypes.TOPIC, name: topic }],
      });
      assert.strictEqual(r.resources[0].errorCode, 0);
      return Object.fromEntries(r.resources[0].configEntries.map((e) => [e.configName, e]));
    };
    let configs = await describe();
    assert.strictEqual(configs['retention.ms'].configValue, '3600000');
    assert.strictEqual(configs['retention.ms'].isDefault, false);
    assert.strictEqual(configs['cleanup.policy'].configValue, 'delete');

    await admin.alterConfigs({
      resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configEntries: [{ name: 'message.timestamp.type', value: 'LogAppendTime' }] }],
    });
    configs = await describe();
    assert.strictEqual(configs['message.timestamp.type'].configValue, 'LogAppendTime');
    // AlterConfigs replaces the whole set: retention.ms is back to its default.
    assert.strictEqual(configs['retention.ms'].isDefault, true);

    await admin.createPartitions({ topicPartitions: [{ topic, count: 3 }] });
    const md = await admin.fetchTopicMetadata({ topics: [topic] });
    assert.strictEqual(md.topics[0].partitions.length, 3);
    await assert.rejects(admin.createPartitions({ topicPartitions: [{ topic, count: 2 }] }), /partitions/i);
  } finally {
    await admin.disconnect().catch(() => {});
    const code = await broker.stop();
    assert.strictEqual(code, 0, broker.logs());
  }
});
