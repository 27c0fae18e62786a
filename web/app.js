// app.js — the demo page's UI: two independent panes (seeker, provider), each driving its own
// client from client.js. All protocol behaviour (reconnects, resume, outbox, de-duplication)
// lives in client.js; this file only turns events into DOM and clicks into client calls.

import {
  SeekerClient,
  ProviderClient,
  MediatorClient,
  mintDevToken,
  isDevMode,
  decodeTokenClaims,
  LIMITS,
} from './client.js';

/** The plane's origin. No map tiles: positions are meters east/north of this point. */
const BASE = { lat: 28.6139, lng: 77.209 };
const EARTH_RADIUS_M = 6371000; // the server's haversine radius, so distances agree
const PLANE_HALF_M = 2000;
const STEP_M = 100;

const LABEL = { seeker: 'Seeker', provider: 'Provider', mediator: 'Mediator', system: '' };
const MEDIUMS = [
  ['telegram', 'Telegram'],
  ['whatsapp', 'WhatsApp'],
  ['call', 'Call'],
];
const TICKS = {
  pending: ['sending…', 'Waiting for the server'],
  sent: ['✓', 'Sent'],
  delivered: ['✓✓', 'Delivered'],
  read: ['✓✓', 'Read'],
  failed: ['not sent', 'Not sent'],
};
const ACTIONS = {
  work_response: 'Answering the work order',
  location_update: 'Sharing your position',
  medium_selection: 'Choosing contact mediums',
  medium_share: 'Sharing your contacts',
  start_chat: 'Starting the chat',
  chat_message: 'Sending a message',
  message_delivered: 'A delivery receipt',
  message_read: 'A read receipt',
  typing_indicator: 'The typing indicator',
  cancel_connection: 'Cancelling the connection',
  finish_service: 'Finishing the service',
  resume: 'Catching up after reconnecting',
  ping: 'The heartbeat',
};

export function planeToLatLng({ x, y }) {
  const toDegrees = 180 / Math.PI;
  return {
    latitude: BASE.lat + (y / EARTH_RADIUS_M) * toDegrees,
    longitude: BASE.lng + (x / (EARTH_RADIUS_M * Math.cos((BASE.lat * Math.PI) / 180))) * toDegrees,
  };
}

/** Creates an element: h('div', {class: 'x', onclick}, 'text', child). */
function h(tag, attrs = {}, ...children) {
  const svg = ['svg', 'line', 'circle', 'text', 'g', 'rect'].includes(tag);
  const el = svg ? document.createElementNS('http://www.w3.org/2000/svg', tag) : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'text') el.textContent = value;
    else el.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) el.append(child);
  }
  return el;
}

function formatMediums(mediums) {
  // Always in the same order: the server stores them as a JSON object, whose key order varies.
  const known = MEDIUMS.filter(([key]) => mediums?.[key]).map(([key, name]) => `${name} ${mediums[key]}`);
  const others = Object.keys(mediums ?? {}).filter((key) => !MEDIUMS.some(([k]) => k === key)).map((key) => `${key} ${mediums[key]}`);
  const all = [...known, ...others];
  return all.length ? all.join(' · ') : 'none';
}

function timeOf(timestamp) {
  const date = timestamp ? new Date(timestamp) : new Date();
  return date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

/** A 2-D plane with one draggable marker; arrow keys move it (Shift: farther). */
function createPlane({ label, start, onMove }) {
  let position = { ...start };
  const marker = h('circle', { r: 110, class: 'marker' });
  const markerLabel = h('text', { class: 'marker-label', 'text-anchor': 'middle' }, 'you');
  const grid = [];
  for (let v = -PLANE_HALF_M; v <= PLANE_HALF_M; v += 500) {
    grid.push(h('line', { x1: v, y1: -PLANE_HALF_M, x2: v, y2: PLANE_HALF_M, class: v === 0 ? 'axis' : 'grid' }));
    grid.push(h('line', { x1: -PLANE_HALF_M, y1: v, x2: PLANE_HALF_M, y2: v, class: v === 0 ? 'axis' : 'grid' }));
  }
  const svg = h(
    'svg',
    {
      class: 'plane',
      viewBox: `${-PLANE_HALF_M} ${-PLANE_HALF_M} ${2 * PLANE_HALF_M} ${2 * PLANE_HALF_M}`,
      tabindex: 0,
      role: 'application',
    },
    h('rect', { x: -PLANE_HALF_M, y: -PLANE_HALF_M, width: 2 * PLANE_HALF_M, height: 2 * PLANE_HALF_M, class: 'plane-bg' }),
    grid,
    h('circle', { r: 50, class: 'base' }),
    h('text', { x: 90, y: 260, class: 'base-label' }, 'base'),
    marker,
    markerLabel,
  );
  const readout = h('p', { class: 'plane-readout' });

  function render() {
    marker.setAttribute('cx', position.x);
    marker.setAttribute('cy', -position.y);
    markerLabel.setAttribute('x', position.x);
    markerLabel.setAttribute('y', -position.y - 160);
    const { latitude, longitude } = planeToLatLng(position);
    readout.textContent = `${label}: ${position.x} m east, ${position.y} m north of base (${latitude.toFixed(5)}, ${longitude.toFixed(5)})`;
    svg.setAttribute('aria-label', `${label} position: ${position.x} m east, ${position.y} m north. Arrow keys move ${STEP_M} m.`);
  }

  function moveTo(x, y) {
    const clamp = (v) => Math.max(-PLANE_HALF_M, Math.min(PLANE_HALF_M, Math.round(v / 10) * 10));
    const next = { x: clamp(x), y: clamp(y) };
    if (next.x === position.x && next.y === position.y) return;
    position = next;
    render();
    onMove(position);
  }

  svg.addEventListener('keydown', (event) => {
    const step = event.shiftKey ? 5 * STEP_M : STEP_M;
    const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, step], ArrowDown: [0, -step] };
    const move = moves[event.key];
    if (!move) return;
    event.preventDefault();
    moveTo(position.x + move[0], position.y + move[1]);
  });
  const pointTo = (event) => {
    const point = new DOMPoint(event.clientX, event.clientY).matrixTransform(svg.getScreenCTM().inverse());
    moveTo(point.x, -point.y);
  };
  svg.addEventListener('pointerdown', (event) => {
    svg.setPointerCapture(event.pointerId);
    svg.focus();
    pointTo(event);
  });
  svg.addEventListener('pointermove', (event) => {
    if (svg.hasPointerCapture(event.pointerId)) pointTo(event);
  });

  render();
  return { element: h('div', { class: 'plane-wrap' }, svg, readout), get position() { return position; } };
}

