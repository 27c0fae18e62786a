// client.js — the reference client for the marketplace's WebSocket and REST protocol.
//
// Written to be read (and ported) by the mobile teams: no framework, no build step, one small class
// per party. The hard parts of a real-time client live here, not in the UI:
//   * reconnecting with exponential backoff and jitter,
//   * resuming the session after a reconnect (`resume` with the last contiguous `seq` seen),
//   * an outbox of chat messages keyed by `client_message_id` that is re-sent until the server
//     confirms it with `message_sent` (the server stores a repeated id only once),
//   * de-duplicating incoming chat messages by `message_id`,
// so that no chat message is lost or shown twice across a dropped connection.
//
// Usage:
//   const seeker = new SeekerClient({ token });
//   seeker.on('state', ({ state }) => ...);             // connecting | open | reconnecting | closed
//   seeker.on('chat_message', (m) => ...);              // each message once, by message_id
//   seeker.on('distance_update', (f) => ...);           // any server frame type, as sent
//   seeker.on('provider_arrived', (f) => ...);          // once per approach (contract section 14)
//   seeker.connect();
//
// Events besides the server's frame types (each documented where it is emitted):
//   state, chat_pending, chat_confirmed, chat_failed, session, session_ended, error.

/** Backoff between reconnect attempts: initial * factor^attempt, capped, with jitter. */
export const BACKOFF = { initialMs: 500, factor: 2, maxMs: 15000 };

/** How often an idle socket sends `ping`, and how long it waits for any answer. */
export const HEARTBEAT = { everyMs: 20000, timeoutMs: 10000 };

/** Limits the server enforces; checking them here gives the user a quicker answer. */
export const LIMITS = { messageChars: 4000 };

/** Messages one `resume` answers with at most; `has_more` says another page follows. */
const RESUME_PAGE = 200;
const STATUS_RANK = { pending: 0, sent: 1, delivered: 2, read: 3 };

/** A client-side id for a chat message, so a re-send is recognised by the server. */
export function newClientMessageId() {
  // randomUUID exists only in secure contexts (https, localhost); a phone on a LAN address is not.
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** The claims of a JWT, without checking the signature (the server does that). */
export function decodeTokenClaims(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const json = atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), '='));
    return JSON.parse(decodeURIComponent(escape(json)));
  } catch {
    return null;
  }
}

/**
 * Asks the gateway for a demo token. Only a gateway in development mode (GATEWAY_DEV_MODE=1)
 * has this route; otherwise this returns null and users must bring their own token.
 */
export async function mintDevToken({ baseUrl = '', user_id, role, name }) {
  const response = await fetch(`${baseUrl}/dev/token`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ user_id, role, name }),
  });
  if (response.status === 404 || response.status === 405) return null;
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, body.error || response.statusText);
  return body.token;
}

/** Whether the gateway mints demo tokens, without minting one. */
export async function isDevMode(baseUrl = '') {
  // An empty body is refused with 4xx by the route when it exists (422/400/415), and the static
  // file service answers 404/405 when it does not.
  const response = await fetch(`${baseUrl}/dev/token`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: '{}',
  });
  return response.status !== 404 && response.status !== 405;
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** REST calls with the bearer token; errors become ApiError with the server's own words. */
export class RestApi {
  constructor({ baseUrl = '', token }) {
    this.baseUrl = baseUrl;
    this.token = token;
  }

