// client.test.mjs — unit tests of web/client.js's delivery logic against a scripted fake socket
// (node --test, no browser, no server): what is re-sent after a reconnect, what `resume` asks for,
// and that every chat message is shown exactly once. The browser test (e2e.mjs) covers the same
// against the real stack; these pin the exact frames, which is what a port to mobile must match.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

// client.js is a browser ES module next to a folder without package.json: load it as one.
const source = readFileSync(new URL('../client.js', import.meta.url), 'utf8');
const { SeekerClient, ProviderClient, BACKOFF } = await import(`data:text/javascript,${encodeURIComponent(source)}`);
BACKOFF.initialMs = 2; // reconnect at once in tests
BACKOFF.maxMs = 4;

const SESSION = '11111111-1111-4111-8111-111111111111';
const tick = (ms = 20) => new Promise((resolve) => setTimeout(resolve, ms));
const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
const token = (role) => `${b64({ alg: 'HS256' })}.${b64({ sub: `u-${role}`, role, exp: Math.floor(Date.now() / 1000) + 3600 })}.sig`;

/** A WebSocket the test plays the server for. */
class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    FakeSocket.all.push(this);
  }
  static get last() { return FakeSocket.all[FakeSocket.all.length - 1]; }
  send(data) {
    if (this.readyState !== 1) throw new Error('send on a socket that is not open');
    this.sent.push(JSON.parse(data));
  }
  close(code = 1000, reason = '') { this.drop(code, reason); }
  open() { this.readyState = 1; this.onopen?.(); }
  receive(frame) { this.onmessage?.({ data: JSON.stringify(frame) }); }
  drop(code = 1006, reason = '') {
    if (this.readyState === 3) return;
    this.readyState = 3;
    queueMicrotask(() => this.onclose?.({ code, reason }));
  }
  frames(type) { return this.sent.filter((f) => f.type === type); }
}

function connected(Client, role) {
  FakeSocket.all = [];
  const client = new Client({ token: token(role), baseUrl: 'http://gateway.test', WebSocketImpl: FakeSocket });
  const events = [];
  client.on('*', (event) => events.push(event));
  client.connect();
  FakeSocket.last.open();
  FakeSocket.last.receive({ type: 'work_accepted', work_id: 1, session_id: SESSION, connection_state: 'waiting' });
  const of = (type) => events.filter((e) => e.type === type).map((e) => e.payload);
  return { client, events, of };
}

test('connects to the role endpoint with the token on the URL', () => {
  const { client } = connected(SeekerClient, 'seeker');
  assert.match(FakeSocket.last.url, /^ws:\/\/gateway\.test\/ws\/work\/seeker\/\?token=/);
  assert.equal(client.userId, 'u-seeker');
  client.disconnect();
});