/** Calls fn at most every `ms`, always with the latest arguments last. */
function throttle(fn, ms) {
  let last = 0;
  let timer = null;
  let pending = null;
  return (...args) => {
    pending = args;
    const wait = last + ms - Date.now();
    if (wait <= 0) {
      last = Date.now();
      fn(...pending);
    } else if (!timer) {
      timer = setTimeout(() => {
        timer = null;
        last = Date.now();
        fn(...pending);
      }, wait);
    }
  };
}

// ---- notifications (development mode): what a push would have said ---------------------------
// The notify worker tells the operator's backend, by webhook, which offline user needs a push
// (contract section 13). In development mode the gateway is that backend (POST /dev/webhooks) and
// lists what it received for the signed-in user at GET /dev/notifications; this panel polls it.
const NOTIFICATION_POLL_MS = 2000;
const ENDINGS = { cancelled: 'cancelled', completed: 'finished' };

/** A push's short text for one webhook event ({type, data}). */
export function notificationText({ type, data = {} }) {
  const order = data.work_id ? ` #${data.work_id}` : '';
  const session = data.session_id ? ` (session ${String(data.session_id).slice(0, 8)}…)` : '';
  switch (type) {
    case 'work.assigned': return `New work order${order}`;
    case 'work.answered': return `Your work order${order} was ${data.status ?? 'answered'}`;
    case 'message.unread': return `${data.unread_count > 1 ? `${data.unread_count} unread messages` : 'Unread message'} in order${order}${session}${data.preview ? `: “${data.preview}”` : ''}`;
    case 'session.provider_arrived': return `Provider arrived${data.distance_meters !== undefined ? ` (${Math.round(data.distance_meters)} m away)` : ''}`;
    case 'session.ended': return `Order${order} ${ENDINGS[data.connection_state] ?? 'ended'} by the ${data.ended_by ?? 'other party'}`;
    case 'dispute.opened': return `Dispute opened by the ${data.opened_by ?? 'other party'} on order${order}`;
    default: return type;
  }
}

/** The panel; start(api) polls with that user's RestApi until stop(). */
function createNotificationsPanel() {
  const list = h('ol', { class: 'notifications-list', 'aria-live': 'polite' });
  const empty = h('p', { class: 'hint notifications-empty' }, 'Nothing yet: pushes go to users with no open connection.');
  const element = h('section', { class: 'notifications', hidden: true },
    h('h3', {}, 'Notifications (what a push would have said)'), empty, list);
  let timer = null;
  let api = null;
  let shown = '';

  async function poll() {
    const polling = api;
    try {
      const { notifications } = await polling.request('GET', '/dev/notifications');
      if (polling !== api) return;
      const ids = notifications.map((n) => n.webhook_id).join(',');
      if (ids === shown) return;
      shown = ids;
      empty.hidden = notifications.length > 0;
      list.replaceChildren(...notifications.map((n) => h('li', { class: 'notification', 'data-type': n.type, 'data-webhook-id': n.webhook_id },
        h('span', { class: 'type' }, n.type),
        h('span', { class: 'text' }, notificationText(n)),
        h('time', {}, timeOf(n.timestamp)))));
    } catch {
      // A development convenience: the next poll tries again.
    } finally {
      if (polling === api) timer = setTimeout(poll, NOTIFICATION_POLL_MS);
    }
  }

  return {
    element,
    start(restApi) {
      this.stop();
      api = restApi;
      element.hidden = false;
      poll();
    },
    stop() {
      clearTimeout(timer);
      api = null;
      shown = '';
      list.replaceChildren();
      empty.hidden = false;
      element.hidden = true;
    },
  };
}