  async request(method, path, body) {
    const response = await fetch(`${this.baseUrl}${path}`, {
      method,
      headers: {
        Authorization: `Bearer ${this.token}`,
        ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = null;
    }
    if (!response.ok) {
      throw new ApiError(response.status, json?.error || text || response.statusText);
    }
    return json;
  }

  getSession(sessionId) {
    return this.request('GET', `/api/sessions/${encodeURIComponent(sessionId)}`);
  }

  listMessages(sessionId, { limit = 50, before } = {}) {
    const query = new URLSearchParams({ limit: String(limit) });
    if (before !== undefined) query.set('before', String(before));
    return this.request('GET', `/api/sessions/${encodeURIComponent(sessionId)}/messages?${query}`);
  }

  putProfile({ name, mobile }) {
    return this.request('PUT', '/api/me/profile', { name, mobile });
  }
}

/** Just enough of an event emitter; handlers of one type run in the order they were added. */
class Emitter {
  constructor() {
    this.handlers = new Map();
  }

  /** Adds a handler; returns a function that removes it. */
  on(type, handler) {
    if (!this.handlers.has(type)) this.handlers.set(type, new Set());
    this.handlers.get(type).add(handler);
    return () => this.handlers.get(type)?.delete(handler);
  }

  emit(type, payload) {
    for (const handler of this.handlers.get(type) ?? []) {
      try {
        handler(payload);
      } catch (error) {
        // One broken UI handler must not stop the protocol logic (or the other handlers).
        console.error(`handler for ${type} failed`, error);
      }
    }
    for (const handler of this.handlers.get('*') ?? []) {
      try {
        handler({ type, payload });
      } catch (error) {
        console.error('wildcard handler failed', error);
      }
    }
  }
}

/**
 * What both parties share: the socket with reconnects, the current session, chat with outbox,
 * receipts and typing, location, cancel and finish. SeekerClient and ProviderClient add the
 * frames only their role may send.
 */
export class PartyClient extends Emitter {
  /**
   * @param {object} options
   * @param {'seeker'|'provider'} options.role
   * @param {string} options.token  a JWT whose role matches
   * @param {string} [options.baseUrl]  http(s) origin of the gateway; defaults to this page's
   */
  constructor({ role, token, baseUrl = globalThis.location?.origin ?? '', WebSocketImpl } = {}) {
    super();
    this.role = role;
    this.token = token;
    this.baseUrl = baseUrl;
    this.api = new RestApi({ baseUrl, token });
    this.WebSocketImpl = WebSocketImpl ?? globalThis.WebSocket;
    this.claims = decodeTokenClaims(token);
    this.userId = this.claims?.sub ?? null;

    this.ws = null;
    this.state = 'idle';
    this.attempt = 0;
    this.userClosed = false;
    this.offlineUntil = 0;
    this.reconnectTimer = null;
    this.heartbeatTimer = null;
    this.lastHeardAt = 0;
    this.pingSentAt = 0;

    this.resetSession(null);
  }

  // ---- connection ---------------------------------------------------------------------------

  get socketUrl() {
    const origin = this.baseUrl.replace(/^http/, 'ws');
    return `${origin}/ws/work/${this.role}/?token=${encodeURIComponent(this.token)}`;
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === 1;
  }

  /** Opens the socket; from then on the client keeps it open until disconnect(). */
  connect() {
    this.userClosed = false;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    if (this.ws) return;
    this.openSocket();
  }

  /** Closes for good (signing out): no reconnect. */
  disconnect() {
    this.userClosed = true;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.stopHeartbeat();
    if (this.ws) {
      const ws = this.ws;
      this.detach(ws);
      ws.close(1000, 'signed out');
    }
    this.setState('closed', { reason: 'signed out' });
  }

  /**
   * Test hook: closes the socket as a lost network would (no goodbye from the app), and keeps the
   * "network" down for `offlineMs`. The client notices and reconnects by itself.
   */
  simulateNetworkDrop(offlineMs = 0) {
    this.offlineUntil = Date.now() + offlineMs;
    if (this.ws) this.ws.close(4000, 'simulated network drop');
  }

  openSocket() {
    if (this.tokenExpired()) {
      this.setState('closed', { reason: 'token expired' });
      this.emit('error', { type: 'error', error: 'your token has expired: sign in again', request_type: null, local: true });
      return;
    }
    this.setState(this.attempt > 0 ? 'reconnecting' : 'connecting', { attempt: this.attempt });
    let ws;
    try {
      ws = new this.WebSocketImpl(this.socketUrl);
    } catch (error) {
      this.scheduleReconnect(`cannot open a socket: ${error.message}`);
      return;
    }
    this.ws = ws;
    ws.onopen = () => this.onOpen(ws);
    ws.onmessage = (event) => this.onFrame(ws, event.data);
    ws.onclose = (event) => this.onClose(ws, event);
    // Every error is followed by a close event, which is where recovery happens.
    ws.onerror = () => {};
  }

  detach(ws) {
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    if (this.ws === ws) this.ws = null;
  }

  tokenExpired() {
    return typeof this.claims?.exp === 'number' && this.claims.exp * 1000 < Date.now();
  }

  onOpen(ws) {
    if (this.ws !== ws) return;
    const reconnected = this.attempt > 0;
    this.attempt = 0;
    this.lastHeardAt = Date.now();
    this.startHeartbeat();
    this.setState('open', { reconnected });
    this.catchUp();
  }

  /**
   * After any (re)connect: re-send the unconfirmed chat messages first, then ask for what was
   * missed. The server handles one socket's chat frames in order, so every `message_sent` for
   * the re-sent messages arrives before the resumed messages, and an own message that was stored
   * while the old socket was dying is recognised by its message_id instead of being shown twice.
   */
  catchUp() {
    const session = this.session;
    if (!session.id || session.ended) return;
    for (const entry of this.outbox.values()) this.transmitChat(entry);
    this.sendFrame({ type: 'resume', session_id: session.id, last_seq: this.resumeFrom() });
    for (const [messageId, status] of this.pendingReceipts) this.sendReceipt(messageId, status);
  }

  /**
   * Where to resume: after the highest seq below which we have seen everything, but no later than
   * our own oldest message not yet read, so that ticks missed while offline are refreshed too.
   */
  resumeFrom() {
    let from = this.session.contiguousSeq;
    for (const message of this.session.messages.values()) {
      if (message.mine && message.seq && STATUS_RANK[message.status] < STATUS_RANK.read) {
        from = Math.min(from, message.seq - 1);
      }
    }
    return Math.max(0, from);
  }

  /** Forgets a socket that is gone: whatever it had in flight must be sent again. */
  lostSocket(ws) {
    this.detach(ws);
    this.stopHeartbeat();
    for (const entry of this.outbox.values()) entry.inFlight = false;
    this.inFlight = [];
  }

  onClose(ws, event) {
    if (this.ws !== ws) return;
    this.lostSocket(ws);
    if (this.userClosed) {
      this.setState('closed', { reason: 'signed out' });
      return;
    }
    // The server closes both parties' sockets with 1000 once their session has ended; that is
    // the end of this conversation, not a network problem, so the app decides what comes next.
    if (event.code === 1000 && (this.session.ended || event.reason === 'session ended')) {
      this.setState('closed', { reason: 'session ended', code: event.code });
      return;
    }
    this.scheduleReconnect(event.reason || `connection lost (code ${event.code})`);
  }

  scheduleReconnect(reason) {
    clearTimeout(this.reconnectTimer);
    const backoff = Math.min(BACKOFF.maxMs, BACKOFF.initialMs * BACKOFF.factor ** this.attempt);
    // "Equal jitter": never immediately, and never all clients of a restarted server at once.
    const jittered = backoff / 2 + Math.random() * (backoff / 2);
    const delayMs = Math.max(jittered, this.offlineUntil - Date.now());
    this.attempt += 1;
    this.setState('reconnecting', { attempt: this.attempt, delayMs, reason, retryAt: Date.now() + delayMs });
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (!this.userClosed && !this.ws) this.openSocket();
    }, delayMs);
  }

