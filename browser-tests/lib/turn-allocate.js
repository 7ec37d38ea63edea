// A minimal TURN client (RFC 8656 Allocate over UDP with long-term credentials, RFC 8489
// MESSAGE-INTEGRITY), enough to ask a TURN server whether it takes a username and
// credential: it answers an allocation, or an error code (401 for bad credentials).

import { createSocket } from 'node:dgram';
import { createHash, createHmac, randomBytes } from 'node:crypto';

const MAGIC = 0x2112a442;
const ALLOCATE = 0x0003;
const ALLOCATE_SUCCESS = 0x0103;
const ALLOCATE_ERROR = 0x0113;
const ATTR = { USERNAME: 0x0006, MESSAGE_INTEGRITY: 0x0008, ERROR_CODE: 0x0009, REALM: 0x0014, NONCE: 0x0015, REQUESTED_TRANSPORT: 0x0019 };

function attribute(type, value) {
  const padded = Buffer.alloc(4 + Math.ceil(value.length / 4) * 4);
  padded.writeUInt16BE(type, 0);
  padded.writeUInt16BE(value.length, 2);
  value.copy(padded, 4);
  return padded;
}

function header(type, length, txid) {
  const h = Buffer.alloc(20);
  h.writeUInt16BE(type, 0);
  h.writeUInt16BE(length, 2);
  h.writeUInt32BE(MAGIC, 4);
  txid.copy(h, 8);
  return h;
}

/** An Allocate request for UDP relaying; with `auth`, signed with MESSAGE-INTEGRITY. */
function allocateRequest(txid, auth) {
  const attrs = [attribute(ATTR.REQUESTED_TRANSPORT, Buffer.from([17, 0, 0, 0]))];
  if (!auth) {
    const body = Buffer.concat(attrs);
    return Buffer.concat([header(ALLOCATE, body.length, txid), body]);
  }
  attrs.push(attribute(ATTR.USERNAME, Buffer.from(auth.username)));
  attrs.push(attribute(ATTR.REALM, Buffer.from(auth.realm)));
  attrs.push(attribute(ATTR.NONCE, Buffer.from(auth.nonce)));
  const body = Buffer.concat(attrs);
  // The integrity covers the header with a length that already counts the MI attribute.
  const signed = Buffer.concat([header(ALLOCATE, body.length + 24, txid), body]);
  const key = createHash('md5').update(`${auth.username}:${auth.realm}:${auth.password}`).digest();
  const mi = attribute(ATTR.MESSAGE_INTEGRITY, createHmac('sha1', key).update(signed).digest());
  return Buffer.concat([signed, mi]);
}

function parse(msg) {
  const type = msg.readUInt16BE(0);
  const length = msg.readUInt16BE(2);
  const attrs = new Map();
  for (let at = 20; at + 4 <= 20 + length && at + 4 <= msg.length; ) {
    const t = msg.readUInt16BE(at);
    const l = msg.readUInt16BE(at + 2);
    attrs.set(t, msg.subarray(at + 4, at + 4 + l));
    at += 4 + Math.ceil(l / 4) * 4;
  }
  let error = null;
  const e = attrs.get(ATTR.ERROR_CODE);
  if (e && e.length >= 4) error = (e[2] & 7) * 100 + e[3];
  return { type, txid: msg.subarray(8, 20), attrs, error };
}

function exchange(socket, port, host, request, timeoutMs) {
  return new Promise((resolve, reject) => {
    const txid = request.subarray(8, 20);
    const timer = setTimeout(() => {
      socket.off('message', onMessage);
      reject(new Error(`no answer from the TURN server at ${host}:${port} within ${timeoutMs} ms`));
    }, timeoutMs);
    function onMessage(msg) {
      if (msg.length < 20) return;
      const parsed = parse(msg);
      if (!parsed.txid.equals(txid)) return;
      clearTimeout(timer);
      socket.off('message', onMessage);
      resolve(parsed);
    }
    socket.on('message', onMessage);
    socket.send(request, port, host);
  });
}

/**
 * Tries to allocate a relay on the TURN server at `host:port` with `username`/`password`.
 * Resolves to `{ ok: true }` or `{ ok: false, error }` (the STUN error code, e.g. 401).
 */
export async function tryAllocate({ host = '127.0.0.1', port, username, password, timeoutMs = 5000 }) {
  const socket = createSocket('udp4');
  await new Promise((resolve) => socket.bind(0, '127.0.0.1', resolve));
  try {
    // The first, unauthenticated request earns the realm and a nonce (a 401 by design).
    const challenge = await exchange(socket, port, host, allocateRequest(randomBytes(12)), timeoutMs);
    const realm = challenge.attrs.get(ATTR.REALM)?.toString();
    const nonce = challenge.attrs.get(ATTR.NONCE)?.toString();
    if (challenge.type !== ALLOCATE_ERROR || challenge.error !== 401 || !realm || !nonce) {
      throw new Error(`unexpected challenge: type ${challenge.type}, error ${challenge.error}`);
    }
    const answer = await exchange(socket, port, host, allocateRequest(randomBytes(12), { username, password, realm, nonce }), timeoutMs);
    if (answer.type === ALLOCATE_SUCCESS) return { ok: true };
    return { ok: false, error: answer.error };
  } finally {
    socket.close();
  }
}