/** One party's pane: sign-in, its role's controls, the session and the chat. */
function createPane(root, role, { devMode, defaults }) {
  const other = role === 'seeker' ? 'provider' : 'seeker';
  let client = null;
  let userId = null;
  let token = null;
  let reconnectTicker = null;

  // ---- notices: every error is said in words here -------------------------------------------
  const notices = h('ul', { class: 'notices', 'aria-live': 'polite' });
  function notify(kind, text) {
    const item = h('li', { class: `notice ${kind}` }, h('span', { class: 'notice-text' }, text),
      h('button', { class: 'dismiss', type: 'button', 'aria-label': 'Dismiss', onclick: () => item.remove() }, '×'));
    notices.prepend(item);
    while (notices.children.length > 6) notices.lastElementChild.remove();
    if (kind !== 'error') setTimeout(() => item.remove(), 8000);
  }
  function showErrorFrame(frame) {
    const action = ACTIONS[frame.request_type] ?? (frame.request_type ? `“${frame.request_type}”` : null);
    notify('error', action ? `${action} failed: ${frame.error}` : `The server says: ${frame.error}`);
  }

  // ---- header and sign-in --------------------------------------------------------------------
  const connBadge = h('span', { class: 'conn offline' }, 'Offline');
  const who = h('span', { class: 'who' });
  const header = h('header', { class: 'pane-header' }, h('h2', {}, LABEL[role]), who, connBadge);

  const userInput = h('input', { class: 'user-id', value: defaults.userId, autocomplete: 'off', spellcheck: 'false', 'aria-label': `${LABEL[role]} user id` });
  const devSignIn = h('form', { class: 'signin-dev', onsubmit: (event) => { event.preventDefault(); signInDev(); } },
    h('label', {}, 'User id ', userInput),
    h('button', { type: 'submit', class: 'primary' }, `Sign in as ${role}`));
  const tokenInput = h('textarea', { class: 'token-input', rows: 3, spellcheck: 'false', placeholder: `Paste a ${role} JWT here`, 'aria-label': `${LABEL[role]} token` });
  const pasteForm = h('form', { class: 'signin-token', onsubmit: (event) => { event.preventDefault(); start(tokenInput.value.trim()); } },
    h('label', {}, `Paste your ${role} token`, tokenInput),
    h('button', { type: 'submit' }, 'Use this token'));
  const signin = h('section', { class: 'signin' });
  if (devMode) {
    signin.append(devSignIn, h('details', { class: 'own-token' }, h('summary', {}, 'Use your own token instead'), pasteForm));
  } else {
    signin.append(
      h('p', { class: 'hint' }, 'Development mode is off, so this page cannot mint tokens. Paste a token signed with the gateway’s JWT_SECRET (scripts/stack.sh prints demo tokens; target/debug/token makes more).'),
      pasteForm,
    );
  }
  const signOutButton = h('button', { type: 'button', class: 'link', onclick: () => signOut() }, 'Sign out');
  const reconnectButton = h('button', { type: 'button', class: 'reconnect', hidden: true, onclick: () => goOnlineAgain() }, 'Go online again');

  // ---- position ------------------------------------------------------------------------------
  const sendPosition = throttle((position) => {
    if (!client?.sessionLive) return;
    const { latitude, longitude } = planeToLatLng(position);
    client.sendLocation(latitude, longitude);
  }, 250);
  const plane = createPlane({ label: role === 'seeker' ? 'You (seeker)' : 'You (provider)', start: defaults.position, onMove: sendPosition });
  const positionSection = h('section', { class: 'position', hidden: true },
    h('h3', {}, 'Where you are'),
    h('p', { class: 'hint' }, 'Drag the dot or focus the plane and use the arrow keys (Shift: 500 m).'),
    plane.element);

  // ---- role-specific controls --------------------------------------------------------------
  // provider: availability and incoming orders
  const availabilityText = h('p', { class: 'availability-text' }, 'Inactive: you receive no work orders.');
  const activeButton = h('button', { type: 'button', class: 'primary go-active', onclick: () => toggleActive() }, 'Go active');
  let isActive = false;
  const orderList = h('ul', { class: 'orders-list' });
  const orderCards = new Map();
  // seeker: the work order form
  const providerInput = h('input', { class: 'provider-id', value: defaults.providerId ?? '', autocomplete: 'off', spellcheck: 'false' });
  let providerEdited = false;
  providerInput.addEventListener('input', () => { providerEdited = true; });
  const serviceInput = h('input', { class: 'service-type', value: 'Plumbing', list: 'service-types' });
  const orderMessage = h('input', { class: 'order-message', value: 'The kitchen sink is leaking' });
  const orderButton = h('button', { type: 'submit', class: 'primary send-order' }, 'Send work order');
  const orderStatus = h('p', { class: 'order-status' });
  const orderForm = h('form', { class: 'order-form', onsubmit: (event) => { event.preventDefault(); sendOrder(); } },
    h('label', {}, 'Provider id ', providerInput),
    h('label', {}, 'Service ', serviceInput),
    h('datalist', { id: 'service-types' }, ['Plumbing', 'Electrician', 'Cleaning', 'Carpentry'].map((v) => h('option', { value: v }))),
    h('label', {}, 'Message ', orderMessage),
    orderButton);

  const roleSection = role === 'provider'
    ? h('section', { class: 'availability', hidden: true },
      h('h3', {}, 'Availability'), availabilityText, activeButton,
      h('h3', {}, 'Incoming work'), orderList)
    : h('section', { class: 'order', hidden: true }, h('h3', {}, 'Ask for a service'), orderForm, orderStatus);

  // ---- the session ---------------------------------------------------------------------------
  const sessionTitle = h('h3', {}, 'Session');
  const sessionState = h('p', { class: 'session-state' });
  const distance = h('p', { class: 'distance', 'aria-live': 'polite' }, '—');
  // Section 14: the seeker's banner when the provider arrives (the server says it once per approach).
  const arrivedText = h('span', { class: 'notice-text' });
  const arrivedBanner = h('p', { class: 'notice arrived', role: 'status', hidden: true }, arrivedText,
    h('button', { type: 'button', class: 'link close-arrived', 'aria-label': 'Hide', onclick: () => { arrivedBanner.hidden = true; } }, 'OK'));
  const mediumRows = MEDIUMS.map(([key, name]) => {
    const check = h('input', { type: 'checkbox', name: key, checked: key !== 'whatsapp' });
    const number = h('input', { class: 'medium-number', name: `${key}-number`, value: defaults.mobile, inputmode: 'numeric', maxlength: 10, 'aria-label': `${name} number` });
    return { key, check, number, element: h('label', { class: 'medium-row' }, check, ` ${name} `, number) };
  });
  const mediumsButton = h('button', { type: 'submit', class: 'primary share-mediums' }, role === 'seeker' ? 'Share my contacts' : 'Share my contacts');
  const myMediums = h('p', { class: 'my-mediums' }, 'Not shared yet.');
  const theirMediums = h('p', { class: 'their-mediums' }, `The ${other}'s contacts: not shared yet.`);
  const mediumsForm = h('form', { class: 'mediums-form', onsubmit: (event) => { event.preventDefault(); shareMediums(); } },
    h('p', { class: 'hint' }, role === 'seeker'
      ? 'Choose how the provider may contact you (this starts the session):'
      : 'Share how the seeker may contact you:'),
    mediumRows.map((row) => row.element), mediumsButton);

  const chatLog = h('ol', { class: 'chat-log', 'aria-label': 'Chat messages' });
  const typing = h('p', { class: 'typing', hidden: true }, `${LABEL[other]} is typing…`);
  // Section 8: who else is online (the other party, and a mediator who joined a dispute).
  const presence = h('p', { class: 'presence', 'aria-live': 'polite' });
  const online = {};
  function showPresence() {
    presence.textContent = Object.entries(online)
      .map(([who, isOnline]) => `${LABEL[who]} ${isOnline ? 'online' : 'offline'}`)
      .join(' · ');
  }
  const chatInput = h('input', { class: 'chat-input', placeholder: 'Write a message', maxlength: LIMITS.messageChars, autocomplete: 'off', 'aria-label': 'Message' });
  const chatForm = h('form', { class: 'chat-form', onsubmit: (event) => { event.preventDefault(); sendChat(); } },
    chatInput, h('button', { type: 'submit', class: 'send-chat' }, 'Send'));
  const chat = h('div', { class: 'chat' }, h('h4', {}, 'Anonymous chat'), chatLog, typing, chatForm);

  let stars = 0;
  const starButtons = [1, 2, 3, 4, 5].map((n) => h('button', {
    type: 'button', class: 'star', 'aria-label': `${n} star${n > 1 ? 's' : ''}`, 'aria-pressed': 'false',
    onclick: () => setStars(stars === n ? 0 : n),
  }, '★'));
  const ratingComment = h('input', { class: 'rating-comment', placeholder: 'A few words about the service (optional)' });
  const finishButton = h('button', { type: 'button', class: 'primary finish', onclick: () => finish() }, 'Finish service');
  const cancelButton = h('button', { type: 'button', class: 'danger cancel', onclick: () => client?.cancel() }, 'Cancel connection');
  const finishBox = role === 'seeker'
    ? h('fieldset', { class: 'rating' }, h('legend', {}, 'Rate the provider (private, optional)'),
      h('div', { class: 'stars' }, starButtons), ratingComment)
    : null;
  // Section 10: a party asks the platform for a mediator.
  const disputeReason = h('input', { class: 'dispute-reason', placeholder: 'What went wrong?', maxlength: 1000, 'aria-label': 'Dispute reason' });
  const disputeButton = h('button', { type: 'submit', class: 'open-dispute' }, 'Open a dispute');
  const disputeForm = h('form', { class: 'dispute-form', onsubmit: (event) => { event.preventDefault(); openDispute(); } },
    disputeReason, disputeButton);
  async function openDispute() {
    const reason = disputeReason.value.trim();
    if (!reason) { notify('error', 'Say what went wrong: a dispute needs a reason.'); return; }
    try {
      await client.openDispute(reason);
      disputeReason.value = '';
      disputeForm.hidden = true;
      notify('info', 'Dispute opened: a mediator from the platform will join the chat.');
    } catch (error) {
      notify('error', `Opening a dispute failed: ${error.message} (HTTP ${error.status})`);
    }
  }
  const actions = h('div', { class: 'session-actions' }, finishBox, h('div', { class: 'buttons' }, finishButton, cancelButton), disputeForm);
  const ended = h('p', { class: 'ended', hidden: true, role: 'status' });
  const sessionLive = h('div', { class: 'session-live' },
    arrivedBanner,
    h('div', { class: 'distance-box' }, h('span', { class: 'hint' }, `Distance to the ${other}`), distance),
    h('div', { class: 'mediums' }, mediumsForm, myMediums, theirMediums),
    presence, chat, actions);
  const sessionSection = h('section', { class: 'session', hidden: true }, sessionTitle, sessionState, ended, sessionLive);

  // ---- the inbox (section 9): this user's conversations, with unread counts -------------------
  const inboxList = h('ul', { class: 'inbox-list' });
  const inboxSection = h('section', { class: 'inbox', hidden: true },
    h('h3', {}, 'Conversations ', h('button', { type: 'button', class: 'link refresh-inbox', onclick: () => loadInbox() }, 'Refresh')),
    inboxList);
  async function loadInbox() {
    if (!client) return;
    try {
      const { conversations } = await client.api.request('GET', '/api/conversations?limit=10');
      inboxList.replaceChildren(...conversations.map((conversation) => h('li', { class: 'conversation' },
        h('span', { class: 'title' }, `${conversation.service_type} · order #${conversation.work_id} · ${conversation.connection_state}`),
        conversation.unread_count > 0 ? h('span', { class: 'badge unread', title: 'unread messages' }, String(conversation.unread_count)) : null,
        conversation.dispute ? h('span', { class: 'badge dispute' }, `dispute ${conversation.dispute.status}`) : null,
        h('span', { class: 'preview' }, conversation.last_message
          ? `${LABEL[conversation.last_message.sender_type] || 'Notice'}: ${conversation.last_message.preview}`
          : 'No messages yet'))));
      inboxSection.hidden = conversations.length === 0;
    } catch {
      // The inbox is a convenience: the next event refreshes it.
    }
  }
  let inboxTimer = null;
  function refreshInboxSoon() {
    clearTimeout(inboxTimer);
    inboxTimer = setTimeout(loadInbox, 400);
  }

  const notifications = createNotificationsPanel();

  root.append(header, notices, signin,
    h('div', { class: 'account', hidden: true }, reconnectButton, signOutButton),
    roleSection, positionSection, sessionSection, inboxSection, notifications.element);

  // ---- sign in / out -------------------------------------------------------------------------
  async function signInDev() {
    const id = userInput.value.trim();
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(id)) {
      notify('error', 'A user id is 1 to 64 letters, digits, “-” or “_”.');
      return;
    }
    try {
      const minted = await mintDevToken({ user_id: id, role, name: `Demo ${LABEL[role]}` });
      if (!minted) {
        notify('error', 'Development mode is off on this server: paste a token instead.');
        return;
      }
      start(minted);
    } catch (error) {
      notify('error', `Signing in failed: ${error.message}`);
    }
  }

  async function start(newToken) {
    const claims = decodeTokenClaims(newToken);
    if (!claims?.sub) {
      notify('error', 'That does not look like a token (a JWT has three parts separated by dots).');
      return;
    }
    if (claims.role !== role) {
      notify('error', `That token is for a ${claims.role ?? 'user without a role'}; this pane needs a ${role}'s token.`);
      return;
    }
    const candidate = role === 'seeker' ? new SeekerClient({ token: newToken }) : new ProviderClient({ token: newToken });
    try {
      // A browser cannot see why a WebSocket upgrade failed, so ask REST first: a refused token
      // would otherwise look like an endless "reconnecting".
      await candidate.api.request('GET', '/api/me/profile');
    } catch (error) {
      if (error.status === 401 || error.status === 403) {
        notify('error', `The server refused this token: ${error.message} (HTTP ${error.status})`);
        return;
      }
      // Anything else (a worker restarting...) is the socket's business to retry.
    }
    token = newToken;
    userId = claims.sub;
    client = candidate;
    wire(client);
    who.textContent = `${claims.name ?? userId} (${userId})`;
    signin.hidden = true;
    root.querySelector('.account').hidden = false;
    roleSection.hidden = false;
    refreshInboxSoon();
    positionSection.hidden = false;
    if (devMode) notifications.start(client.api);
    client.connect();
    const saved = localStorage.getItem(storageKey());
    if (saved) client.resumeSession(saved);
    pane.onSignedIn?.(userId);
  }

  function signOut() {
    client?.disconnect();
    client = null;
    token = null;
    userId = null;
    who.textContent = '';
    signin.hidden = false;
    root.querySelector('.account').hidden = true;
    roleSection.hidden = true;
    positionSection.hidden = true;
    sessionSection.hidden = true;
    notifications.stop();
    clearInterval(reconnectTicker);
    setBadge('offline', 'Offline');
  }

  function goOnlineAgain() {
    reconnectButton.hidden = true;
    sessionSection.hidden = true;
    client.connect();
  }

  const storageKey = () => `marketplace.session.${role}.${userId}`;

  // ---- client events -------------------------------------------------------------------------
  function wire(c) {
    const mine = (handler) => (payload) => { if (client === c) handler(payload); };
    c.on('state', mine(onState));
    c.on('error', mine(showErrorFrame));
    c.on('session', mine(({ session_id }) => openSession(session_id)));
    c.on('session_state', mine(onSessionState));
    c.on('session_ended', mine(onSessionEnded));
    for (const type of ['session', 'session_ended', 'chat_message', 'system_message', 'message_status_update']) {
      c.on(type, mine(refreshInboxSoon));
    }
    c.on('work_assigned', mine(onWorkAssigned));
    c.on('work_accepted', mine(onWorkAccepted));
    c.on('work_response', mine(onWorkResponse));
    c.on('distance_update', mine((f) => { distance.textContent = f.distance_formatted; }));
    c.on('provider_arrived', mine(onProviderArrived));
    c.on('mediums_selected', mine((f) => { myMediums.textContent = `You shared: ${formatMediums(f.mediums)}`; setState(f.connection_state); }));
    c.on('mediums_shared', mine((f) => { myMediums.textContent = `You shared: ${formatMediums(f.mediums)}`; }));
    c.on('seeker_mediums_selected', mine((f) => { theirMediums.textContent = `The seeker's contacts: ${formatMediums(f.mediums)}`; setState(f.connection_state); }));
    c.on('provider_mediums_shared', mine((f) => { theirMediums.textContent = `The provider's contacts: ${formatMediums(f.mediums)}`; }));
    c.on('chat_ready', mine(() => chat.classList.add('open')));
    c.on('chat_message', mine(onChatMessage));
    c.on('system_message', mine(onSystemMessage));
    c.on('presence', mine(({ role: who, online: isOnline }) => { online[who] = isOnline; showPresence(); }));
    c.on('chat_pending', mine(onChatPending));
    c.on('chat_confirmed', mine(onChatConfirmed));
    c.on('chat_failed', mine(onChatFailed));
    c.on('message_status_update', mine(({ message_id, status }) => {
      const el = chatLog.querySelector(`[data-message-id="${message_id}"]`);
      if (el) setTicks(el, status);
    }));
    c.on('typing_indicator', mine(onTyping));
    c.on('service_finished', mine((f) => notify('info', f.message)));
    c.on('connection_cancelled', mine((f) => notify('info', f.message)));
  }

  function setBadge(kind, text) {
    connBadge.className = `conn ${kind}`;
    connBadge.textContent = text;
  }

  function onState({ state, attempt, retryAt, reason }) {
    clearInterval(reconnectTicker);
    if (state === 'connecting') setBadge('connecting', 'Connecting…');
    else if (state === 'open') setBadge('online', 'Online');
    else if (state === 'closed') {
      setBadge('offline', reason === 'session ended' ? 'Offline: the server closed the connection (session over)' : 'Offline');
      if (reason === 'session ended') reconnectButton.hidden = false;
    } else if (state === 'reconnecting') {
      const show = () => {
        const seconds = retryAt ? Math.max(0, Math.ceil((retryAt - Date.now()) / 1000)) : 0;
        setBadge('reconnecting', seconds > 0 ? `Reconnecting in ${seconds} s… (attempt ${attempt})` : `Reconnecting… (attempt ${attempt})`);
      };
      show();
      if (retryAt) reconnectTicker = setInterval(show, 500);
    }
    if (state === 'open' && client?.sessionLive) setChatEnabled(true);
  }

  // ---- provider: availability and work orders ------------------------------------------------
  async function toggleActive() {
    const { latitude, longitude } = planeToLatLng(plane.position);
    try {
      await client.setActive(!isActive, latitude, longitude);
      setActive(!isActive);
    } catch (error) {
      notify('error', `Changing your availability failed: ${error.message}`);
    }
  }

  function setActive(active, text) {
    isActive = active;
    activeButton.textContent = active ? 'Go inactive' : 'Go active';
    availabilityText.textContent = text ?? (active
      ? 'You are active: seekers can send you work orders.'
      : 'Inactive: you receive no work orders.');
  }

  function onWorkAssigned(frame) {
    if (orderCards.has(frame.work_id)) return; // sent again after a reconnect
    const accept = h('button', { type: 'button', class: 'primary accept', onclick: () => respond(true) }, 'Accept');
    const reject = h('button', { type: 'button', class: 'reject', onclick: () => respond(false) }, 'Reject');
    const status = h('p', { class: 'order-card-status' });
    const card = h('li', { class: 'order-card', 'data-work-id': frame.work_id },
      h('p', { class: 'order-title' }, `Order #${frame.work_id} · ${frame.service_type}`),
      h('p', {}, `From ${frame.seeker_name ?? 'a seeker'}${frame.distance ? ` · ${frame.distance} away` : ''}`),
      frame.message ? h('blockquote', {}, frame.message) : null,
      h('div', { class: 'buttons' }, accept, reject), status);
    function respond(accepted) {
      if (!client.send({ type: 'work_response', work_id: frame.work_id, accepted })) return;
      accept.disabled = reject.disabled = true;
      status.textContent = accepted ? 'Accepting…' : 'Rejected.';
      if (!accepted) setTimeout(() => { card.remove(); orderCards.delete(frame.work_id); }, 4000);
    }
    orderCards.set(frame.work_id, { card, status, accept, reject });
    orderList.prepend(card);
  }

  function onWorkAccepted(frame) {
    localStorage.setItem(storageKey(), frame.session_id);
    if (role === 'provider') {
      const entry = orderCards.get(frame.work_id);
      if (entry) {
        entry.status.textContent = 'Accepted: the session has started.';
        entry.accept.disabled = entry.reject.disabled = true;
      }
      setActive(false, 'In a session: you receive no new work orders.');
    } else {
      orderStatus.textContent = `The provider accepted order #${frame.work_id}.`;
      orderButton.disabled = true;
    }
    setState(frame.connection_state);
    sendPosition(plane.position);
  }

  function onWorkResponse(frame) {
    if (frame.accepted) return;
    orderStatus.textContent = `${frame.provider_name ?? 'The provider'} declined order #${frame.work_id} (${frame.service_type}).`;
    notify('info', `Order #${frame.work_id} was declined.`);
    orderButton.disabled = false;
  }

  // ---- seeker: the work order ----------------------------------------------------------------
  async function sendOrder() {
    const provider_id = providerInput.value.trim();
    const service_type = serviceInput.value.trim();
    if (!provider_id || !service_type) {
      notify('error', 'Enter the provider id and a service.');
      return;
    }
    const { latitude, longitude } = planeToLatLng(plane.position);
    orderButton.disabled = true;
    try {
      const answer = await client.createWorkOrder({ provider_id, service_type, message: orderMessage.value.trim() || undefined, latitude, longitude });
      orderStatus.textContent = `Order #${answer.work_id} sent to ${provider_id}: waiting for an answer.`;
    } catch (error) {
      orderButton.disabled = false;
      notify('error', `Sending the work order failed: ${error.message}${error.status ? ` (HTTP ${error.status})` : ''}`);
    }
  }

  // ---- the session ---------------------------------------------------------------------------
  function openSession(sessionId) {
    sessionSection.hidden = false;
    sessionSection.dataset.sessionId = sessionId;
    sessionTitle.textContent = `Session ${sessionId.slice(0, 8)}`;
    ended.hidden = true;
    arrivedBanner.hidden = true;
    for (const el of [mediumsForm, chatForm, actions]) el.hidden = false;
    sessionState.hidden = false;
    distance.textContent = '—';
    myMediums.textContent = 'Not shared yet.';
    theirMediums.textContent = `The ${other}'s contacts: not shared yet.`;
    chatLog.replaceChildren();
    typing.hidden = true;
    chat.classList.remove('open');
    setStars(0);
    ratingComment && (ratingComment.value = '');
    for (const el of sessionLive.querySelectorAll('button, input')) el.disabled = false;
    setState('waiting');
  }

  function setState(connectionState) {
    const texts = {
      waiting: role === 'seeker'
        ? 'Waiting: choose how the provider may contact you to start.'
        : 'Waiting for the seeker to choose contact mediums.',
      active: 'Active: you are connected.',
      completed: 'Finished.',
      cancelled: 'Cancelled.',
    };
    sessionSection.dataset.state = connectionState;
    sessionState.textContent = texts[connectionState] ?? connectionState;
  }

  function onSessionState(snapshot) {
    setState(snapshot.connection_state);
    if (snapshot.presence) {
      for (const [who, isOnline] of Object.entries(snapshot.presence)) if (who !== role) online[who] = isOnline;
      showPresence();
    }
    if (snapshot.distance_formatted) distance.textContent = snapshot.distance_formatted;
    const mineKey = role === 'seeker' ? 'seeker_mediums' : 'provider_mediums';
    const theirsKey = role === 'seeker' ? 'provider_mediums' : 'seeker_mediums';
    if (snapshot[mineKey]) myMediums.textContent = `You shared: ${formatMediums(snapshot[mineKey])}`;
    if (snapshot[theirsKey]) theirMediums.textContent = `The ${other}'s contacts: ${formatMediums(snapshot[theirsKey])}`;
    if (role === 'seeker' && snapshot.connection_state !== 'completed' && snapshot.connection_state !== 'cancelled') {
      orderButton.disabled = true;
    }
  }

  /** The seeker sees a banner; the provider only a note (the chat shows the system message). */
  function onProviderArrived() {
    if (role !== 'seeker') {
      notify('info', 'You have arrived: the seeker has been told.');
      return;
    }
    // No distance here: the distance box shows the one of the last update, and two numbers that
    // disagree (the arrival's fix moved less than DISTANCE_MIN_MOVE_M) would only confuse.
    arrivedText.textContent = 'Your provider has arrived.';
    arrivedBanner.hidden = false;
  }

  async function onSessionEnded({ session_id, reason }) {
    localStorage.removeItem(storageKey());
    arrivedBanner.hidden = true;
    setChatEnabled(false);
    typing.hidden = true;
    // What was said and shared stays readable; only the controls go.
    for (const el of [mediumsForm, chatForm, actions]) el.hidden = true;
    for (const el of sessionLive.querySelectorAll('button, input')) el.disabled = true;
    let text;
    let snapshot = null;
    try {
      snapshot = await client.api.getSession(session_id);
    } catch {
      // The banner can do without the details.
    }
    const finished = reason === 'service_finished' || reason === 'completed' || snapshot?.connection_state === 'completed';
    setState(finished ? 'completed' : 'cancelled');
    if (finished) {
      const by = snapshot?.completed_by;
      text = by === role ? 'Service finished. Thank you!' : by ? `The ${by} marked the service as finished.` : 'Service finished.';
      if (role === 'seeker' && snapshot?.rating_stars) {
        const comment = snapshot.rating_description ? ` — “${snapshot.rating_description}”` : '';
        text += ` You rated the provider ${snapshot.rating_stars} ★${comment}`;
        if (!/[.!?]”?$/.test(text)) text += '.';
      }
    } else {
      const by = snapshot?.cancelled_by;
      text = by === role ? 'You cancelled the connection.' : by ? `The ${by} cancelled the connection.` : 'The connection was cancelled.';
    }
    ended.textContent = text;
    ended.hidden = false;
    if (role === 'seeker') {
      orderButton.disabled = false;
      orderStatus.textContent = snapshot?.work_id ? `Order #${snapshot.work_id} is over: you can send a new one.` : 'You can send a new order.';
    }
    if (role === 'provider') setActive(false);
  }

  function shareMediums() {
    const mediums = {};
    for (const row of mediumRows) {
      if (!row.check.checked) continue;
      const number = row.number.value.replace(/\s+/g, '');
      if (!/^\d{10}$/.test(number)) {
        notify('error', `The ${row.key} number must be exactly 10 digits.`);
        return;
      }
      mediums[row.key] = number;
    }
    if (role === 'seeker') client.selectMediums(mediums);
    else client.shareMediums(mediums);
  }

  function setStars(n) {
    stars = n;
    starButtons.forEach((button, i) => {
      button.classList.toggle('on', i < n);
      button.setAttribute('aria-pressed', String(i + 1 === n));
    });
  }

  function finish() {
    if (role === 'seeker') client.finish({ rating_stars: stars || undefined, rating_description: ratingComment.value.trim() || undefined });
    else client.finish();
  }

  // ---- chat ----------------------------------------------------------------------------------
  function setChatEnabled(enabled) {
    chatInput.disabled = !enabled;
    chatForm.querySelector('button').disabled = !enabled;
  }

  function setTicks(el, status) {
    el.dataset.status = status;
    const ticks = el.querySelector('.ticks');
    if (!ticks) return;
    const [symbol, label] = TICKS[status] ?? TICKS.sent;
    ticks.textContent = symbol;
    ticks.title = label;
    ticks.setAttribute('aria-label', label);
  }

  /** What a message shows: its text, or for other kinds a link (location, file) or the image. */
  function body({ kind, message, latitude, longitude, url, name }) {
    const caption = message ? h('span', { class: 'caption' }, message) : null;
    if (kind === 'location' && typeof latitude === 'number' && typeof longitude === 'number') {
      const href = `https://www.openstreetmap.org/?mlat=${latitude}&mlon=${longitude}#map=17/${latitude}/${longitude}`;
      return h('span', { class: 'text' }, h('a', { href, target: '_blank', rel: 'noopener' }, `📍 ${latitude.toFixed(5)}, ${longitude.toFixed(5)}`), caption);
    }
    if ((kind === 'image' || kind === 'file') && typeof url === 'string' && url.startsWith('https://')) {
      const link = h('a', { href: url, target: '_blank', rel: 'noopener noreferrer' }, kind === 'image' ? h('img', { src: url, alt: name || 'image', class: 'attachment' }) : `📎 ${name || url}`);
      return h('span', { class: 'text' }, link, caption);
    }
    return h('span', { class: 'text' }, message);
  }

  function bubble({ mine, sender_type, message, timestamp, status, kind, latitude, longitude, url, name }) {
    const el = h('li', { class: `msg ${mine ? 'mine' : 'theirs'}` },
      h('span', { class: 'sender' }, LABEL[sender_type]),
      body({ kind, message, latitude, longitude, url, name }),
      h('span', { class: 'meta' }, h('time', {}, timeOf(timestamp)), mine ? h('span', { class: 'ticks' }) : null));
    if (mine) setTicks(el, status);
    return el;
  }

  /** Keeps the log in the server's order (seq); unconfirmed own messages stay at the end. */
  function place(el, seq) {
    const atBottom = chatLog.scrollHeight - chatLog.scrollTop - chatLog.clientHeight < 40;
    el.dataset.seq = seq ?? '';
    let before = null;
    for (const child of chatLog.children) {
      if (child === el) continue;
      const childSeq = child.dataset.seq ? Number(child.dataset.seq) : Infinity;
      if (seq !== undefined && childSeq > seq) { before = child; break; }
    }
    chatLog.insertBefore(el, before);
    if (atBottom || el.classList.contains('mine')) chatLog.scrollTop = chatLog.scrollHeight;
  }

  function onChatMessage(message) {
    const el = bubble(message);
    el.dataset.messageId = message.message_id;
    place(el, message.seq);
    if (!message.mine && message.status !== 'read') watchForRead(el, message.message_id);
    if (!message.mine) typing.hidden = true;
  }

  function onSystemMessage({ message_id, seq, message }) {
    const el = h('li', { class: 'msg system' }, h('span', { class: 'text' }, message));
    el.dataset.messageId = message_id;
    place(el, seq);
  }

  function onChatPending({ client_message_id, message }) {
    const el = bubble({ mine: true, sender_type: role, message, status: 'pending' });
    el.dataset.clientId = client_message_id;
    place(el, undefined);
  }

  function onChatConfirmed({ client_message_id, message_id, seq, alreadyShown, status }) {
    const el = chatLog.querySelector(`[data-client-id="${client_message_id}"]`);
    if (!el) return;
    if (alreadyShown) { el.remove(); return; }
    el.dataset.messageId = message_id;
    setTicks(el, status);
    place(el, seq);
  }

  function onChatFailed({ client_message_id, error }) {
    const el = chatLog.querySelector(`[data-client-id="${client_message_id}"]`);
    if (el) {
      setTicks(el, 'failed');
      el.querySelector('.ticks').title = `Not sent: ${error}`;
    }
  }

  let typingTimer = null;
  function onTyping({ user_type, is_typing }) {
    if (user_type === role) return;
    typing.textContent = `${LABEL[user_type] ?? 'Someone'} is typing…`;
    typing.hidden = !is_typing;
    clearTimeout(typingTimer);
    // A safety net should the "stopped typing" event be lost with a dropped socket.
    if (is_typing) typingTimer = setTimeout(() => { typing.hidden = true; }, 15000);
  }

  // Read receipts: only for messages that are on screen while the page is visible.
  const seenWhileHidden = new Set();
  const readObserver = new IntersectionObserver((entries) => {
    for (const entry of entries) {
      if (!entry.isIntersecting) continue;
      const id = entry.target.dataset.messageId;
      readObserver.unobserve(entry.target);
      if (document.visibilityState === 'visible') client?.markRead(id);
      else seenWhileHidden.add(id);
    }
  }, { root: chatLog, threshold: 0.6 });
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState !== 'visible') return;
    for (const id of seenWhileHidden) client?.markRead(id);
    seenWhileHidden.clear();
  });
  function watchForRead(el) {
    readObserver.observe(el);
  }

  let lastTypingSent = 0;
  let typingIdle = null;
  chatInput.addEventListener('input', () => {
    if (!client?.sessionLive) return;
    clearTimeout(typingIdle);
    if (!chatInput.value) {
      client.setTyping(false);
      return;
    }
    // Refreshed well within the server's TTL while keys keep coming; stopped after a pause.
    if (Date.now() - lastTypingSent > 1000) {
      client.setTyping(true);
      lastTypingSent = Date.now();
    }
    typingIdle = setTimeout(() => { client?.setTyping(false); lastTypingSent = 0; }, 3000);
  });

  function sendChat() {
    const text = chatInput.value;
    if (!text.trim()) return;
    clearTimeout(typingIdle);
    lastTypingSent = 0;
    if (client?.sendChat(text)) chatInput.value = '';
  }

  const pane = {
    role,
    get client() { return client; },
    get userId() { return userId; },
    get token() { return token; },
    get sessionId() { return client?.sessionId ?? null; },
    get userInputValue() { return userInput.value.trim(); },
    onUserInput(handler) { userInput.addEventListener('input', () => handler(userInput.value.trim())); },
    setDefaultProviderId(id) { if (!providerEdited) providerInput.value = id; },
    /** Test hook: drops the socket as a lost network would; the client reconnects by itself. */
    dropConnection(offlineMs = 0) { client?.simulateNetworkDrop(offlineMs); },
    notify,
    onSignedIn: null,
  };
  return pane;
}

