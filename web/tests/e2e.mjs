// e2e.mjs — drives Debian's Chromium (playwright-core, no downloaded browser) through a whole
// session on the demo page, in both panes, against the real stack run.sh started. It asserts what
// a user sees (text in the DOM), saves a screenshot per step to artifacts/, and exits non-zero
// with the failing step's name on any failure.

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import path from 'node:path';

const GATEWAY = process.env.E2E_GATEWAY_URL ?? 'http://127.0.0.1:8080';
const NODEV_GATEWAY = process.env.E2E_NODEV_GATEWAY_URL;
const PASTE_TOKEN = process.env.E2E_PASTE_TOKEN;
const ARTIFACTS = process.env.E2E_ARTIFACTS ?? path.join(path.dirname(new URL(import.meta.url).pathname), 'artifacts');
const WAIT_MS = 10000;

mkdirSync(ARTIFACTS, { recursive: true });

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const started = Date.now();
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1)} s`;

let page;
let shotNumber = 0;
let passed = 0;
let failed = 0;

async function screenshot(name) {
  shotNumber += 1;
  const file = path.join(ARTIFACTS, `${String(shotNumber).padStart(2, '0')}-${name}.png`);
  await page?.screenshot({ path: file, fullPage: true }).catch(() => {});
  return file;
}

/** Runs one user-visible step; a failure names the step, saves a screenshot and stops the run. */
async function step(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
  } catch (error) {
    failed += 1;
    const file = await screenshot(`FAILED-${slug(name)}`);
    error.message = `step "${name}" failed: ${error.message}\n  screenshot: ${file}`;
    throw error;
  }
  passed += 1;
  await screenshot(slug(name));
  console.log(`  ✓ ${name} (${Date.now() - t0} ms, at ${elapsed()})`);
}

const slug = (text) => text.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 60);

function matches(actual, expected) {
  if (actual === null || actual === undefined) return false;
  return expected instanceof RegExp ? expected.test(actual) : actual.includes(expected);
}

/** Waits until the (first) element is visible and its text matches. */
async function expectText(locator, expected, { timeout = WAIT_MS, what } = {}) {
  const deadline = Date.now() + timeout;
  let seen = null;
  for (;;) {
    const target = locator.first();
    const visible = await target.isVisible().catch(() => false);
    seen = visible ? await target.innerText({ timeout: 1000 }).catch(() => null) : null;
    if (matches(seen, expected)) return seen;
    if (Date.now() > deadline) {
      throw new Error(`${what ?? locator.toString()}: expected to show ${expected instanceof RegExp ? expected : JSON.stringify(expected)}, ` +
        `but it ${visible ? `shows ${JSON.stringify(seen)}` : 'is not visible'}`);
    }
    await sleep(100);
  }
}

async function expectHidden(locator, { timeout = WAIT_MS, what } = {}) {
  const deadline = Date.now() + timeout;
  while (await locator.first().isVisible().catch(() => false)) {
    if (Date.now() > deadline) throw new Error(`${what ?? locator.toString()} is still visible after ${timeout} ms`);
    await sleep(100);
  }
}

async function until(check, description, timeout = WAIT_MS) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = await check();
    if (last === true) return;
    if (Date.now() > deadline) throw new Error(`${description} (last seen: ${JSON.stringify(last)})`);
    await sleep(100);
  }
}

/** The chat as a pane shows it: [{text, sender, mine, status, seq}] in screen order. */
function chatOf(role) {
  return page.evaluate((role) => [...document.querySelectorAll(`#${role}-pane .chat-log .msg:not(.system)`)].map((el) => ({
    text: el.querySelector('.text').textContent,
    sender: el.querySelector('.sender').textContent,
    mine: el.classList.contains('mine'),
    status: el.dataset.status ?? null,
    seq: el.dataset.seq ? Number(el.dataset.seq) : null,
  })), role);
}

async function expectMessageOnce(role, text, { mine, status, timeout = WAIT_MS } = {}) {
  await until(async () => {
    const found = (await chatOf(role)).filter((m) => m.text === text);
    if (found.length !== 1) return `${found.length} copies`;
    if (mine !== undefined && found[0].mine !== mine) return found[0];
    if (status && ![status].flat().includes(found[0].status)) return found[0];
    return true;
  }, `the ${role} pane should show “${text}” exactly once${status ? ` with status ${status}` : ''}`, timeout);
}