  /** Triggers a reconnect now (e.g. when the phone regains network); no-op when open. */
  reconnectNow() {
    if (this.ws || this.userClosed) return;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.openSocket();
  }

  startHeartbeat() {
    this.stopHeartbeat();
    this.heartbeatTimer = setInterval(() => {
      if (!this.isOpen) return;
      const now = Date.now();
      // A half-open TCP connection (phone changed networks) never reports a close by itself.
      if (this.pingSentAt && now - this.pingSentAt > HEARTBEAT.timeoutMs && this.lastHeardAt < this.pingSentAt) {
        const ws = this.ws;
        this.lostSocket(ws);
        ws.close(4001, 'heartbeat timeout');
        this.scheduleReconnect('no answer to ping');
        return;
      }
      if (now - this.lastHeardAt >= HEARTBEAT.everyMs && (!this.pingSentAt || this.lastHeardAt >= this.pingSentAt)) {
        this.pingSentAt = now;
        this.ws.send(JSON.stringify({ type: 'ping' }));
      }
    }, 1000);
  }

  stopHeartbeat() {
    clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = null;
    this.pingSentAt = 0;
  }

  setState(state, details = {}) {
    this.state = state;
    this.emit('state', { state, ...details });
  }

  /** Sends a frame now; false when the socket is not open (the frame is not queued). */
  sendFrame(frame) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /** Like sendFrame, but tells the user (an `error` event) when it could not go out. */
  send(frame) {
    if (this.sendFrame(frame)) return true;
    this.emit('error', {
      type: 'error',
      error: 'not connected: try again when the connection is back',
      request_type: frame.type,
      local: true,
    });
    return false;
  }

