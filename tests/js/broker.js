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

module.exports = { startBroker };
