// kafkajs against the real sluice binary: Kafka 4 topic configs and the broker's configs
// (kafkajs decodes DescribeConfigs strictly: every field of every entry must be well formed).
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { Kafka, logLevel, ConfigResourceTypes, ConfigSource } = require('kafkajs');
const { startBroker } = require('./broker');

test('kafkajs: Kafka 4 topic configs and the broker resource in describeConfigs', { timeout: 60000 }, async () => {
  const broker = await startBroker(['--admin-listeners', '']);
  const kafka = new Kafka({ clientId: 'js-configs', brokers: [broker.bootstrap], logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  try {
    await admin.connect();
    const topic = `jsc-${Math.random().toString(16).slice(2, 12)}`;
    await admin.createTopics({
      topics: [{
        topic,
        numPartitions: 1,
        configEntries: [
          { name: 'min.cleanable.dirty.ratio', value: '0.3' },
          { name: 'preallocate', value: 'true' },
          { name: 'delete.retention.ms', value: '1000' },
          { name: 'leader.replication.throttled.replicas', value: '*' },
        ],
      }],
    });
    const describe = async (type, name) => {
      const r = await admin.describeConfigs({ includeSynonyms: true, resources: [{ type, name }] });
      assert.strictEqual(r.resources[0].errorCode, 0);
      return Object.fromEntries(r.resources[0].configEntries.map((e) => [e.configName, e]));
    };
    const t = await describe(ConfigResourceTypes.TOPIC, topic);
    assert.strictEqual(t['min.cleanable.dirty.ratio'].configValue, '0.3');
    assert.strictEqual(t['min.cleanable.dirty.ratio'].configSource, ConfigSource.TOPIC_CONFIG);
    assert.strictEqual(t['preallocate'].configValue, 'true');
    assert.strictEqual(t['leader.replication.throttled.replicas'].configValue, '*');
    assert.strictEqual(t['segment.index.bytes'].configValue, '10485760');
    assert.strictEqual(t['segment.index.bytes'].isDefault, true);
    assert.strictEqual(t['segment.index.bytes'].configSource, ConfigSource.DEFAULT_CONFIG);

    await assert.rejects(
      admin.createTopics({ topics: [{ topic: `${topic}-bad`, configEntries: [{ name: 'min.cleanable.dirty.ratio', value: '2' }] }] }),
      // kafkajs keeps the error code, not the broker's message.
      (e) => (e.errors || []).some((err) => err.type === 'INVALID_CONFIG'),
    );

    const b = await describe(ConfigResourceTypes.BROKER, '1');
    assert.strictEqual(b['default.replication.factor'].configValue, '1');
    assert.strictEqual(b['default.replication.factor'].readOnly, true);
    assert.strictEqual(b['num.io.threads'].configValue, '8');
    assert.strictEqual(b['num.io.threads'].readOnly, false);
    assert.strictEqual(b['ssl.keystore.password'].isSensitive, true);
    assert.strictEqual(b['ssl.keystore.password'].configValue, null);

    await admin.alterConfigs({
      resources: [{ type: ConfigResourceTypes.BROKER, name: '1', configEntries: [{ name: 'log.cleaner.threads', value: '2' }] }],
    });
    const after = await describe(ConfigResourceTypes.BROKER, '1');
    assert.strictEqual(after['log.cleaner.threads'].configValue, '2');
    assert.strictEqual(after['log.cleaner.threads'].configSource, ConfigSource.DYNAMIC_BROKER_CONFIG);
  } finally {
    await admin.disconnect().catch(() => {});
    const code = await broker.stop();
    assert.strictEqual(code, 0, broker.logs());
  }
});