  // ---- incoming frames ----------------------------------------------------------------------

  onFrame(ws, data) {
    if (this.ws !== ws) return;
    this.lastHeardAt = Date.now();
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    switch (frame.type) {
      case 'work_accepted':
        this.startSession(frame.session_id);
        this.emit('work_accepted', frame);
        return;
      case 'session_state':
        this.onSessionState(frame);
        return;
      case 'chat_message':
        this.onChatMessage(frame);
        return;
      case 'system_message':
        this.onSystemMessage(frame);
        return;
      case 'message_sent':
        this.onMessageSent(frame);
        return;
      case 'message_status_update':
        this.onStatusUpdate(frame.message_id, frame.status, frame);
        return;
      case 'service_finished':
      case 'connection_cancelled':
        this.emit(frame.type, frame);
        this.endSession(frame.session_id, frame.type);
        return;
      case 'error':
        this.onError(frame);
        return;
      default:
        this.emit(frame.type, frame);
    }
  }

  onSessionState(frame) {
    if (frame.session_id !== this.session.id) this.startSession(frame.session_id);
    // A long absence comes in pages: after this page's messages, ask for the next one.
    this.resumePageLeft = frame.has_more ? RESUME_PAGE : 0;
    this.emit('session_state', frame);
    if (frame.connection_state === 'cancelled' || frame.connection_state === 'completed') {
      this.endSession(frame.session_id, frame.connection_state);
    }
  }

  /** A resume page counts every message it replays; after the last one, ask for the next page. */
  countResumed() {
    if (this.resumePageLeft > 0) {
      this.resumePageLeft -= 1;
      if (this.resumePageLeft === 0) this.sendFrame({ type: 'resume', session_id: this.session.id, last_seq: this.resumeFrom() });
    }
  }

  /** A message the server wrote into the chat (the start, the end): shown once, by message_id. */
  onSystemMessage(frame) {
    const session = this.session;
    if (frame.session_id !== session.id) return;
    this.noteSeq(frame.seq);
    this.countResumed();
    if (session.messages.has(frame.message_id)) return;
    const message = { message_id: frame.message_id, seq: frame.seq, sender_type: 'system', kind: 'system', message: frame.message, timestamp: frame.timestamp, mine: false, status: 'read', receipt: 'read' };
    session.messages.set(frame.message_id, message);
    this.emit('system_message', { ...message });
  }

  onChatMessage(frame) {
    const session = this.session;
    if (frame.session_id !== session.id) return;
    this.noteSeq(frame.seq);
    this.countResumed();
    const mine = frame.sender_type === this.role;
    const known = session.messages.get(frame.message_id);
    if (known) {
      // A repeat (a resume overlaps what we saw): nothing new to show, but news about it may be.
      if (mine) this.onStatusUpdate(frame.message_id, frame.delivery_status, frame);
      else if (STATUS_RANK[frame.delivery_status] < STATUS_RANK[known.receipt] && !this.pendingReceipts.has(known.message_id)) {
        // Our receipt was lost with the old socket.
        this.sendReceipt(known.message_id, known.receipt);
      }
      return;
    }
    const status = frame.delivery_status in STATUS_RANK ? frame.delivery_status : 'sent';
    const message = {
      message_id: frame.message_id,
      seq: frame.seq,
      sender_type: frame.sender_type,
      message: frame.message,
      timestamp: frame.timestamp,
      // Section 9: a location, an image or a file by its https address, with their fields.
      kind: frame.kind ?? 'text',
      latitude: frame.latitude,
      longitude: frame.longitude,
      url: frame.url,
      name: frame.name,
      mime_type: frame.mime_type,
      size_bytes: frame.size_bytes,
      mine,
      status,
      // For others' messages: the strongest receipt the server has or that we sent.
      receipt: mine ? null : status,
    };
    session.messages.set(frame.message_id, message);
    this.emit('chat_message', { ...message });
    if (!mine) this.markDelivered(frame.message_id);
  }

