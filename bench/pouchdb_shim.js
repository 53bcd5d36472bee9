// A loopback HTTP proxy in front of pouchdb-server, so that @cloudant/couchbackup and
// couchrestore (IBM's Cloudant SDK) can run against it at all (bench/cli.py):
//
// * the SDK gzips request bodies (Content-Encoding: gzip); pouchdb-server does not inflate
//   them and waits for a body forever: they are inflated here;
// * couchrestore refuses a target whose info lacks doc_del_count (pouchdb-server has none):
//   a database's info gets doc_del_count: 0 when it has no such field.
//
// Everything else is piped through unchanged. Both tools are measured through it.
//
//   node pouchdb_shim.js TARGET_PORT      (prints the port it listens on)

'use strict';
const http = require('http');
const zlib = require('zlib');

const targetPort = Number(process.argv[2]);
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
// GET /db or /db/ (a database's info), not /_all_dbs, /db/doc...
const DB_INFO = /^\/[a-z][^/?]*\/?(\?.*)?$/;

function forward(req, res, body) {
  const headers = { ...req.headers };
  const info = req.method === 'GET' && DB_INFO.test(req.url);
  if (body !== null) {
    delete headers['content-encoding'];
    headers['content-length'] = String(body.length);
  }
  if (info) delete headers['accept-encoding']; // the reply is read and rewritten here
  const up = http.request({ host: '127.0.0.1', port: targetPort, method: req.method,
    path: req.url, headers, agent }, (reply) => {
    if (!info || reply.statusCode !== 200) {
      res.writeHead(reply.statusCode, reply.headers);
      reply.pipe(res);
      return;
    }
    const chunks = [];
    reply.on('data', (c) => chunks.push(c));
    reply.on('end', () => {
      const doc = JSON.parse(Buffer.concat(chunks).toString());
      if (doc.doc_del_count === undefined) doc.doc_del_count = 0;
      const out = Buffer.from(JSON.stringify(doc));
      const h = { ...reply.headers, 'content-length': String(out.length) };
      delete h['transfer-encoding'];
      res.writeHead(200, h);
      res.end(out);
    });
  });
  up.on('error', () => res.destroy());
  if (body !== null) up.end(body); else req.pipe(up);
}

const server = http.createServer((req, res) => {
  if (req.headers['content-encoding'] !== 'gzip') {
    forward(req, res, null);
    return;
  }
  const chunks = [];
  const gunzip = zlib.createGunzip();
  req.pipe(gunzip);
  gunzip.on('data', (c) => chunks.push(c));
  gunzip.on('end', () => forward(req, res, Buffer.concat(chunks)));
  gunzip.on('error', () => res.destroy());
});
server.keepAliveTimeout = 60000;
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