/** Taps the pane's plane at `x` m east, `y` m north of the base point, as a user moving the dot. */
async function tapPlane(pane, x, y) {
  const plane = pane.locator('.plane');
  await plane.scrollIntoViewIfNeeded();
  const point = await plane.evaluate((svg, [east, north]) => {
    const onScreen = new DOMPoint(east, -north).matrixTransform(svg.getScreenCTM());
    return { x: onScreen.x, y: onScreen.y };
  }, [x, y]);
  await page.mouse.click(point.x, point.y);
}

async function typeInChat(pane, text) {
  const input = pane.locator('.chat-input');
  await input.click();
  await input.pressSequentially(text, { delay: 8 });
}

async function sendInChat(pane, text) {
  await typeInChat(pane, text);
  await pane.locator('.chat-input').press('Enter');
}

const launchOptions = {
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--no-first-run', '--disable-quic', '--disable-sync'],
};

async function main() {
  console.log(`web e2e against ${GATEWAY}`);
  const browser = await chromium.launch(launchOptions);
  const pageErrors = [];
  try {
    const context = await browser.newContext({ viewport: { width: 1440, height: 1000 } });
    page = await context.newPage();
    page.setDefaultTimeout(WAIT_MS);
    page.on('pageerror', (error) => pageErrors.push(error.message));
    page.on('console', (message) => {
      if (message.type() === 'error' && !/Failed to load resource/.test(message.text())) {
        console.log(`    [browser console] ${message.text()}`);
      }
    });

    const S = page.locator('#seeker-pane');
    const P = page.locator('#provider-pane');

    await step('page loads in development mode', async () => {
      await page.goto(`${GATEWAY}/`);
      await page.waitForSelector('body[data-ready="true"]', { timeout: WAIT_MS });
      await expectText(page.locator('#mode-note'), 'Development mode: each pane signs in');
      await expectText(S.locator('.signin-dev button'), 'Sign in as seeker');
      await expectText(P.locator('.signin-dev button'), 'Sign in as provider');
    });

    await step('both parties sign in', async () => {
      await S.locator('.signin-dev button').click();
      await P.locator('.signin-dev button').click();
      await expectText(S.locator('.conn'), 'Online', { what: 'seeker connection badge' });
      await expectText(P.locator('.conn'), 'Online', { what: 'provider connection badge' });
      await expectText(S.locator('.who'), 'demo-seeker');
      await expectText(P.locator('.who'), 'demo-provider');
    });

    await step('errors are shown in words', async () => {
      // A REST refusal: the provider is not active yet.
      if ((await S.locator('.provider-id').inputValue()) !== 'demo-provider') {
        throw new Error('the seeker pane should default the provider id to the provider pane\'s');
      }
      await S.locator('.send-order').click();
      await expectText(S.locator('.notice.error'), 'Sending the work order failed: provider is not active (HTTP 409)');
      // An error frame from the server.
      await page.evaluate(() => window.marketplace.seeker.client.send({
        type: 'chat_message', session_id: '00000000-0000-4000-8000-000000000000', message: 'hello?',
      }));
      await expectText(S.locator('.notice.error'), 'Sending a message failed: session not found');
      while (await S.locator('.notice .dismiss').count() > 0) await S.locator('.notice .dismiss').first().click();
      await expectHidden(S.locator('.notice.error'));
    });

    await step('provider goes active', async () => {
      await P.locator('.go-active').click();
      await expectText(P.locator('.availability-text'), 'You are active');
    });

    let workId;
    await step('seeker sends a work order and the provider sees it', async () => {
      await S.locator('.service-type').fill('Plumbing');
      await S.locator('.order-message').fill('The kitchen sink is leaking');
      await S.locator('.send-order').click();
      const status = await expectText(S.locator('.order-status'), /Order #\d+ sent to demo-provider/);
      workId = status.match(/#(\d+)/)[1];
      const card = P.locator(`.order-card[data-work-id="${workId}"]`);
      await expectText(card, `Order #${workId} · Plumbing`);
      await expectText(card, 'From Demo Seeker · 1.5 km away');
      await expectText(card, 'The kitchen sink is leaking');
    });

    await step('provider accepts and both see the waiting session', async () => {
      await P.locator(`.order-card[data-work-id="${workId}"] .accept`).click();
      await expectText(P.locator('.order-card-status'), 'Accepted');
      await expectText(S.locator('.order-status'), `The provider accepted order #${workId}`);
      await expectText(S.locator('.session-state'), 'Waiting: choose how the provider may contact you');
      await expectText(P.locator('.session-state'), 'Waiting for the seeker to choose contact mediums');
      await expectText(P.locator('.availability-text'), 'In a session');
    });

    await step('seeker selects mediums and the session becomes active', async () => {
      await S.locator('.share-mediums').click();
      await expectText(S.locator('.my-mediums'), 'You shared: Telegram 9123456789 · Call 9123456789');
      await expectText(S.locator('.session-state'), 'Active');
      await expectText(P.locator('.session-state'), 'Active');
      await expectText(P.locator('.their-mediums'), "The seeker's contacts: Telegram 9123456789 · Call 9123456789");
    });

    await step('provider shares mediums', async () => {
      await P.locator('input[name="whatsapp"]').check();
      await P.locator('.share-mediums').click();
      await expectText(P.locator('.my-mediums'), 'You shared: Telegram 9876543210 · WhatsApp 9876543210 · Call 9876543210');
      await expectText(S.locator('.their-mediums'), "The provider's contacts: Telegram 9876543210 · WhatsApp 9876543210 · Call 9876543210");
    });

    await step('live distance follows the provider moving with the arrow keys', async () => {
      // Seeker at the base point, provider 900 m east and 1200 m north: 1.5 km.
      await expectText(S.locator('.distance'), '1.5 km away', { what: 'seeker distance' });
      await P.locator('.plane').focus();
      for (let i = 0; i < 4; i += 1) await page.keyboard.press('ArrowLeft');
      await expectText(P.locator('.plane-readout'), '500 m east, 1200 m north');
      // 500 m east, 1200 m north: 1.3 km.
      await expectText(S.locator('.distance'), '1.3 km away', { what: 'seeker distance after the move' });
      await expectText(P.locator('.distance'), '1.3 km away', { what: 'provider distance after the move' });
    });

    await step('seeker types: the provider sees the typing indicator', async () => {
      await typeInChat(S, 'Hi! Are you on ');
      await expectText(P.locator('.typing'), 'Seeker is typing…');
    });

    await step('chat seeker to provider with read ticks', async () => {
      await S.locator('.chat-input').pressSequentially('your way?', { delay: 10 });
      await S.locator('.chat-input').press('Enter');
      await expectMessageOnce('provider', 'Hi! Are you on your way?', { mine: false });
      await expectHidden(P.locator('.typing'), { what: 'the provider pane typing indicator' });
      await expectMessageOnce('seeker', 'Hi! Are you on your way?', { mine: true, status: 'read' });
      await expectText(S.locator('.msg.mine[data-status="read"] .ticks'), '✓✓');
      await expectText(P.locator('.msg.theirs .sender'), 'Seeker');
      // The server's own message of the session's start (contract section 9), in both panes.
      for (const pane of [S, P]) {
        await expectText(pane.locator('.msg.system'), 'The provider accepted the work order. Chat is now active.');
      }
    });

    await step('chat provider to seeker with read ticks', async () => {
      await sendInChat(P, 'Yes, about 10 minutes away.');
      await expectMessageOnce('seeker', 'Yes, about 10 minutes away.', { mine: false });
      await expectMessageOnce('provider', 'Yes, about 10 minutes away.', { mine: true, status: 'read' });
      await expectText(S.locator('.msg.theirs .sender'), 'Provider');
    });

    await step('typing indicator clears by itself when typing stops', async () => {
      await typeInChat(P, 'Traffic is');
      await expectText(S.locator('.typing'), 'Provider is typing…');
      await expectHidden(S.locator('.typing'), { timeout: 8000, what: 'the seeker pane typing indicator' });
      await P.locator('.chat-input').fill('');
    });

    const beforeDrop = 'Sent right before the drop';
    const seekerOffline = ['Offline message one', 'Offline message two'];
    const providerMeanwhile = ['Provider message while you were away', 'Second provider message meanwhile'];

    await step('seeker loses the connection and keeps writing', async () => {
      // A message goes out, and the network dies before its confirmation comes back.
      await page.evaluate((text) => {
        const seeker = window.marketplace.seeker;
        seeker.client.sendChat(text);
        seeker.dropConnection(8000);
      }, beforeDrop);
      await expectText(S.locator('.conn'), /Reconnecting/, { what: 'seeker connection badge' });
      for (const text of seekerOffline) await sendInChat(S, text);
      for (const text of providerMeanwhile) await sendInChat(P, text);
      for (const text of seekerOffline) await expectMessageOnce('seeker', text, { mine: true, status: 'pending' });
      for (const text of providerMeanwhile) await expectMessageOnce('provider', text, { mine: true, status: 'sent' });
      await expectText(S.locator('.conn'), /Reconnecting/, { what: 'seeker connection badge while offline' });
    });

    await step('seeker reconnects: nothing lost, nothing doubled', async () => {
      await expectText(S.locator('.conn'), 'Online', { timeout: 20000, what: 'seeker connection badge after reconnecting' });
      for (const text of [beforeDrop, ...seekerOffline]) {
        await expectMessageOnce('provider', text, { mine: false });
        await expectMessageOnce('seeker', text, { mine: true, status: 'read' });
      }
      for (const text of providerMeanwhile) {
        await expectMessageOnce('seeker', text, { mine: false });
        await expectMessageOnce('provider', text, { mine: true, status: ['delivered', 'read'] });
        // Read means seen: the missed messages sit above the seeker's newer ones, so scroll up.
        await S.locator('.chat-log .msg', { hasText: text }).scrollIntoViewIfNeeded();
        await expectMessageOnce('provider', text, { mine: true, status: 'read' });
      }
      const seekerChat = await chatOf('seeker');
      const providerChat = await chatOf('provider');
      const order = (chat) => chat.map((m) => `${m.seq}:${m.sender}:${m.text}`);
      if (JSON.stringify(order(seekerChat)) !== JSON.stringify(order(providerChat))) {
        throw new Error(`the two panes show different chats:\n  seeker:   ${order(seekerChat).join(' | ')}\n  provider: ${order(providerChat).join(' | ')}`);
      }
      // Seq 1 is the system message of the session's start; the parties' messages follow.
      const seqs = seekerChat.map((m) => m.seq);
      if (seqs.some((seq, i) => seq !== i + 2)) throw new Error(`seq should run 2..${seqs.length + 1}, got ${seqs.join(',')}`);
      if (seekerChat.length !== 7) throw new Error(`expected 7 messages in all, found ${seekerChat.length}: ${order(seekerChat).join(' | ')}`);
    });

    await step('mid-chat', async () => {
      await sendInChat(S, 'Great, see you soon.');
      await expectMessageOnce('provider', 'Great, see you soon.', { mine: false });
      await expectMessageOnce('seeker', 'Great, see you soon.', { mine: true, status: 'read' });
    });

    await step('the provider reaches the seeker: the seeker sees that the provider has arrived', async () => {
      await expectHidden(S.locator('.arrived'), { what: 'the arrival banner before the provider is there' });
      // Two fixes within 100 m of the seeker (at the base point) make an arrival (contract section
      // 14); the gateway forwards one position a second, so the second tap waits for its turn.
      await sleep(1100);
      await tapPlane(P, 0, 0);
      await expectText(P.locator('.plane-readout'), '0 m east, 0 m north');
      await expectText(S.locator('.distance'), '0 meters away', { what: 'seeker distance with the provider there' });
      await sleep(1100);
      await tapPlane(P, 30, 20);
      await expectText(P.locator('.plane-readout'), '30 m east, 20 m north');
      await expectText(S.locator('.arrived'), 'Your provider has arrived', { what: 'the seeker pane arrival banner' });
      await expectHidden(P.locator('.arrived'), { what: 'the provider pane arrival banner' });
      for (const pane of [S, P]) {
        await expectText(pane.locator('.msg.system', { hasText: 'arrived' }), 'The provider has arrived.');
      }
    });

    const M = page.locator('#mediator-pane');
    await step('the seeker opens a dispute and a mediator joins it from the mediator pane', async () => {
      await S.locator('.dispute-reason').fill('The tap still drips.');
      await S.locator('.open-dispute').click();
      for (const pane of [S, P]) {
        await expectText(pane.locator('.msg.system', { hasText: 'opened a dispute' }), 'The seeker opened a dispute.');
      }
      await M.locator('.signin-dev button').click();
      await expectText(M.locator('.conn'), 'Online', { what: 'mediator connection badge' });
      await expectText(M.locator('.dispute'), 'Opened by the seeker: “The tap still drips.”');
      await M.locator('.join').click();
      for (const pane of [S, P, M]) {
        await expectText(pane.locator('.msg.system', { hasText: 'joined' }), 'A mediator from the platform joined the chat.');
      }
      // The mediator reads the whole conversation, in order.
      await expectText(M.locator('.msg.theirs', { hasText: 'Great, see you soon.' }), 'Great, see you soon.');
      await expectText(S.locator('.presence'), 'Mediator online');
    });

    await step('all three chat in one room, by role only', async () => {
      await M.locator('.chat-input').fill('Hello both, I am the mediator. What happened?');
      await M.locator('.chat-input').press('Enter');
      await expectMessageOnce('seeker', 'Hello both, I am the mediator. What happened?', { mine: false });
      await expectMessageOnce('provider', 'Hello both, I am the mediator. What happened?', { mine: false });
      await expectText(S.locator('.msg.theirs', { hasText: 'I am the mediator' }).locator('.sender'), 'Mediator');
      await sendInChat(S, 'The tap still drips after the repair.');
      await expectText(M.locator('.msg.theirs', { hasText: 'still drips after' }).locator('.sender'), 'Seeker');
      await sendInChat(P, 'I can come back tomorrow morning.');
      await expectText(M.locator('.msg.theirs', { hasText: 'tomorrow morning' }).locator('.sender'), 'Provider');
      await expectMessageOnce('seeker', 'I can come back tomorrow morning.', { mine: false });
    });

    await step('the mediator resolves the dispute and leaves the chat', async () => {
      await M.locator('.resolution').fill('The provider comes back tomorrow at no charge.');
      await M.locator('.resolve').click();
      for (const pane of [S, P, M]) {
        await expectText(pane.locator('.msg.system', { hasText: 'resolved' }), 'The mediator resolved the dispute: The provider comes back tomorrow at no charge.');
      }
      await expectHidden(M.locator('.chat-form'));
    });

    await step('seeker finishes with a rating and both panes show the finished session', async () => {
      await S.locator('button.star[aria-label="4 stars"]').click();
      await S.locator('.rating-comment').fill('Quick and friendly, fixed the leak.');
      await S.locator('.finish').click();
      await expectText(S.locator('.ended'), 'Service finished. Thank you! You rated the provider 4 ★ — “Quick and friendly, fixed the leak.”');
      await expectText(P.locator('.ended'), 'The seeker marked the service as finished.');
      await expectText(S.locator('.session-state'), 'Finished');
      await expectText(S.locator('.order-status'), `Order #${workId} is over: you can send a new one.`);
      // The conversation stays readable; its controls are gone.
      await expectMessageOnce('seeker', 'Great, see you soon.', { mine: true, status: 'read' });
      await expectHidden(S.locator('.chat-form'));
      await expectHidden(P.locator('.session-actions'));
      await expectText(P.locator('.session-state'), 'Finished');
      await expectText(S.locator('.conn'), 'Offline: the server closed the connection', { what: 'seeker connection badge' });
      await expectText(P.locator('.conn'), 'Offline: the server closed the connection', { what: 'provider connection badge' });
      const snapshot = await page.evaluate(async () => {
        const seeker = window.marketplace.seeker;
        const response = await fetch(`/api/sessions/${seeker.sessionId}`, { headers: { Authorization: `Bearer ${seeker.token}` } });
        return response.json();
      });
      if (snapshot.connection_state !== 'completed' || snapshot.rating_stars !== 4 || snapshot.completed_by !== 'seeker') {
        throw new Error(`the server's session is not the finished, rated one: ${JSON.stringify(snapshot)}`);
      }
      // The inbox lists the finished conversation with its resolved dispute.
      await expectText(S.locator('.inbox .conversation'), `Plumbing · order #${workId} · completed`);
      await expectText(S.locator('.inbox .badge.dispute'), 'dispute resolved');
      const errors = await page.locator('.notice.error').allInnerTexts();
      if (errors.length > 0) throw new Error(`unexpected error notices during the session: ${errors.join(' / ')}`);
    });

    await step('a provider who is offline gets a work order: signed in, the notifications panel shows the push', async () => {
      // A provider who never opened a socket goes active over REST; the seeker orders from them.
      // The notify worker's work.assigned webhook goes to this gateway's development receiver.
      const offline = 'offline-provider';
      const providerToken = await page.evaluate(async (id) => {
        const mint = await fetch('/dev/token', {
          method: 'POST', headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ user_id: id, role: 'provider', name: 'Offline Provider' }),
        });
        const { token } = await mint.json();
        const { latitude, longitude } = window.marketplace.planeToLatLng({ x: 300, y: 400 });
        const response = await fetch('/api/provider/status', {
          method: 'PUT', headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
          body: JSON.stringify({ is_active: true, latitude, longitude }),
        });
        if (!response.ok) throw new Error(`going active failed: HTTP ${response.status} ${await response.text()}`);
        return token;
      }, offline);
      await S.locator('.provider-id').fill(offline);
      await S.locator('.service-type').fill('Electrician');
      await S.locator('.order-message').fill('The lights flicker');
      await S.locator('.send-order').click();
      const status = await expectText(S.locator('.order-status'), new RegExp(`Order #\\d+ sent to ${offline}`));
      const offlineWorkId = status.match(/#(\d+)/)[1];
      // The push went out while the provider had no socket (only then is one sent)...
      await until(async () => {
        const { notifications } = await page.evaluate(async (token) => (await fetch('/dev/notifications', {
          headers: { Authorization: `Bearer ${token}` },
        })).json(), providerToken);
        return notifications.some((n) => n.type === 'work.assigned' && String(n.data.work_id) === offlineWorkId) || notifications;
      }, 'the development receiver should have the work.assigned webhook for the offline provider');
      // ...and the provider, signing in, sees what it said, and the order itself.
      await P.locator('.account button', { hasText: 'Sign out' }).click();
      await P.locator('.user-id').fill(offline);
      await P.locator('.signin-dev button').click();
      await expectText(P.locator('.who'), `(${offline})`);
      await expectText(P.locator('.notifications .notification[data-type="work.assigned"]'), `New work order #${offlineWorkId}`,
        { what: 'the provider pane notifications panel' });
      await expectText(P.locator(`.order-card[data-work-id="${offlineWorkId}"]`), `Order #${offlineWorkId} · Electrician`);
      // The mediator had not signed in when the seeker opened the dispute: it was told too.
      await expectText(M.locator('.notifications .notification[data-type="dispute.opened"]'), `Dispute opened by the seeker on order #${workId}`,
        { what: 'the mediator pane notifications panel' });
    });

    if (NODEV_GATEWAY) {
      await step('without development mode the page asks for a token', async () => {
        const { status } = await fetch(`${NODEV_GATEWAY}/dev/token`, {
          method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"user_id":"x","role":"seeker"}',
        });
        if (status !== 404 && status !== 405) throw new Error(`POST /dev/token should not exist there, got ${status}`);
        await page.goto(`${NODEV_GATEWAY}/`);
        await page.waitForSelector('body[data-ready="true"]', { timeout: WAIT_MS });
        await expectText(page.locator('#mode-note'), 'Development mode is off: paste a token');
        await expectText(S.locator('.signin-token label'), 'Paste your seeker token');
        await expectText(P.locator('.signin-token label'), 'Paste your provider token');
        if (await page.locator('.signin-dev').count() !== 0) throw new Error('the dev sign-in form should not be there');
        if (PASTE_TOKEN) {
          await P.locator('.token-input').fill(PASTE_TOKEN);
          await P.locator('.signin-token button').click();
          await expectText(P.locator('.notice.error'), "That token is for a seeker; this pane needs a provider's token.");
          // A provider token with a signature the server did not make.
          const [header, , signature] = PASTE_TOKEN.split('.');
          const claims = Buffer.from(JSON.stringify({ sub: 'forged', role: 'provider', exp: Math.floor(Date.now() / 1000) + 600 })).toString('base64url');
          await P.locator('.token-input').fill(`${header}.${claims}.${signature}`);
          await P.locator('.signin-token button').click();
          await expectText(P.locator('.notice.error'), 'The server refused this token');
          await expectText(P.locator('.conn'), 'Offline');
          await S.locator('.token-input').fill(PASTE_TOKEN);
          await S.locator('.signin-token button').click();
          await expectText(S.locator('.conn'), 'Online', { what: 'seeker connection badge with a pasted token' });
          await expectText(S.locator('.who'), 'Pasted Seeker (pasted-seeker)');
        }
      });
    }

    if (pageErrors.length > 0) {
      failed += 1;
      throw new Error(`uncaught errors in the page: ${pageErrors.join(' / ')}`);
    }
  } finally {
    await browser.close().catch(() => {});
  }
}

try {
  await main();
  console.log(`web-e2e: ${passed} passed, ${failed} failed (in ${elapsed()})`);
} catch (error) {
  console.error(`\n✗ ${error.message}`);
  console.log(`web-e2e: ${passed} passed, ${Math.max(failed, 1)} failed (in ${elapsed()})`);
  process.exit(1);
}
