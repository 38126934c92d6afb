// kafkajs admin against the Kafka 4 APIs a single node answers (issue 16, item 6): partition
// reassignments and ACLs.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const {
  Kafka,
  logLevel,
  AclResourceTypes,
  AclOperationTypes,
  AclPermissionTypes,
  ResourcePatternTypes,
} = require('kafkajs');
const { startBroker } = require('./broker');

const withAdmin = async (fn) => {
  const broker = await startBroker();
  const kafka = new Kafka({ clientId: 'js-apis', brokers: [broker.bootstrap], logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  try {
    await admin.connect();
    await fn(admin);
  } finally {
    await admin.disconnect();
    assert.strictEqual(await broker.stop(), 0);
  }
};

test('kafkajs: partition reassignments on one node', { timeout: 60000 }, async () => {
  await withAdmin(async (admin) => {
    const topic = `jsr-${Math.random().toString(16).slice(2, 10)}`;
    await admin.createTopics({ topics: [{ topic, numPartitions: 2 }] });
    assert.deepStrictEqual(await admin.listPartitionReassignments({}), { topics: [] });
    assert.deepStrictEqual(
      await admin.listPartitionReassignments({ topics: [{ topic, partitions: [0, 1] }] }),
      { topics: [] },
    );
    // Onto the only broker, where the partitions already are: accepted, nothing moves.
    await admin.alterPartitionReassignments({
      topics: [{ topic, partitionAssignment: [{ partition: 0, replicas: [1] }, { partition: 1, replicas: [1] }] }],
    });
    // Onto a broker that does not exist.
    await assert.rejects(
      admin.alterPartitionReassignments({
        topics: [{ topic, partitionAssignment: [{ partition: 0, replicas: [2] }] }],
      }),
      (e) => {
        const errors = e.errors || e.originalError?.errors || [];
        const types = [e.type, ...errors.map((x) => x.type)];
        assert.ok(types.includes('INVALID_REPLICA_ASSIGNMENT'), `got ${JSON.stringify(types)} ${e.message}`);
        return true;
      },
    );
    assert.deepStrictEqual(await admin.listPartitionReassignments({}), { topics: [] });
  });
});

test('kafkajs: ACLs without an authorizer are SECURITY_DISABLED', { timeout: 60000 }, async () => {
  await withAdmin(async (admin) => {
    const isSecurityDisabled = (e) => {
      const errors = e.errors || e.originalError?.errors || [];
      const types = [e.type, e.originalError?.type, ...errors.map((x) => x.type)];
      assert.ok(types.includes('SECURITY_DISABLED'), `got ${JSON.stringify(types)} ${e.message}`);
      return true;
    };
    await assert.rejects(
      admin.describeAcls({
        resourceType: AclResourceTypes.ANY,
        resourcePatternType: ResourcePatternTypes.ANY,
        operation: AclOperationTypes.ANY,
        permissionType: AclPermissionTypes.ANY,
      }),
      isSecurityDisabled,
    );
    const acl = {
      resourceType: AclResourceTypes.TOPIC,
      resourceName: 'orders',
      resourcePatternType: ResourcePatternTypes.LITERAL,
      principal: 'User:bob',
      host: '*',
      operation: AclOperationTypes.READ,
      permissionType: AclPermissionTypes.ALLOW,
    };
    await assert.rejects(admin.createAcls({ acl: [acl] }), isSecurityDisabled);
    await assert.rejects(admin.deleteAcls({ filters: [acl] }), isSecurityDisabled);
  });
});
