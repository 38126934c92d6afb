// Starts the real `sluice` binary on a free loopback port with its own data directory.
'use strict';
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const BINARY = process.env.SLUICE_BIN || path.resolve(__dirname, '../../target/debug/sluice');

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

function canConnect(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.on('connect', () => { s.destroy(); resolve(true); });
    s.on('error', () => resolve(false));
  });
}

async function startBroker(extraArgs = []) {
  const port = await freePort();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-js-'));
  let log = '';
  const proc = spawn(BINARY, ['server', '--listeners', `127.0.0.1:${port}`, '--data-dir', path.join(dataDir, 'data'), ...extraArgs]);
  proc.stdout.on('data', (d) => { log += d; });
  proc.stderr.on('data', (d) => { log += d; });
  const deadline = Date.now() + 20000;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`sluice exited with ${proc.exitCode}:\n${log}`);
    if (await canConnect(port)) {
      return {
        port,
        bootstrap: `127.0.0.1:${port}`,
        logs: () => log,
        stop: () => new Promise((resolve) => {
          proc.on('exit', (code) => { fs.rmSync(dataDir, { recursive: true, force: true }); resolve(code); });
          proc.kill('SIGTERM');
        }),
      };
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  proc.kill('SIGKILL');
  throw new Error(`sluice did not listen within 20s:\n${log}`);
}

// Starts `n` combined nodes as one cluster (each with a CONTROLLER listener and the same
// controller.quorum.voters), as a user would; resolves once every node listens (it is then
// caught up with the metadata and unfenced).
async function startCluster(n = 3) {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-js-cluster-'));
  const nodes = [];
  for (let i = 1; i <= n; i++) {
    nodes.push({ id: i, port: await freePort(), controller: await freePort(), admin: await freePort(), log: '' });
  }
  const voters = nodes.map((x) => `${x.id}@127.0.0.1:${x.controller}`).join(',');
  for (const x of nodes) {
    x.proc = spawn(BINARY, [
      'server',
      '--listeners', `PLAINTEXT://127.0.0.1:${x.port},CONTROLLER://127.0.0.1:${x.controller}`,
      '--admin-listeners', `127.0.0.1:${x.admin}`,
      '--data-dir', path.join(dataDir, `node-${x.id}`),
      '--set', `node.id=${x.id}`,
      '--set', `controller.quorum.voters=${voters}`,
    ]);
    x.proc.stdout.on('data', (d) => { x.log += d; });
    x.proc.stderr.on('data', (d) => { x.log += d; });
  }
  const logs = () => nodes.map((x) => `--- node ${x.id}\n${x.log}`).join('\n');
  const deadline = Date.now() + 60000;
  for (const x of nodes) {
    while (!(await canConnect(x.port))) {
      if (x.proc.exitCode !== null || Date.now() > deadline) {
        for (const y of nodes) y.proc.kill('SIGKILL');
        throw new Error(`node ${x.id} did not serve:\n${logs()}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return {
    nodes,
    bootstrap: nodes.map((x) => `127.0.0.1:${x.port}`),
    logs,
    stop: () => Promise.all(nodes.map((x) => new Promise((resolve) => {
      if (x.proc.exitCode !== null) return resolve(x.proc.exitCode);
      x.proc.on('exit', (code) => resolve(code));
      x.proc.kill('SIGTERM');
    }))).then((codes) => { fs.rmSync(dataDir, { recursive: true, force: true }); return codes; }),
  };
}

module.exports = { startBroker, startCluster };
