'use strict';
// An HTTP server written for no supervisor: it binds its own port with
// server.listen(PORT, HOST). Under sockshim with intercept_bind = true that
// bind gets sockshim's socket, so a reload starts a new process on the same
// socket while this one finishes what it has.
//
// It reads its version from the VERSION file next to it when it starts:
// what a process loads at start is what a reload refreshes.

const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');

const version = fs.readFileSync(path.join(__dirname, 'VERSION'), 'utf8').trim();
// sockshim puts these in every worker's environment; empty when run alone.
const generation = process.env.SOCKSHIM_GENERATION || '';
const worker = process.env.SOCKSHIM_WORKER_ID || '';
const port = Number(process.env.PORT || 8080);
const host = process.env.HOST || '127.0.0.1';

const server = http.createServer((req, res) => {
  const body = `version=${version} generation=${generation} worker=${worker} pid=${process.pid}\n`;
  res.writeHead(200, {
    'Content-Type': 'text/plain',
    'Content-Length': Buffer.byteLength(body),
    'X-Version': version,
    'X-Generation': generation,
    'X-Worker': worker,
    'X-Pid': String(process.pid),
  });
  res.end(body);
});

server.on('error', (err) => {
  console.error(`app.js: ${err.message}`);
  process.exit(1);
});

server.listen(port, host, () => {
  console.error(`app.js: ${version} listening on ${host}:${port}, pid ${process.pid}`);
});

// Node's default for SIGTERM is to die at once, cutting every request in
// flight. close() stops accepting (it closes this process's descriptor
// only: the socket stays open in sockshim, which queues new connections for
// the next generation) and lets the requests in progress finish;
// closeIdleConnections() ends the kept-alive connections that wait for no
// answer (Node 19 and later do that in close() already, Node 18 does not).
// The process exits once no connection is left.
process.on('SIGTERM', () => {
  server.close(() => console.error(`app.js: pid ${process.pid} drained`));
  server.closeIdleConnections();
});