/**
 * The mediator's pane (contract section 10): sign in, the queue of open disputes, and once one is
 * joined, the session's chat as its third participant, and the resolution.
 */
function createMediatorPane(root, { devMode }) {
  let client = null;
  const notices = h('ul', { class: 'notices', 'aria-live': 'polite' });
  function notify(kind, text) {
    notices.prepend(h('li', { class: `notice ${kind}` }, h('span', { class: 'notice-text' }, text)));
    while (notices.children.length > 4) notices.lastElementChild.remove();
  }
  const connBadge = h('span', { class: 'conn offline' }, 'Offline');
  const who = h('span', { class: 'who' });
  const userInput = h('input', { class: 'user-id', value: 'demo-mediator', autocomplete: 'off', spellcheck: 'false', 'aria-label': 'Mediator user id' });
  const tokenInput = h('textarea', { class: 'token-input', rows: 3, spellcheck: 'false', placeholder: 'Paste a mediator JWT here', 'aria-label': 'Mediator token' });
  const signin = h('section', { class: 'signin' }, devMode
    ? h('form', { class: 'signin-dev', onsubmit: async (event) => {
      event.preventDefault();
      const minted = await mintDevToken({ user_id: userInput.value.trim(), role: 'mediator', name: 'Demo Mediator' }).catch(() => null);
      if (minted) start(minted); else notify('error', 'Signing in failed.');
    } }, h('label', {}, 'User id ', userInput), h('button', { type: 'submit', class: 'primary' }, 'Sign in as mediator'))
    : h('form', { class: 'signin-token', onsubmit: (event) => { event.preventDefault(); start(tokenInput.value.trim()); } },
      h('label', {}, 'Paste your mediator token'), tokenInput, h('button', { type: 'submit', class: 'primary' }, 'Sign in')));

  const queue = h('ul', { class: 'disputes-list' });
  const refresh = h('button', { type: 'button', class: 'refresh-disputes', onclick: () => loadQueue() }, 'Refresh');
  const queueSection = h('section', { class: 'disputes', hidden: true }, h('h3', {}, 'Open disputes'), refresh, queue);

  const chatLog = h('ol', { class: 'chat-log', 'aria-label': 'Chat messages' });
  const typing = h('p', { class: 'typing', hidden: true });
  const chatInput = h('input', { class: 'chat-input', placeholder: 'Write to both parties', autocomplete: 'off', 'aria-label': 'Message' });
  const chatForm = h('form', { class: 'chat-form', onsubmit: (event) => {
    event.preventDefault();
    if (chatInput.value.trim() && client?.sendChat(chatInput.value)) chatInput.value = '';
  } }, chatInput, h('button', { type: 'submit' }, 'Send'));
  const resolution = h('input', { class: 'resolution', placeholder: 'The resolution both parties will read', 'aria-label': 'Resolution' });
  const resolveForm = h('form', { class: 'resolve-form', onsubmit: async (event) => {
    event.preventDefault();
    try {
      await client.resolveDispute(resolution.value.trim());
      resolveForm.hidden = true;
      chatForm.hidden = true;
      notify('info', 'Dispute resolved: you have left the chat.');
    } catch (error) {
      notify('error', `Resolving failed: ${error.message} (HTTP ${error.status})`);
    }
  } }, resolution, h('button', { type: 'submit', class: 'primary resolve' }, 'Resolve'));
  const sessionSection = h('section', { class: 'session', hidden: true }, h('h3', {}, 'Disputed session'),
    h('div', { class: 'chat open' }, h('h4', {}, 'Chat with both parties'), chatLog, typing, chatForm), resolveForm);

  const notifications = createNotificationsPanel();
  root.append(h('header', { class: 'pane-header' }, h('h2', {}, 'Mediator'), who, connBadge), notices, signin, queueSection, sessionSection, notifications.element);

  function place(el, seq) {
    el.dataset.seq = seq ?? '';
    const before = [...chatLog.children].find((child) => seq !== undefined && child.dataset.seq && Number(child.dataset.seq) > seq);
    chatLog.insertBefore(el, before ?? null);
    chatLog.scrollTop = chatLog.scrollHeight;
  }
  function bubble({ message_id, seq, sender_type, message, timestamp, mine }) {
    const el = sender_type === 'system'
      ? h('li', { class: 'msg system' }, h('span', { class: 'text' }, message))
      : h('li', { class: `msg ${mine ? 'mine' : 'theirs'}` }, h('span', { class: 'sender' }, LABEL[sender_type]),
        h('span', { class: 'text' }, message), h('span', { class: 'meta' }, h('time', {}, timeOf(timestamp))));
    if (message_id) el.dataset.messageId = message_id;
    place(el, seq);
  }

  async function loadQueue() {
    try {
      const disputes = await client.listDisputes('open');
      queue.replaceChildren(...(disputes.length === 0 ? [h('li', { class: 'empty' }, 'No open disputes.')] : disputes.map((dispute) =>
        h('li', { class: 'dispute' },
          h('span', {}, `Opened by the ${dispute.opened_by}: “${dispute.reason}”`),
          h('button', { type: 'button', class: 'primary join', onclick: () => join(dispute) }, 'Join')))));
    } catch (error) {
      notify('error', `Loading disputes failed: ${error.message}`);
    }
  }
  async function join(dispute) {
    try {
      await client.joinDispute(dispute);
      queueSection.hidden = true;
      sessionSection.hidden = false;
    } catch (error) {
      notify('error', `Joining failed: ${error.message} (HTTP ${error.status})`);
      loadQueue();
    }
  }

  function start(token) {
    const claims = decodeTokenClaims(token);
    if (claims?.role !== 'mediator') {
      notify('error', "This pane needs a mediator's token.");
      return;
    }
    client = new MediatorClient({ token });
    client.on('state', ({ state }) => {
      connBadge.className = `conn ${state === 'open' ? 'online' : 'offline'}`;
      connBadge.textContent = state === 'open' ? 'Online' : 'Offline';
      if (state === 'open' && !client.sessionId) loadQueue();
    });
    client.on('chat_message', (message) => bubble(message));
    client.on('system_message', (message) => bubble(message));
    client.on('chat_pending', ({ client_message_id, message }) => {
      const el = h('li', { class: 'msg mine' }, h('span', { class: 'sender' }, 'Mediator'), h('span', { class: 'text' }, message));
      el.dataset.clientId = client_message_id;
      place(el, undefined);
    });
    client.on('chat_confirmed', ({ client_message_id, message_id, seq, alreadyShown }) => {
      const el = chatLog.querySelector(`[data-client-id="${client_message_id}"]`);
      if (!el) return;
      if (alreadyShown) { el.remove(); return; }
      el.dataset.messageId = message_id;
      place(el, seq);
    });
    client.on('typing_indicator', ({ user_type, is_typing }) => {
      typing.textContent = `${LABEL[user_type]} is typing…`;
      typing.hidden = !is_typing;
    });
    client.on('error', (frame) => notify('error', frame.error));
    who.textContent = `${claims.name ?? claims.sub} (${claims.sub})`;
    signin.hidden = true;
    queueSection.hidden = false;
    if (devMode) notifications.start(client.api);
    client.connect();
  }

  return { get client() { return client; }, notify };
}

