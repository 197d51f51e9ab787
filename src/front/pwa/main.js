// @ts-check
// Bosun's phone app, as ES modules served as they are (no build step); this
// one starts it and wires the others together.
//
// One WebSocket subscribed to every topic carries the live events; each event
// is processed once, in seq order (`lastSeq` gates it), and the open session's
// transcript is built from its events, de-duplicated by seq. A reload rebuilds
// the transcript from the API, then resumes the subscription from a seq it had.
// Workflow runs come the same way (topic `workflow:<id>`), reduced in the store,
// and so do the terminals' map and bindings (the Terminals screen, bridge.js).
import { state, savedSeq, saveSeq, applyEvent, sessionOf, runOf, changed, onChange } from './store.js';
import { call, errorText, listen } from './api.js';
import { configure, connect, checkAuth, reconnectNow, closeSocket, updateIndicator } from './connection.js';
import { renderEvent } from './transcript.js';
import { flushDecisions, decide, renderApproval, closeApproval, putAside, reviewPending } from './approvals.js';
import { renderList, renderSessionHead, openSession, sendMessage, steer, stop, openNewSession, createSession } from './sessions.js';
import { renderRuns, renderRun, openRun, ensureRun, refreshRuns, resumeRun, cancelRun, setBudget } from './workflows.js';
import { showPairing, submitPair, pairFromLink } from './pairing.js';
import { showTab, detach, renderTerminals, wireTerminal, reconnectTerminal, dropTerminalSocket, saveOpenTerminal } from './terminal.js';
import { openTerminals, refreshTerminals, renderBridge, rediscover } from './bridge.js';
import { $, show } from './dom.js';

/** @typedef {import('./store.js').BosunEvent} BosunEvent */

/**
 * Takes events from the stream (WebSocket or polling): each one not seen
 * before changes the state and, if it is the open session's, the transcript.
 * @param {BosunEvent[]} events
 */
function receive(events) {
  const before = state.lastSeq;
  for (const ev of events) {
    if (ev.seq <= state.lastSeq) continue; // already processed: a replay after a resume
    state.lastSeq = ev.seq;
    applyEvent(ev);
    const run = runOf(ev);
    // A run this page never loaded (its start came before the page did, say): fetched.
    if (run && !state.runs.has(run)) ensureRun(run);
    const view = state.view;
    if (view && sessionOf(ev) === view.id) {
      if (view.loading) view.buffer.push(ev);
      else renderEvent(ev);
    }
  }
  if (state.lastSeq === before) return;
  saveSeq();
  changed();
}

/**
 * Shows what the hash names: `#/s/<id>` a session (`/t` its terminals,
 * `/t/<binding>` one of them open), `#/w/<id>` a workflow run,
 * `#/w` the runs, `#/terminals` the terminals, anything else the sessions. The back button goes where the
 * page came from (a session opened from a run goes back to the run).
 */