  onMessageSent(frame) {
    const session = this.session;
    if (frame.session_id !== session.id) return;
    this.noteSeq(frame.seq);
    const clientId = frame.client_message_id;
    this.inFlight = this.inFlight.filter((id) => id !== clientId);
    const entry = clientId ? this.outbox.get(clientId) : null;
    if (!entry) {
      // Not from this device's outbox: a second answer to a re-sent message (already shown), or
      // our own message sent from another device (phone and browser), shown like any message.
      if (typeof frame.message === 'string' && !session.messages.has(frame.message_id)) {
        this.onChatMessage({ ...frame, type: 'chat_message', sender_type: frame.sender_type ?? this.role, delivery_status: 'sent' });
      }
      return;
    }
    this.outbox.delete(clientId);
    const alreadyShown = session.messages.has(frame.message_id);
    if (!alreadyShown) {
      session.messages.set(frame.message_id, {
        message_id: frame.message_id,
        seq: frame.seq,
        sender_type: this.role,
        message: entry.message,
        timestamp: frame.timestamp,
        mine: true,
        status: 'sent',
      });
    }
    /**
     * chat_confirmed: an own message reached the server. `alreadyShown` is true when the same
     * message was already emitted as a chat_message (from a resume): drop the pending copy.
     */
    this.emit('chat_confirmed', {
      client_message_id: clientId,
      message_id: frame.message_id,
      seq: frame.seq,
      timestamp: frame.timestamp,
      alreadyShown,
      status: session.messages.get(frame.message_id).status,
    });
  }

  onStatusUpdate(messageId, status, frame) {
    const message = this.session.messages.get(messageId);
    if (!message || !(status in STATUS_RANK)) return;
    if (STATUS_RANK[status] <= STATUS_RANK[message.status]) return;
    message.status = status;
    this.emit('message_status_update', { ...frame, type: 'message_status_update', message_id: messageId, status });
  }

  onError(frame) {
    if (frame.request_type === 'chat_message' && this.inFlight.length > 0) {
      // The server answers one socket's chat frames in order, so the failure is the oldest one
      // still waiting for its answer.
      const clientId = this.inFlight.shift();
      const entry = this.outbox.get(clientId);
      if (entry) {
        this.outbox.delete(clientId);
        this.emit('chat_failed', { client_message_id: clientId, message: entry.message, error: frame.error });
      }
    }
    if (frame.error === 'session already ended' && frame.session_id && frame.session_id === this.session.id) {
      this.endSession(frame.session_id, 'ended');
    }
    this.emit('error', frame);
  }

  // ---- the session --------------------------------------------------------------------------

  resetSession(id) {
    /** The session this client takes part in; one at a time, as the product allows. */
    this.session = {
      id,
      ended: false,
      contiguousSeq: 0,
      seenSeqs: new Set(),
      messages: new Map(), // message_id -> message
    };
    this.outbox = new Map(); // client_message_id -> { message, session_id, inFlight }
    this.inFlight = []; // client_message_ids sent on this socket, answer pending, in send order
    this.pendingReceipts = new Map(); // message_id -> 'delivered' | 'read', not yet sent
    this.typingSent = false;
  }

  startSession(sessionId) {
    if (this.session.id === sessionId) return;
    this.resetSession(sessionId);
    /** session: this client now follows another session (accepted, or resumed after reload). */
    this.emit('session', { session_id: sessionId });
  }

  /**
   * Follows a session known from elsewhere (e.g. saved before a page reload) and asks the server
   * for its state and every message.
   */
  resumeSession(sessionId) {
    this.startSession(sessionId);
    if (this.isOpen) this.sendFrame({ type: 'resume', session_id: sessionId, last_seq: 0 });
  }