test('a reconnect re-sends unconfirmed messages, then resumes; nothing is shown twice', async () => {
  const { client, of } = connected(SeekerClient, 'seeker');
  const first = FakeSocket.last;

  const a = client.sendChat('a');
  first.receive({ type: 'message_sent', session_id: SESSION, message_id: 'm1', seq: 1, client_message_id: a });
  first.receive({ type: 'chat_message', session_id: SESSION, message_id: 'm2', seq: 2, sender_type: 'provider', message: 'p1', delivery_status: 'sent' });
  const b = client.sendChat('b'); // sent, but its confirmation is lost with the socket
  first.drop();
  await tick(1);
  const c = client.sendChat('c'); // written while offline
  assert.deepEqual(first.frames('chat_message').map((f) => f.message), ['a', 'b']);
  assert.equal(client.state, 'reconnecting');

  await tick();
  const second = FakeSocket.last;
  assert.notEqual(second, first);
  second.open();
  // Re-sends first (same client ids), then resume from before the oldest own unread message.
  assert.deepEqual(second.sent.map((f) => f.type), ['chat_message', 'chat_message', 'resume']);
  assert.deepEqual(second.frames('chat_message').map((f) => [f.message, f.client_message_id]), [['b', b], ['c', c]]);
  assert.deepEqual(second.frames('resume')[0], { type: 'resume', session_id: SESSION, last_seq: 0 });

  // The server: b had been stored (seq 3) before the drop; the provider wrote p2 (seq 4) meanwhile.
  second.receive({ type: 'message_sent', session_id: SESSION, message_id: 'm3', seq: 3, client_message_id: b });
  second.receive({ type: 'message_sent', session_id: SESSION, message_id: 'm5', seq: 5, client_message_id: c });
  second.receive({ type: 'session_state', session_id: SESSION, connection_state: 'active', last_seq: 5 });
  for (const [id, seq, sender, text, status] of [['m1', 1, 'seeker', 'a', 'read'], ['m2', 2, 'provider', 'p1', 'delivered'],
    ['m3', 3, 'seeker', 'b', 'delivered'], ['m4', 4, 'provider', 'p2', 'sent'], ['m5', 5, 'seeker', 'c', 'sent']]) {
    second.receive({ type: 'chat_message', session_id: SESSION, message_id: id, seq, sender_type: sender, message: text, delivery_status: status });
  }

  assert.deepEqual(of('chat_message').map((m) => m.message), ['p1', 'p2']);
  assert.deepEqual(of('chat_pending').map((m) => m.message), ['a', 'b', 'c']);
  assert.deepEqual(of('chat_confirmed').map((m) => [m.client_message_id, m.seq]), [[a, 1], [b, 3], [c, 5]]);
  assert.deepEqual(of('message_status_update').map((u) => [u.message_id, u.status]), [['m1', 'read'], ['m3', 'delivered']]);
  assert.equal(client.session.contiguousSeq, 5);
  assert.equal(client.outbox.size, 0);
  // p2 arrived only through the resume: it is acknowledged as delivered there.
  assert.deepEqual(second.frames('message_delivered').map((f) => f.message_id), ['m4']);
  client.disconnect();
});

test('resume starts after the last contiguous seq once own messages are read', async () => {
  const { client } = connected(ProviderClient, 'provider');
  const first = FakeSocket.last;
  const a = client.sendChat('hello');
  first.receive({ type: 'message_sent', session_id: SESSION, message_id: 'm1', seq: 1, client_message_id: a });
  first.receive({ type: 'message_status_update', session_id: SESSION, message_id: 'm1', status: 'read' });
  first.receive({ type: 'chat_message', session_id: SESSION, message_id: 'm2', seq: 2, sender_type: 'seeker', message: 'hi', delivery_status: 'sent' });
  first.receive({ type: 'chat_message', session_id: SESSION, message_id: 'm4', seq: 4, sender_type: 'seeker', message: 'gap', delivery_status: 'sent' });
  first.drop();
  await tick();
  FakeSocket.last.open();
  // seq 3 was never seen, so 2 is the highest seq below which nothing is missing.
  assert.deepEqual(FakeSocket.last.frames('resume')[0].last_seq, 2);
  client.disconnect();
});

test('a refused chat message fails the oldest one awaiting an answer', () => {
  const { client, of } = connected(SeekerClient, 'seeker');
  const socket = FakeSocket.last;
  const first = client.sendChat('one');
  const second = client.sendChat('two');
  socket.receive({ type: 'error', error: 'message must not be empty', request_type: 'chat_message', session_id: SESSION });
  socket.receive({ type: 'message_sent', session_id: SESSION, message_id: 'm1', seq: 1, client_message_id: second });
  assert.deepEqual(of('chat_failed').map((f) => [f.client_message_id, f.error]), [[first, 'message must not be empty']]);
  assert.deepEqual(of('chat_confirmed').map((f) => f.client_message_id), [second]);
  assert.equal(of('error').length, 1, 'the error is also reported for the user');
  client.disconnect();
});

test('receipts written while offline go out after reconnecting', async () => {
  const { client } = connected(ProviderClient, 'provider');
  const first = FakeSocket.last;
  first.receive({ type: 'chat_message', session_id: SESSION, message_id: 'm1', seq: 1, sender_type: 'seeker', message: 'hi', delivery_status: 'sent' });
  assert.deepEqual(first.frames('message_delivered').map((f) => f.message_id), ['m1']);
  first.drop();
  await tick(1);
  client.markRead('m1'); // seen on screen while the socket was down
  await tick();
  const second = FakeSocket.last;
  second.open();
  assert.deepEqual(second.frames('message_read').map((f) => f.message_id), ['m1']);
  client.markRead('m1');
  assert.equal(second.frames('message_read').length, 1, 'read is sent once');
  client.disconnect();
});