async function main() {
  let devMode = false;
  try {
    devMode = await isDevMode();
  } catch {
    devMode = false;
  }
  const note = document.getElementById('mode-note');
  note.hidden = false;
  note.textContent = devMode
    ? 'Development mode: each pane signs in with a demo token minted by this server.'
    : 'Development mode is off: paste a token in each pane to sign in.';
  note.classList.toggle('dev', devMode);

  const seeker = createPane(document.getElementById('seeker-pane'), 'seeker', {
    devMode,
    defaults: { userId: 'demo-seeker', providerId: 'demo-provider', position: { x: 0, y: 0 }, mobile: '9123456789' },
  });
  const provider = createPane(document.getElementById('provider-pane'), 'provider', {
    devMode,
    defaults: { userId: 'demo-provider', position: { x: 900, y: 1200 }, mobile: '9876543210' },
  });
  // The seeker's provider id follows the provider pane until the user types their own.
  provider.onUserInput((id) => seeker.setDefaultProviderId(id));
  provider.onSignedIn = (id) => seeker.setDefaultProviderId(id);
  const mediator = createMediatorPane(document.getElementById('mediator-pane'), { devMode });

  window.marketplace = { devMode, seeker, provider, mediator, planeToLatLng };
  document.body.dataset.ready = 'true';
}

main();