  endSession(sessionId, reason) {
    if (sessionId !== this.session.id || this.session.ended) return;
    this.session.ended = true;
    for (const [clientId, entry] of this.outbox) {
      this.emit('chat_failed', { client_message_id: clientId, message: entry.message, error: 'the session has ended' });
    }
    this.outbox.clear();
    this.pendingReceipts.clear();
    /** session_ended: after service_finished / connection_cancelled, or a snapshot saying so. */
    this.emit('session_ended', { session_id: sessionId, reason });
  }

  get sessionId() {
    return this.session.id;
  }

  get sessionLive() {
    return Boolean(this.session.id) && !this.session.ended;
  }

  requireSession(type) {
    if (this.sessionLive) return true;
    this.emit('error', { type: 'error', error: 'there is no active session', request_type: type, local: true });
    return false;
  }

  noteSeq(seq) {
    if (typeof seq !== 'number') return;
    const session = this.session;
    session.seenSeqs.add(seq);
    while (session.seenSeqs.has(session.contiguousSeq + 1)) {
      session.contiguousSeq += 1;
      session.seenSeqs.delete(session.contiguousSeq);
    }
  }

  // ---- chat -----------------------------------------------------------------------------------

  /**
   * Queues a chat message and sends it when possible. Returns its client_message_id, or null
   * when the text cannot be sent. Emits chat_pending now and chat_confirmed (or chat_failed) later.
   */
  sendChat(text) {
    if (!this.requireSession('chat_message')) return null;
    const message = String(text);
    if (!message.trim()) return null;
    if ([...message].length > LIMITS.messageChars) {
      this.emit('error', { type: 'error', error: `a message can have at most ${LIMITS.messageChars} characters`, request_type: 'chat_message', local: true });
      return null;
    }
    const clientId = newClientMessageId();
    const entry = { client_message_id: clientId, message, session_id: this.session.id, inFlight: false };
    this.outbox.set(clientId, entry);
    /** chat_pending: an own message waits for the server (shown with a clock). */
    this.emit('chat_pending', { client_message_id: clientId, message, sender_type: this.role });
    this.typingSent = false; // the server clears our typing state when a message arrives
    this.transmitChat(entry);
    return clientId;
  }

  transmitChat(entry) {
    if (entry.inFlight) return;
    const sent = this.sendFrame({
      type: 'chat_message',
      session_id: entry.session_id,
      message: entry.message,
      client_message_id: entry.client_message_id,
    });
    if (sent) {
      entry.inFlight = true;
      this.inFlight.push(entry.client_message_id);
    }
  }

  /** The unconfirmed own messages, oldest first. */
  get pendingMessages() {
    return [...this.outbox.values()].map(({ client_message_id, message }) => ({ client_message_id, message }));
  }

  /** Opens a dispute on this session (section 10); a mediator from the platform will join the chat. */
  openDispute(reason) {
    return this.api.request('POST', `/api/sessions/${this.session.id}/dispute`, { reason });
  }

  startChat() {
    if (this.requireSession('start_chat')) this.send({ type: 'start_chat', session_id: this.session.id });
  }

  /** Done by the client itself as soon as a message arrives. */
  markDelivered(messageId) {
    this.raiseReceipt(messageId, 'delivered');
  }

  /** Call when the message is actually visible to the user. */
  markRead(messageId) {
    this.raiseReceipt(messageId, 'read');
  }

  raiseReceipt(messageId, status) {
    const message = this.session.messages.get(messageId);
    if (!message || message.mine) return;
    if (STATUS_RANK[message.receipt] >= STATUS_RANK[status]) return;
    message.receipt = status;
    this.sendReceipt(messageId, status);
  }

  sendReceipt(messageId, status) {
    if (!this.sessionLive) return;
    const type = status === 'read' ? 'message_read' : 'message_delivered';
    if (this.sendFrame({ type, message_id: messageId, session_id: this.session.id })) {
      this.pendingReceipts.delete(messageId);
    } else {
      // Receipts are idempotent on the server, so a late one after reconnecting is harmless.
      this.pendingReceipts.set(messageId, status);
    }
  }

  /** Typing state; the server clears it by itself after TYPING_TTL_SECS without a refresh. */
  setTyping(isTyping) {
    if (!this.sessionLive) return;
    if (!isTyping && !this.typingSent) return;
    if (this.sendFrame({ type: 'typing_indicator', session_id: this.session.id, is_typing: Boolean(isTyping) })) {
      this.typingSent = Boolean(isTyping);
    }
  }