test('the server closing after the session ended is not a network problem: no reconnect', async () => {
  const { client, of } = connected(SeekerClient, 'seeker');
  const socket = FakeSocket.last;
  client.sendChat('still pending');
  socket.receive({ type: 'service_finished', session_id: SESSION, finished_by: 'provider', message: 'done' });
  socket.drop(1000, 'session ended');
  await tick();
  assert.equal(client.state, 'closed');
  assert.equal(FakeSocket.all.length, 1);
  assert.deepEqual(of('session_ended').map((e) => e.reason), ['service_finished']);
  assert.deepEqual(of('chat_failed').map((e) => e.error), ['the session has ended']);
  client.sendChat('too late');
  assert.equal(of('error').at(-1).error, 'there is no active session');
});

test('a simulated network drop stays offline for the given time, then reconnects', async () => {
  const { client, of } = connected(SeekerClient, 'seeker');
  client.simulateNetworkDrop(60);
  await tick(30);
  assert.equal(FakeSocket.all.length, 1, 'no reconnect while the network is down');
  assert.equal(client.state, 'reconnecting');
  await tick(80);
  assert.equal(FakeSocket.all.length, 2);
  FakeSocket.last.open();
  assert.equal(client.state, 'open');
  assert.ok(of('state').some((s) => s.state === 'open' && s.reconnected));
  client.disconnect();
});

test('an own message sent from another device is shown once, as mine', () => {
  const { client, of } = connected(SeekerClient, 'seeker');
  const socket = FakeSocket.last;
  const fromPhone = { type: 'message_sent', session_id: SESSION, message_id: 'm9', seq: 4, client_message_id: 'phone-1', timestamp: '2026-12-02T10:00:00Z', sender_type: 'seeker', message: 'sent from my phone' };
  socket.receive(fromPhone);
  socket.receive(fromPhone); // a repeat (resume overlap) is not shown twice
  assert.deepEqual(of('chat_message').map((m) => [m.message, m.mine, m.seq]), [['sent from my phone', true, 4]]);
  assert.equal(of('chat_confirmed').length, 0, 'nothing of this device was waiting for it');
  client.disconnect();
});

test('a resume answered with has_more asks for the next page after the last message of this one', () => {
  const { client, of } = connected(ProviderClient, 'provider');
  const socket = FakeSocket.last;
  socket.receive({ type: 'session_state', session_id: SESSION, connection_state: 'active', has_more: true });
  for (let seq = 1; seq <= 200; seq += 1) {
    socket.receive({ type: 'chat_message', session_id: SESSION, message_id: `m${seq}`, seq, sender_type: 'seeker', message: `n${seq}`, delivery_status: 'sent', timestamp: '2026-12-02T10:00:00Z' });
  }
  assert.deepEqual(socket.frames('resume').map((f) => f.last_seq), [200]);
  socket.receive({ type: 'session_state', session_id: SESSION, connection_state: 'active', has_more: false });
  socket.receive({ type: 'chat_message', session_id: SESSION, message_id: 'm201', seq: 201, sender_type: 'seeker', message: 'last', delivery_status: 'sent', timestamp: '2026-12-02T10:00:00Z' });
  assert.equal(socket.frames('resume').length, 1, 'no page after the last');
  assert.equal(of('chat_message').length, 201);
  client.disconnect();
});

test('a position carries its accuracy only when it is a number above zero; provider_arrived is passed on', () => {
  const { client, of } = connected(ProviderClient, 'provider');
  client.sendLocation(28.6, 77.2, 12.5);
  client.sendLocation(28.6, 77.2);
  client.sendLocation(28.6, 77.2, 0);
  const sent = FakeSocket.last.frames('location_update');
  assert.deepEqual(sent[0], { type: 'location_update', session_id: SESSION, latitude: 28.6, longitude: 77.2, accuracy: 12.5 });
  assert.equal('accuracy' in sent[1], false);
  assert.equal('accuracy' in sent[2], false);
  const arrived = { type: 'provider_arrived', session_id: SESSION, distance_meters: 30.2, timestamp: '2026-12-06T08:00:00Z' };
  FakeSocket.last.receive(arrived);
  assert.deepEqual(of('provider_arrived'), [arrived]);
  client.disconnect();
});
