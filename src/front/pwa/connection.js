// @ts-check
// The live stream: one WebSocket subscribed to every topic, resumed from
// `lastSeq` after a drop, with backoff, and polling GET /api/v1/events while
// the socket cannot open (a proxy that refuses upgrades); plus the indicator
// that says which of these works.
import { state } from './store.js';
import { call, eventsPage } from './api.js';
import { flushDecisions } from './approvals.js';
import { $ } from './dom.js';

/** @typedef {import('./types/events').BosunEvent} BosunEvent */

const PAGE = 1000;
const POLL_MS = 2000;
const WS_FAILURES_BEFORE_POLLING = 3;

const handlers = {
  /** @param {BosunEvent[]} _events in seq order, some perhaps seen before */
  receive(_events) {},
  /** The daemon refused this device's token. */
  unauthorized() {},
  /** The socket opened (the first time, or again after a drop). */
  opened() {},
};

/** @param {Partial<typeof handlers>} wanted */
export function configure(wanted) {
  Object.assign(handlers, wanted);
}

/** @type {WebSocket | null} */
let ws = null;
/** @type {ReturnType<typeof setTimeout> | undefined} */
let retryTimer;
/** @type {ReturnType<typeof setTimeout> | undefined} */
let pollTimer;

export function updateIndicator() {
  const link = state.link;
  let s = 'reconnecting';
  if (!navigator.onLine) s = 'offline';
  else if (link.wsOpen) s = 'live';
  else if (link.httpDown) s = 'offline';
  const node = $('connection');
  if (node.textContent !== s) node.textContent = s;
  node.dataset.state = s;
  node.dataset.mode = link.wsOpen ? 'websocket' : link.polling ? 'polling' : 'none';
}

function wsUrl() {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const q = state.token ? '?token=' + encodeURIComponent(state.token) : '';
  return proto + '//' + location.host + '/ws' + q;
}

/** @param {unknown} frame */
function unauthorizedFrame(frame) {
  if (!frame || typeof frame !== 'object' || !('error' in frame)) return false;
  const err = frame.error;
  return !!err && typeof err === 'object' && 'code' in err && err.code === 'unauthorized';
}

export function connect() {
  if (!state.started || state.pairing) return;
  if (ws && (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING)) return;
  clearTimeout(retryTimer);
  retryTimer = undefined;
  if (!navigator.onLine) {
    // No network at all: 'online' brings us back; a slow retry covers a missed event.
    updateIndicator();
    retryTimer = setTimeout(connect, 5000);
    return;
  }
  /** @type {WebSocket} */
  let socket;
  try {
    socket = new WebSocket(wsUrl());
  } catch (_) {
    onWsFailure(false);
    return;
  }
  ws = socket;
  let opened = false;
  socket.onopen = () => {
    if (ws !== socket) return;
    opened = true;
    state.link.wsOpen = true;
    state.link.failures = 0;
    state.link.backoff = 0;
    stopPolling();
    updateIndicator();
    socket.send(JSON.stringify({ op: 'subscribe', topics: ['*'], since: state.lastSeq }));
    flushDecisions();
    handlers.opened();
  };
  socket.onmessage = (msg) => {
    if (ws !== socket || typeof msg.data !== 'string') return;
    let frame;
    try {
      frame = JSON.parse(msg.data);
    } catch (_) {
      return;
    }
    if (!frame || typeof frame !== 'object') return;
    // Control frames (`op`) and errors are not events.
    if (frame.op) {
      if (frame.op === 'error' && unauthorizedFrame(frame)) handlers.unauthorized();
      return;
    }
    if (frame.type === 'error' && unauthorizedFrame(frame)) {
      handlers.unauthorized();
      return;
    }
    if (typeof frame.seq === 'number') handlers.receive([/** @type {BosunEvent} */ (frame)]);
  };
  socket.onclose = (ev) => {
    if (ws !== socket) return;
    ws = null;
    state.link.wsOpen = false;
    updateIndicator();
    // 4401: the daemon closed the socket because the token is no longer valid (e.g. revoked).
    if (ev.code === 4401) {
      handlers.unauthorized();
      return;
    }
    onWsFailure(opened);
  };
  socket.onerror = () => {
    // onclose follows and schedules the retry.
  };
}

/** @param {boolean} hadOpened */
function onWsFailure(hadOpened) {
  const link = state.link;
  if (!hadOpened) link.failures += 1;
  if (link.failures >= WS_FAILURES_BEFORE_POLLING) startPolling();
  // A drop after a working connection is retried at once; repeated failures back off.
  link.backoff = hadOpened ? 300 : Math.min(link.backoff ? link.backoff * 2 : 500, 15000);
  const delay = link.backoff * (0.8 + Math.random() * 0.4);
  clearTimeout(retryTimer);
  retryTimer = setTimeout(connect, delay);
  // A 401 on HTTP is how we learn that the socket was refused for want of a token.
  if (!hadOpened && link.failures >= 1) call('GET /health').catch(() => {});
}

/**
 * An open socket does not learn that its token was revoked; a cheap
 * authenticated request now and then (and whenever the app comes back to the
 * foreground) does, and its 401 shows pairing.
 */
export function checkAuth() {
  if (state.started && !state.pairing && navigator.onLine) call('GET /health').catch(() => {});
}

/** The network or the app came back: try at once rather than after the backoff. */
export function reconnectNow() {
  if (!state.started) return;
  checkAuth();
  state.link.backoff = 0;
  updateIndicator();
  if (!state.link.wsOpen) connect();
  flushDecisions();
}

/**
 * Closes the socket as a lost network would; unless pairing stopped the app,
 * it reconnects and resumes from lastSeq, so nothing is lost.
 */
export function closeSocket() {
  if (ws) ws.close();
}

function startPolling() {
  if (state.link.polling) return;
  state.link.polling = true;
  updateIndicator();
  const tick = async () => {
    if (!state.link.polling) return;
    try {
      for (;;) {
        const page = await eventsPage({ since: state.lastSeq, limit: PAGE });
        // The WebSocket may have come back while this request was out; lastSeq gates both.
        handlers.receive(page.events);
        if (page.events.length < PAGE) break;
      }
      flushDecisions();
    } catch (_) {
      // offline or refused: the indicator says so; try again on the next tick
    }
    if (state.link.polling) pollTimer = setTimeout(tick, POLL_MS);
  };
  tick();
}

export function stopPolling() {
  state.link.polling = false;
  clearTimeout(pollTimer);
  pollTimer = undefined;
}