  // ---- location, cancel, finish -------------------------------------------------------------

  /**
   * Positions are not queued: only the latest one matters, so the next move sends it.
   * `accuracy` (metres, > 0; a browser's `coords.accuracy`) is optional: a fix less accurate than
   * the server's arrival radius is not used to decide that the provider has arrived.
   */
  sendLocation(latitude, longitude, accuracy) {
    if (!this.sessionLive) return false;
    const frame = { type: 'location_update', session_id: this.session.id, latitude, longitude };
    if (Number.isFinite(accuracy) && accuracy > 0) frame.accuracy = accuracy;
    return this.sendFrame(frame);
  }

  cancel() {
    if (this.requireSession('cancel_connection')) {
      this.send({ type: 'cancel_connection', session_id: this.session.id });
    }
  }

  finish() {
    if (this.requireSession('finish_service')) {
      this.send({ type: 'finish_service', session_id: this.session.id });
    }
  }
}

/**
 * A mediator of the platform (contract section 10): lists disputes, joins one (becoming the third
 * participant of that session's chat, which it then follows like a party), resolves it.
 */
export class MediatorClient extends PartyClient {
  constructor(options) {
    super({ ...options, role: 'mediator' });
  }

  /** GET /api/disputes?status=open|joined|resolved -> [{dispute_id, session_id, reason, ...}] */
  async listDisputes(status = 'open') {
    const answer = await this.api.request('GET', `/api/disputes?status=${encodeURIComponent(status)}`);
    return answer.disputes;
  }

  /** Joins a dispute (the first mediator wins; 409 for the next) and follows its chat. */
  async joinDispute(dispute) {
    const joined = await this.api.request('POST', `/api/disputes/${dispute.dispute_id}/join`, {});
    this.disputeId = joined.dispute_id;
    this.resumeSession(dispute.session_id);
    return joined;
  }

  /** Resolves the joined dispute with a resolution the parties read; the mediator leaves the chat. */
  async resolveDispute(resolution) {
    const resolved = await this.api.request('POST', `/api/disputes/${this.disputeId}/resolve`, { resolution });
    this.endSession(this.session.id, 'resolved');
    return resolved;
  }
}

export class SeekerClient extends PartyClient {
  constructor(options) {
    super({ ...options, role: 'seeker' });
  }

  /** POST /api/work-orders; the answer ({work_id, status}) comes back here, the rest by socket. */
  createWorkOrder({ provider_id, service_type, message, latitude, longitude }) {
    return this.api.request('POST', '/api/work-orders', { provider_id, service_type, message, latitude, longitude });
  }

  /** mediums: {telegram?, whatsapp?, call?} with 10-digit numbers; makes the session active. */
  selectMediums(mediums) {
    if (this.requireSession('medium_selection')) {
      this.send({ type: 'medium_selection', session_id: this.session.id, mediums });
    }
  }

  /** Finishes the service with an optional private rating (stars 1-5, a comment). */
  finish({ rating_stars, rating_description } = {}) {
    if (!this.requireSession('finish_service')) return;
    const frame = { type: 'finish_service', session_id: this.session.id };
    if (rating_stars) frame.rating_stars = rating_stars;
    if (rating_description) frame.rating_description = rating_description;
    this.send(frame);
  }

  setSearching(is_searching, latitude, longitude) {
    return this.api.request('PUT', '/api/seeker/search', { is_searching, latitude, longitude });
  }
}

export class ProviderClient extends PartyClient {
  constructor(options) {
    super({ ...options, role: 'provider' });
  }

  /** PUT /api/provider/status: only an active provider receives work orders. */
  setActive(is_active, latitude, longitude) {
    return this.api.request('PUT', '/api/provider/status', { is_active, latitude, longitude });
  }

  /** Accepts or rejects a work_assigned order. */
  respond(work_id, accepted) {
    this.send({ type: 'work_response', work_id, accepted: Boolean(accepted) });
  }

  /** mediums: {telegram?, whatsapp?, call?} with 10-digit numbers. */
  shareMediums(mediums) {
    if (this.requireSession('medium_share')) {
      this.send({ type: 'medium_share', session_id: this.session.id, mediums });
    }
  }
}
