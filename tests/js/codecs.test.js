// kafkajs with the codecs it can use without native builds: none, gzip (built in) and snappy
// (kafkajs-snappy, pure JavaScript). lz4 and zstd need native modules for kafkajs and are
// covered by the other clients.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { Kafka, logLevel, CompressionTypes, CompressionCodecs } = require('kafkajs');
const SnappyCodec = require('kafkajs-snappy');
const { startBroker } = require('./broker');

CompressionCodecs[CompressionTypes.Snappy] = SnappyCodec;

test('kafkajs: every codec it has round-trips, and a snappy topic recompresses gzip', { timeout: 60000 }, async () => {
  const broker = await startBroker();
  const kafka = new Kafka({ clientId: 'js-codecs', brokers: [broker.bootstrap], logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  const producer = kafka.producer({ idempotent: true });
  const consumer = kafka.consumer({ groupId: 'js-codecs' });
  try {
    await admin.connect();
    await producer.connect();
    const topic = `jsc-${Math.random().toString(16).slice(2, 12)}`;
    // compression.type=snappy: whatever kafkajs sends is stored as snappy.
    await admin.createTopics({ topics: [{ topic, numPartitions: 1, configEntries: [{ name: 'compression.type', value: 'snappy' }] }] });
    const sent = [];
    for (const [name, codec] of [['none', CompressionTypes.None], ['gzip', CompressionTypes.GZIP], ['snappy', CompressionTypes.Snappy]]) {
      const messages = Array.from({ length: 20 }, (_, i) => ({
        key: i % 5 === 0 ? null : `${name}-${i}`,
        value: `${name} value ${i} `.repeat(20),
        headers: { codec: name },
      }));
      await producer.send({ topic, messages, compression: codec });
      sent.push(...messages);
    }
    const got = [];
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    const done = new Promise((resolve) => {
      consumer.run({
        eachMessage: async ({ message }) => {
          got.push(message);
          if (got.length === sent.length) resolve();
        },
      });
    });
    await done;
    assert.deepStrictEqual(
      got.map((m) => [m.key === null ? null : m.key.toString(), m.value.toString(), m.headers.codec.toString()]),
      sent.map((m) => [m.key, m.value, m.headers.codec]),
    );
    assert.deepStrictEqual(got.map((m) => Number(m.offset)), sent.map((_, i) => i));
  } finally {
    await consumer.disconnect().catch(() => {});
    await producer.disconnect().catch(() => {});
    await admin.disconnect().catch(() => {});
    const code = await broker.stop();
    assert.strictEqual(code, 0, broker.logs());
  }
});
