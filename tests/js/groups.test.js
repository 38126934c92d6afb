// kafkajs consumer groups and produce/consume against the real sluice binary.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { Kafka, logLevel, CompressionTypes } = require('kafkajs');
const { startBroker } = require('./broker');

// Groups form without the initial 3 s wait, to keep the suite quick.
const FAST_GROUPS = ['--set', 'group.initial.rebalance.delay.ms=0'];

function uid(prefix) {
  return `${prefix}-${Math.random().toString(16).slice(2, 12)}`;
}

async function waitFor(predicate, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await predicate()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

test('kafkajs: two consumers in a group split a topic and read every record once', { timeout: 120000 }, async () => {
  const broker = await startBroker(FAST_GROUPS);
  const kafka = new Kafka({ clientId: 'js-groups', brokers: [broker.bootstrap], logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  const producer = kafka.producer();
  const consumers = [];
  try {
    await admin.connect();
    const topic = uid('jsg');
    const groupId = uid('group');
    await admin.createTopics({ topics: [{ topic, numPartitions: 4 }], waitForLeaders: true });

    const seen = [];
    const owned = [new Set(), new Set()];
    for (let i = 0; i < 2; i++) {
      const c = kafka.consumer({ groupId, sessionTimeout: 10000, heartbeatInterval: 500 });
      await c.connect();
      await c.subscribe({ topic, fromBeginning: true });
      c.on(c.events.GROUP_JOIN, (e) => {
        owned[i] = new Set((e.payload.memberAssignment[topic] || []));
      });
      await c.run({
        eachMessage: async ({ partition, message }) => {
          seen.push({ consumer: i, partition, key: message.key && message.key.toString(), value: message.value.toString(), headers: message.headers });
        },
      });
      consumers.push(c);
    }
    await waitFor(() => owned[0].size === 2 && owned[1].size === 2, 60000, 'a 2 + 2 split');
    assert.deepStrictEqual([...owned[0], ...owned[1]].sort(), [0, 1, 2, 3]);

    await producer.connect();
    const messages = [];
    for (let i = 0; i < 100; i++) {
      messages.push({ key: i % 10 === 0 ? null : `k${i}`, value: `v${i}`, partition: i % 4, headers: { n: `${i}`, dup: ['a', 'b'] } });
    }
    await producer.send({ topic, messages: messages.slice(0, 50), compression: CompressionTypes.GZIP });
    await producer.send({ topic, messages: messages.slice(50) });
    await waitFor(() => seen.length >= 100, 60000, '100 records');
    await new Promise((r) => setTimeout(r, 300));
    assert.strictEqual(seen.length, 100, 'no record read twice');
    assert.deepStrictEqual(new Set(seen.map((s) => s.value)).size, 100);
    for (const s of seen) {
      assert.ok(owned[s.consumer].has(s.partition), 'each consumer reads only its own partitions');
    }
    const first = seen.find((s) => s.value === 'v0');
    assert.strictEqual(first.key, null);
    assert.strictEqual(first.headers.n.toString(), '0');
    assert.deepStrictEqual(first.headers.dup.map(String), ['a', 'b']);

    // Group admin: listed, described with both members, offsets committed on disconnect.
    const groups = await admin.listGroups();
    assert.ok(groups.groups.some((g) => g.groupId === groupId && g.protocolType === 'consumer'));
    const described = await admin.describeGroups([groupId]);
    assert.strictEqual(described.groups[0].state, 'Stable');
    assert.strictEqual(described.groups[0].members.length, 2);
    for (const c of consumers) await c.disconnect();
    consumers.length = 0;
    const offsets = await admin.fetchOffsets({ groupId, topics: [topic] });
    const committed = offsets[0].partitions.map((p) => Number(p.offset)).reduce((a, b) => a + b, 0);
    assert.strictEqual(committed, 100);
    await admin.deleteGroups([groupId]);
    const after = await admin.listGroups();
    assert.ok(!after.groups.some((g) => g.groupId === groupId));
  } finally {
    for (const c of consumers) await c.disconnect().catch(() => {});
    await producer.disconnect().catch(() => {});
    await admin.disconnect().catch(() => {});
    const code = await broker.stop();
    assert.strictEqual(code, 0, broker.logs());
  }
});