function route() {
  if (state.pairing || !state.started) return;
  const hash = location.hash;
  const from = state.screen;
  const fromRun = state.run;
  let m = hash.match(/^#\/s\/([^/]+)(\/t(?:\/([^/]+))?)?$/);
  if (m) {
    const id = decodeURIComponent(m[1]);
    state.screen = 'session';
    if (from === 'run' && fromRun) state.back = '#/w/' + encodeURIComponent(fromRun.id);
    else if (from !== 'session') state.back = '#/';
    $('back').setAttribute('aria-label', state.back === '#/' ? 'All sessions' : 'Back to the workflow run');
    state.run = null;
    if (!state.view || state.view.id !== id) {
      state.approvalDismissed = null;
      state.gateAsked = null;
      closeApproval();
      openSession(id);
    }
    showTab(m[2] ? 'terminal' : 'transcript', m[3] ? decodeURIComponent(m[3]) : null);
    return;
  }
  detach();
  state.sessionTab = null;
  m = hash.match(/^#\/w\/([^/]+)$/);
  if (m) {
    const id = decodeURIComponent(m[1]);
    state.screen = 'run';
    state.view = null;
    state.back = '#/w';
    $('back').setAttribute('aria-label', 'All workflow runs');
    if (!state.run || state.run.id !== id || from !== 'run') {
      state.approvalDismissed = null;
      state.gateAsked = null;
      closeApproval();
      openRun(id);
    }
    return;
  }
  state.view = null;
  state.run = null;
  state.gateAsked = null;
  closeApproval();
  if (hash === '#/terminals') {
    state.screen = 'terminals';
    openTerminals();
    return;
  }
  state.screen = hash === '#/w' ? 'workflows' : 'list';
  show(state.screen);
  changed();
}

/** The socket opened (again): what it may have missed is read again. */
function reopened() {
  refreshRuns();
  if (state.screen === 'terminals') refreshTerminals();
}

async function loadState() {
  // The head is read first: events after it are replayed over the snapshot below, and
  // replaying a session's update over a newer snapshot is corrected by the events that follow.
  const health = await call('GET /health');
  const head = typeof health.head_seq === 'number' ? health.head_seq : 0;
  const [sessions, approvals, runs] = await Promise.all([
    call('GET /api/v1/sessions'),
    call('GET /api/v1/approvals', { query: { status: 'pending' } }),
    call('GET /api/v1/workflows/runs'),
  ]);
  state.sessions = new Map(sessions.sessions.map((s) => [s.id, s]));
  state.pending = new Map(approvals.approvals.map((a) => [a.id, a]));
  state.runs = new Map(runs.runs.map((r) => [r.id, r]));
  state.runSeqs = new Map();
  // Resume from the seq this tab had when it is older than the head (a few events again,
  // de-duplicated), never from a seq the daemon does not have (a new data dir).
  const saved = savedSeq();
  state.lastSeq = saved !== null && saved < head ? saved : head;
  saveSeq();
}

/** @type {ReturnType<typeof setInterval> | undefined} */
let authTimer;

async function start() {
  try {
    await loadState();
  } catch (e) {
    if (state.pairing) return;
    // The daemon is unreachable: show what we can and keep trying.
    show('list');
    $('no-sessions').hidden = false;
    $('no-sessions').textContent = 'Cannot reach the daemon (' + errorText(e) + '). Retrying…';
    setTimeout(start, 3000);
    return;
  }
  $('no-sessions').textContent = 'No sessions yet.';
  state.started = true;
  state.view = null;
  if (!authTimer) authTimer = setInterval(() => document.visibilityState === 'visible' && checkAuth(), 30000);
  route();
  connect();
  flushDecisions();
}

async function boot() {
  if (await pairFromLink()) await start();
}

function wire() {
  $('back').addEventListener('click', () => {
    location.hash = state.back;
  });
  $('new-session').addEventListener('click', openNewSession);
  $('new-form').addEventListener('submit', createSession);
  $('new-cancel').addEventListener('click', () => $('new-dialog', HTMLDialogElement).close());
  $('new-dialog').addEventListener('close', () => $('new-session').focus());
  $('pair-form').addEventListener('submit', (ev) => submitPair(ev, start));
  $('composer').addEventListener('submit', (ev) => {
    ev.preventDefault();
    sendMessage();
  });
  $('message').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      sendMessage();
    }
  });
  $('steer').addEventListener('click', steer);
  $('stop').addEventListener('click', stop);
  $('approve').addEventListener('click', () => decide('accept'));
  $('decline').addEventListener('click', () => decide('decline'));
  $('approval-dialog').addEventListener('cancel', () => {
    putAside();
    if (state.view) setTimeout(() => $('message').focus(), 0);
  });
  $('review-pending').addEventListener('click', reviewPending);
  $('run-resume').addEventListener('click', resumeRun);
  $('run-cancel').addEventListener('click', cancelRun);
  $('budget-form').addEventListener('submit', setBudget);
  $('rediscover').addEventListener('click', rediscover);
  window.addEventListener('hashchange', route);
  window.addEventListener('online', () => {
    reconnectNow();
    reconnectTerminal();
  });
  window.addEventListener('offline', () => {
    // The socket may linger for a while after the network went; do not trust it. The
    // reconnect after 'online' resumes from lastSeq, so nothing is lost.
    closeSocket();
    dropTerminalSocket();
    updateIndicator();
  });
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') {
      reconnectNow();
      reconnectTerminal();
    } else saveOpenTerminal();
  });
  window.addEventListener('pageshow', (ev) => {
    if (ev.persisted) {
      reconnectNow();
      reconnectTerminal();
    }
  });
  // A reload (or the back/forward cache) finds what the terminal showed, with its offset.
  window.addEventListener('pagehide', saveOpenTerminal);
  wireTerminal();
}

listen({ unauthorized: showPairing, reachability: updateIndicator });
// After a reconnect the replay from lastSeq brings what was missed; the runs (and the
// terminals, on their screen) are read again too.
configure({ receive, unauthorized: showPairing, opened: reopened });
onChange(() => {
  renderList();
  renderSessionHead();
  renderRuns();
  renderRun();
  renderApproval();
  renderTerminals();
  renderBridge();
});

if ('serviceWorker' in navigator) {
  window.addEventListener('load', () => {
    navigator.serviceWorker.register('/sw.js', { scope: '/' }).catch(() => {});
  });
}

wire();
updateIndicator();
boot();
