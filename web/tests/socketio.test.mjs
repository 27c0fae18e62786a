// Contract section 11: the Socket.IO front-ends of seeds 004 (a NestJS job chat) and 003 (an escrow
// chat) talk to the gateway with their own client library, `socket.io-client`, while the other
// party of the same session uses the native WebSocket protocol (and, in one test, seed 002's
// conversation socket). run.sh starts the stack and runs this file with E2E_GATEWAY_URL set.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import WebSocket from 'ws';

const GATEWAY = process.env.E2E_GATEWAY_URL;
const WAIT_MS = 10_000;
assert.ok(GATEWAY, 'E2E_GATEWAY_URL is not set (run web/tests/run.sh)');
const WS_GATEWAY = GATEWAY.replace(/^http/, 'ws');
const unique = () => Math.random().toString(36).slice(2, 10);

async function rest(method, path, token, body) {
  const response = await fetch(`${GATEWAY}${path}`, {
    method,
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

async function mint(userId, role) {
  const { status, body } = await rest('POST', '/dev/token', null, { user_id: userId, role, name: `${role} ${userId}` });
  assert.equal(status, 200, `POST /dev/token answered ${status}`);
  return body.token;
}

/** Waits on a list of received items for one that matches, taking it off the list. */
function waiter(received, describe) {
  const waiting = new Set();
  const offer = (item) => {
    for (const entry of waiting) {
      if (entry.match(item)) {
        waiting.delete(entry);
        entry.resolve(item);
        return;
      }
    }
    received.push(item);
  };
  const take = (match, what, timeout = WAIT_MS) => {
    const index = received.findIndex(match);
    if (index >= 0) return Promise.resolve(received.splice(index, 1)[0]);
    return new Promise((resolve, reject) => {
      const entry = { match, resolve };
      waiting.add(entry);
      setTimeout(() => {
        if (waiting.delete(entry)) {
          reject(new Error(`${describe()}: no ${what} within ${timeout} ms; received ${JSON.stringify(received).slice(0, 1500)}`));
        }
      }, timeout);
    });
  };
  return { offer, take };
}

/** A native WebSocket client (contract section 4) with send / expect. */
class NativeSocket {
  static async open(path, token) {
    const socket = new NativeSocket(new WebSocket(`${WS_GATEWAY}${path}?token=${token}`));
    await new Promise((resolve, reject) => {
      socket.ws.once('open', resolve);
      socket.ws.once('error', reject);
    });
    return socket;
  }

  constructor(ws) {
    this.ws = ws;
    this.received = [];
    this.waiter = waiter(this.received, () => `native socket ${ws.url.split('?')[0]}`);
    ws.on('message', (data) => this.waiter.offer(JSON.parse(data.toString())));
  }

  send(frame) {
    this.ws.send(JSON.stringify(frame));
  }

  expect(type, where = () => true, timeout) {
    return this.waiter.take((frame) => frame.type === type && where(frame), `"${type}"`, timeout);
  }

  /** Asserts that no frame of `type` matching `where` arrives within `ms`. */
  async expectNone(type, where = () => true, ms = 1_000) {
    await new Promise((resolve) => setTimeout(resolve, ms));
    const found = this.received.find((frame) => frame.type === type && where(frame));
    assert.equal(found, undefined, `unexpected ${type}: ${JSON.stringify(found)}`);
  }

  close() {
    this.ws.close();
  }
}

/** A socket.io-client socket (default transports: long-polling first, then the WebSocket upgrade). */
class SocketIoClient {
  static async connect(token, options = {}) {
    const client = new SocketIoClient(io(GATEWAY, { auth: { token }, reconnection: false, forceNew: true, ...options }));
    await client.connected();
    return client;
  }

  constructor(socket) {
    this.socket = socket;
    this.received = [];
    this.waiter = waiter(this.received, () => `Socket.IO socket ${this.socket.id}`);
    socket.onAny((event, data) => this.waiter.offer({ event, data }));
  }

  connected() {
    return new Promise((resolve, reject) => {
      if (this.socket.connected) return resolve();
      this.socket.once('connect', resolve);
      this.socket.once('connect_error', reject);
    });
  }

  emit(event, data) {
    this.socket.emit(event, data);
  }

  ack(event, data) {
    return this.socket.timeout(WAIT_MS).emitWithAck(event, data);
  }

  async expect(event, where = () => true, timeout) {
    const { data } = await this.waiter.take((item) => item.event === event && where(item.data), `"${event}"`, timeout);
    return data;
  }

  async expectNone(event, where = () => true, ms = 1_000) {
    await new Promise((resolve) => setTimeout(resolve, ms));
    const found = this.received.find((item) => item.event === event && where(item.data));
    assert.equal(found, undefined, `unexpected ${event}: ${JSON.stringify(found)}`);
  }

  close() {
    this.socket.disconnect();
  }
}

/** A session between a new seeker and a new provider; the provider's native socket is open. */
async function newSession() {
  const seekerId = `sio-seeker-${unique()}`;
  const providerId = `sio-provider-${unique()}`;
  const seekerToken = await mint(seekerId, 'seeker');
  const providerToken = await mint(providerId, 'provider');
  const status = await rest('PUT', '/api/provider/status', providerToken, { is_active: true, latitude: 28.7, longitude: 77.1 });
  assert.equal(status.status, 200);
  const provider = await NativeSocket.open('/ws/work/provider/', providerToken);
  const created = await rest('POST', '/api/work-orders', seekerToken, {
    provider_id: providerId, service_type: 'Plumbing', message: 'Leaking tap', latitude: 28.71, longitude: 77.11,
  });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const workId = created.body.work_id;
  await provider.expect('work_assigned', (frame) => frame.work_id === workId);
  provider.send({ type: 'work_response', work_id: workId, accepted: true });
  const accepted = await provider.expect('work_accepted', (frame) => frame.work_id === workId);
  return { seekerId, providerId, seekerToken, providerToken, provider, sessionId: accepted.session_id };
}

test('a seed 004 client holds a whole conversation with a native party and a seed 002 socket', async () => {
  const { seekerToken, providerToken, provider, sessionId } = await newSession();
  const seed002 = await NativeSocket.open(`/ws/chat/${sessionId}/`, providerToken);
  const seeker = await SocketIoClient.connect(seekerToken);
  try {
    // join_chat: joined_chat, then who of the others is online now.
    seeker.emit('join_chat', { chatId: sessionId });
    assert.deepEqual(await seeker.expect('joined_chat'), { chatId: sessionId });
    const online = await seeker.expect('user_joined');
    assert.equal(online.chatId, sessionId);
    assert.equal(online.role, 'provider');

    // send_message with a temporary id: acknowledged with the stored id and seq; new_message to
    // the room, the sender included (it replaces the optimistic message by tempId).
    const ack = await seeker.ack('send_message', { chatId: sessionId, message: 'Hello from seed 004', tempId: 'temp-1' });
    assert.equal(ack.ok, true, JSON.stringify(ack));
    assert.equal(typeof ack.id, 'string');
    assert.equal(typeof ack.seq, 'number');
    const own = await seeker.expect('new_message', (message) => message.id === ack.id);
    assert.equal(own.tempId, 'temp-1');
    assert.equal(own.senderRole, 'seeker');
    assert.equal(own.message, 'Hello from seed 004');
    assert.equal(own.chatId, sessionId);
    assert.equal(own.seq, ack.seq);
    assert.equal(own.kind, 'text');
    const native = await provider.expect('chat_message', (frame) => frame.message_id === ack.id);
    assert.equal(native.message, 'Hello from seed 004');
    assert.equal(native.sender_type, 'seeker');
    const asSeed002 = await seed002.expect('message', (frame) => frame.message.id === ack.id);
    assert.equal(asSeed002.message.message_text, 'Hello from seed 004');

    // The native party answers: new_message, and the gateway marks it delivered for the client.
    provider.send({ type: 'chat_message', session_id: sessionId, message: 'On my way', client_message_id: 'p-1' });
    const sent = await provider.expect('message_sent', (frame) => frame.client_message_id === 'p-1');
    const answer = await seeker.expect('new_message', (message) => message.id === sent.message_id);
    assert.equal(answer.senderRole, 'provider');
    assert.equal(answer.message, 'On my way');
    assert.equal(answer.tempId, undefined, "the other party's temporary id is not shown");
    await provider.expect('message_status_update', (frame) => frame.message_id === sent.message_id && frame.status === 'delivered');

    // A seed 002 message reaches the Socket.IO client too.
    seed002.send({ message: 'Sent from the old app', type: 'TEXT' });
    await seeker.expect('new_message', (message) => message.message === 'Sent from the old app' && message.senderRole === 'provider');

    // Typing both ways.
    seeker.emit('typing', { chatId: sessionId, isTyping: true });
    await provider.expect('typing_indicator', (frame) => frame.is_typing === true && frame.user_type === 'seeker');
    provider.send({ type: 'typing_indicator', session_id: sessionId, is_typing: true });
    assert.deepEqual(
      await seeker.expect('typing', (typing) => typing.isTyping === true),
      { chatId: sessionId, role: 'provider', isTyping: true },
    );

    // Read up to, both ways.
    seeker.emit('mark_read', { chatId: sessionId, upToSeq: answer.seq });
    const read = await provider.expect('messages_read', (frame) => frame.reader_role === 'seeker');
    assert.equal(read.up_to_seq, answer.seq);
    provider.send({ type: 'messages_read', session_id: sessionId, up_to_seq: ack.seq });
    assert.deepEqual(
      await seeker.expect('messages_read'),
      { chatId: sessionId, readerRole: 'provider', upToSeq: ack.seq },
    );

    // Bad input: an error in the acknowledgement, or as an `error` event without one.
    const refused = await seeker.ack('send_message', { chatId: sessionId, message: '', tempId: 'temp-empty' });
    assert.equal(refused.ok, false);
    assert.match(refused.error, /message/);
    seeker.emit('send_message', { chatId: 'not-a-session', message: 'x' });
    assert.equal((await seeker.expect('error')).message, 'session not found');
    seeker.emit('dance', {});
    assert.match((await seeker.expect('error')).message, /unknown event/);

    // Presence: the provider's last sockets go (after the grace period: user_left), come back (user_joined).
    provider.close();
    seed002.close();
    const left = await seeker.expect('user_left', () => true, 20_000);
    assert.equal(left.role, 'provider');
    assert.equal(left.chatId, sessionId);
    const back = await NativeSocket.open('/ws/work/provider/', providerToken);
    assert.equal((await seeker.expect('user_joined', (joined) => joined.role === 'provider')).chatId, sessionId);

    // Reconnect and resend by temporary id, as an optimistic UI does after a drop: the same
    // message, stored once.
    seeker.close();
    const again = await SocketIoClient.connect(seekerToken);
    try {
      again.emit('join_chat', { chatId: sessionId });
      await again.expect('joined_chat');
      const resent = await again.ack('send_message', { chatId: sessionId, message: 'Hello from seed 004', tempId: 'temp-1' });
      assert.deepEqual(resent, { ok: true, id: ack.id, seq: ack.seq });
      await back.expectNone('chat_message', (frame) => frame.message === 'Hello from seed 004');
      const history = await rest('GET', `/api/sessions/${sessionId}/messages`, seekerToken);
      assert.equal(history.status, 200);
      const copies = history.body.messages.filter((message) => message.message === 'Hello from seed 004');
      assert.equal(copies.length, 1, 'stored once');

      // leave_chat: the room's messages stop.
      assert.deepEqual(await again.ack('leave_chat', { chatId: sessionId }), { ok: true });
      back.send({ type: 'chat_message', session_id: sessionId, message: 'after leaving' });
      await again.expectNone('new_message', (message) => message.message === 'after leaving');
    } finally {
      again.close();
      back.close();
    }
  } finally {
    seeker.close();
    provider.close();
    seed002.close();
  }
});

test('a seed 003 client holds a whole conversation with a native party', async () => {
  const { seekerToken, providerToken, provider: providerNative, sessionId } = await newSession();
  providerNative.close();
  const seeker = await NativeSocket.open('/ws/work/seeker/', seekerToken);
  const provider = await SocketIoClient.connect(providerToken, { transports: ['websocket'] });
  try {
    provider.emit('subscribe_escrow', sessionId);
    const online = await provider.expect('user_joined');
    assert.deepEqual({ escrowId: online.escrowId, role: online.role }, { escrowId: sessionId, role: 'seeker' });

    // chat_message in, chat_message to the room (the sender included).
    const ack = await provider.ack('chat_message', { escrowId: sessionId, content: 'Escrow funded, starting now' });
    assert.equal(ack.ok, true, JSON.stringify(ack));
    const own = await provider.expect('chat_message', (message) => message.id === ack.id);
    assert.equal(own.escrowId, sessionId);
    assert.equal(own.senderRole, 'provider');
    assert.equal(own.content, 'Escrow funded, starting now');
    assert.equal(own.seq, ack.seq);
    assert.equal(own.tempId, undefined, 'no temporary id was sent');
    const native = await seeker.expect('chat_message', (frame) => frame.message_id === ack.id);
    assert.equal(native.message, 'Escrow funded, starting now');

    seeker.send({ type: 'chat_message', session_id: sessionId, message: 'Great, thanks' });
    const answer = await provider.expect('chat_message', (message) => message.content === 'Great, thanks');
    assert.equal(answer.senderRole, 'seeker');
    assert.equal(typeof answer.timestamp, 'string');

    // typing_start / typing_stop, and user_typing cleared by the server after TYPING_TTL_SECS.
    provider.emit('typing_start', { escrowId: sessionId });
    await seeker.expect('typing_indicator', (frame) => frame.is_typing === true);
    provider.emit('typing_stop', { escrowId: sessionId });
    await seeker.expect('typing_indicator', (frame) => frame.is_typing === false);
    seeker.send({ type: 'typing_indicator', session_id: sessionId, is_typing: true });
    assert.deepEqual(
      await provider.expect('user_typing', (typing) => typing.isTyping === true),
      { escrowId: sessionId, role: 'seeker', isTyping: true },
    );
    await provider.expect('user_typing', (typing) => typing.isTyping === false);

    // The other party reads: message_read.
    seeker.send({ type: 'messages_read', session_id: sessionId, up_to_seq: ack.seq });
    assert.deepEqual(await provider.expect('message_read'), { escrowId: sessionId, readerRole: 'seeker', upToSeq: ack.seq });

    // Everything that is not chat arrives as a notification, as the native event.
    seeker.send({ type: 'medium_selection', session_id: sessionId, mediums: { call: '9123456789' } });
    const notification = await provider.expect('notification', (event) => event.type === 'seeker_mediums_selected');
    assert.equal(notification.session_id, sessionId);

    // Reconnect and resend by temporary id: stored once.
    const first = await provider.ack('chat_message', { escrowId: sessionId, content: 'Invoice sent', tempId: 42 });
    assert.equal(first.ok, true);
    assert.equal((await provider.expect('chat_message', (message) => message.id === first.id)).tempId, 42);
    await seeker.expect('chat_message', (frame) => frame.message_id === first.id);
    provider.close();
    const again = await SocketIoClient.connect(providerToken, { transports: ['websocket'] });
    try {
      again.emit('subscribe_escrow', sessionId);
      await again.expect('user_joined');
      const resent = await again.ack('chat_message', { escrowId: sessionId, content: 'Invoice sent', tempId: 42 });
      assert.deepEqual(resent, { ok: true, id: first.id, seq: first.seq });
      await seeker.expectNone('chat_message', (frame) => frame.message_id !== first.id && frame.message === 'Invoice sent');

      // unsubscribe_escrow: no more chat from that room.
      again.emit('unsubscribe_escrow', sessionId);
      seeker.send({ type: 'chat_message', session_id: sessionId, message: 'after unsubscribing' });
      await again.expectNone('chat_message', (message) => message.content === 'after unsubscribing');
    } finally {
      again.close();
    }
  } finally {
    provider.close();
    seeker.close();
  }
});

test('a stranger cannot join a session; a handshake without a valid token, or over the socket limit, is refused', async () => {
  const { providerToken, provider, sessionId } = await newSession();
  provider.close();
  const strangerToken = await mint(`sio-stranger-${unique()}`, 'seeker');
  const stranger = await SocketIoClient.connect(strangerToken);
  try {
    stranger.emit('join_chat', { chatId: sessionId });
    assert.match((await stranger.expect('error')).message, /not a participant/);
    const refused = await stranger.ack('subscribe_escrow', sessionId);
    assert.equal(refused.ok, false);
    assert.match(refused.error, /not a participant/);
    // Its messages to that session are refused by the chat worker, like a native stranger's.
    const sent = await stranger.ack('send_message', { chatId: sessionId, message: 'let me in', tempId: 's-1' });
    assert.equal(sent.ok, false);
  } finally {
    stranger.close();
  }
  for (const auth of [{}, { walletAddress: '0xabc' }, { token: 'not-a-jwt' }]) {
    const socket = io(GATEWAY, { auth, reconnection: false, forceNew: true });
    const error = await new Promise((resolve, reject) => {
      socket.once('connect', () => reject(new Error(`connected with ${JSON.stringify(auth)}`)));
      socket.once('connect_error', resolve);
    });
    socket.disconnect();
    assert.match(error.message, /token/i, `${JSON.stringify(auth)}: ${error.message}`);
  }
  // Socket.IO sockets count towards WS_MAX_SOCKETS_PER_USER (10) like any other.
  const crowdToken = await mint(`sio-many-${unique()}`, 'seeker');
  const ten = [];
  for (let index = 0; index < 10; index++) ten.push(await SocketIoClient.connect(crowdToken, { transports: ['websocket'] }));
  const eleventh = io(GATEWAY, { auth: { token: crowdToken }, reconnection: false, forceNew: true, transports: ['websocket'] });
  const tooMany = await new Promise((resolve, reject) => {
    eleventh.once('connect', () => reject(new Error('an eleventh socket was accepted')));
    eleventh.once('connect_error', resolve);
  });
  eleventh.disconnect();
  ten.forEach((socket) => socket.close());
  assert.equal(tooMany.message, 'too many open sockets for this user');
  // The token by query string works too, as some front-ends send it.
  const byQuery = io(GATEWAY, { query: { token: providerToken }, reconnection: false, forceNew: true });
  await new Promise((resolve, reject) => {
    byQuery.once('connect', resolve);
    byQuery.once('connect_error', reject);
  });
  byQuery.disconnect();
});

test('the front-ends served from their own origins may call the gateway from the browser (GATEWAY_CORS_ORIGINS)', async () => {
  const preflight = await fetch(`${GATEWAY}/socket.io/?EIO=4&transport=polling`, {
    method: 'OPTIONS',
    headers: { origin: 'http://jobs-front.test', 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' },
  });
  assert.equal(preflight.headers.get('access-control-allow-origin'), 'http://jobs-front.test');
  assert.equal(preflight.headers.get('access-control-allow-credentials'), 'true');
  const polling = await fetch(`${GATEWAY}/socket.io/?EIO=4&transport=polling`, { headers: { origin: 'http://escrow-front.test' } });
  assert.equal(polling.status, 200);
  assert.equal(polling.headers.get('access-control-allow-origin'), 'http://escrow-front.test');
  assert.match(await polling.text(), /^0\{"sid"/, 'an Engine.IO open packet');
  const stranger = await fetch(`${GATEWAY}/health`, { headers: { origin: 'http://elsewhere.test' } });
  assert.equal(stranger.headers.get('access-control-allow-origin'), null, 'other origins get no CORS grant');
});
