// @ts-check
// Sessions: the list, the open session's head and composer (Send, Steer,
// Stop), opening a session (its history, then the live events that came
// meanwhile) and the New session form.
import { state, queuedIds, changed } from './store.js';
import { call, eventsPage, errorText, HttpError } from './api.js';
import { renderEvent } from './transcript.js';
import { $, el, show } from './dom.js';

/** @typedef {import('./store.js').SessionView} SessionView */
/** @typedef {import('./store.js').SessionId} SessionId */
/** @typedef {import('./store.js').OpenSession} OpenSession */
/** @typedef {import('./types/api').CreateSessionRequest} CreateSessionRequest */

const PAGE = 1000;

/** @param {SessionId} id approvals waiting on a person, less those decided here */
function pendingCount(id) {
  let n = 0;
  const queued = queuedIds();
  for (const a of state.pending.values()) if (a.session_id === id && !queued.has(a.id)) n++;
  return n;
}

export function renderList() {
  const ul = $('sessions');
  const sessions = [...state.sessions.values()]
    .filter((s) => !s.archived)
    .sort((a, b) => (b.created_at || '').localeCompare(a.created_at || ''));
  $('no-sessions').hidden = sessions.length > 0;
  /** @type {Map<string | undefined, HTMLElement>} */
  const existing = new Map([...ul.children].map((li) => [/** @type {HTMLElement} */ (li).dataset.session, /** @type {HTMLElement} */ (li)]));
  /** @type {HTMLElement | null} */
  let prev = null;
  for (const s of sessions) {
    let li = existing.get(s.id);
    existing.delete(s.id);
    if (!li) {
      li = el(
        'li',
        { 'data-session': s.id },
        el('a', { href: '#/s/' + encodeURIComponent(s.id) }),
        el('span', { class: 'status' }),
        el('span', { class: 'badge', hidden: true }),
        el('span', { class: 'meta' }),
      );
    }
    const [a, status, badge, meta] = /** @type {HTMLElement[]} */ ([...li.children]);
    if (a.textContent !== s.title) a.textContent = s.title || s.id;
    status.textContent = (s.status || '').replace('_', ' ');
    status.dataset.status = s.status || '';
    li.classList.toggle('violated', !!s.violation);
    const n = pendingCount(s.id);
    badge.hidden = n === 0;
    badge.textContent = String(n);
    badge.setAttribute('aria-label', n + ' pending approval' + (n === 1 ? '' : 's'));
    meta.textContent = sessionMeta(s);
    if (prev ? prev.nextSibling !== li : ul.firstChild !== li) {
      if (prev) prev.after(li);
      else ul.prepend(li);
    }
    prev = li;
  }
  for (const li of existing.values()) li.remove();
}

/**
 * provider · policy [· sandbox [+ network]] · branch or cwd
 * @param {SessionView} s
 */
function sessionMeta(s) {
  const parts = [s.provider, s.policy];
  if (s.sandbox && s.sandbox !== 'none') parts.push(s.sandbox + (s.network ? ' + network' : ''));
  parts.push(s.workspace ? s.workspace.repo + ' @ bosun/' + s.id : s.cwd);
  return parts.join(' · ');
}

function currentSession() {
  return state.view ? state.sessions.get(state.view.id) : undefined;
}

/** The open session's running turn: as the daemon last said, else as its transcript saw. */
function activeTurn() {
  const s = currentSession();
  if (s && s.active_turn) return s.active_turn;
  return state.view ? state.view.activeTurn : null;
}

export function renderSessionHead() {
  const s = currentSession();
  if (!state.view) return;
  $('session-title').textContent = s ? s.title : state.view.id;
  $('session-meta').textContent = s ? sessionMeta(s) : '';
  $('title').textContent = s ? s.title : 'Bosun';
  const st = $('session-status');
  st.textContent = s ? (s.status || '').replace('_', ' ') : '';
  st.dataset.status = s ? s.status : '';
  const active = !!activeTurn();
  $('stop', HTMLButtonElement).disabled = !active;
  $('steer', HTMLButtonElement).disabled = !active;
  const violation = s && s.violation;
  $('violation-banner').hidden = !violation;
  if (violation) {
    $('violation-text').textContent =
      'The agent ' +
      (violation.what || 'acted') +
      ' without an approval. The turn was stopped, and ' +
      (violation.provider || 'its provider') +
      ' is no longer trusted for plan-only sessions.';
  }
  const n = pendingCount(state.view.id);
  $('pending-banner').hidden = n === 0;
  $('pending-text').textContent = n + ' action' + (n === 1 ? '' : 's') + ' waiting for a decision';
}

/**
 * Shows a session: its stored events first, then the live ones that arrived
 * meanwhile, each once.
 * @param {SessionId} id
 */
export async function openSession(id) {
  /** @type {OpenSession} */
  const v = { id, seqs: new Set(), chunks: new Set(), loading: true, buffer: [], activeTurn: null, tools: new Map(), agentBlock: null, lastRow: null };
  state.view = v;
  $('transcript').replaceChildren();
  $('composer-error').textContent = '';
  show('session');
  renderSessionHead();
  try {
    if (!state.sessions.has(id)) {
      const s = await call('GET /api/v1/sessions/{id}', { params: { id } });
      state.sessions.set(id, s);
      for (const a of s.pending_approvals || []) state.pending.set(a.id, a);
    }
    let since = 0;
    for (;;) {
      const page = await eventsPage({ session: id, since, limit: PAGE });
      if (state.view !== v) return;
      for (const ev of page.events) renderEvent(ev);
      since = page.next;
      if (page.events.length < PAGE) break;
    }
  } catch (e) {
    if (state.view === v) $('composer-error').textContent = 'Could not load the session: ' + errorText(e);
  }
  if (state.view !== v) return;
  v.loading = false;
  v.buffer.sort((a, b) => a.seq - b.seq);
  for (const ev of v.buffer) renderEvent(ev);
  v.buffer = [];
  const box = $('transcript');
  box.scrollTop = box.scrollHeight;
  changed();
  // With a keyboard, typing can start at once; on a phone that would pop the keyboard up.
  if (matchMedia('(pointer: fine)').matches && !$('approval-dialog', HTMLDialogElement).open) $('message').focus();
}

export async function sendMessage() {
  const box = $('message', HTMLTextAreaElement);
  const text = box.value;
  if (!text.trim() || !state.view) return;
  $('composer-error').textContent = '';
  try {
    await call('POST /api/v1/sessions/{id}/turns', { params: { id: state.view.id }, body: { text } });
    box.value = '';
  } catch (e) {
    $('composer-error').textContent =
      e instanceof HttpError && e.code === 'busy' ? 'A turn is running: Steer or Stop it first.' : errorText(e);
  }
}

export async function steer() {
  const box = $('message', HTMLTextAreaElement);
  const turn = activeTurn();
  if (!box.value.trim() || !turn || !state.view) return;
  $('composer-error').textContent = '';
  try {
    await call('POST /api/v1/sessions/{id}/turns/{turn_id}/steer', {
      params: { id: state.view.id, turn_id: turn },
      body: { text: box.value },
    });
    box.value = '';
  } catch (e) {
    $('composer-error').textContent = errorText(e);
  }
}

export async function stop() {
  const turn = activeTurn();
  if (!turn || !state.view) return;
  $('composer-error').textContent = '';
  try {
    await call('POST /api/v1/sessions/{id}/turns/{turn_id}/interrupt', { params: { id: state.view.id, turn_id: turn } });
  } catch (e) {
    $('composer-error').textContent = errorText(e);
  }
}

export async function openNewSession() {
  $('new-error').textContent = '';
  const select = $('new-provider', HTMLSelectElement);
  if (!select.options.length) select.append(el('option', { value: 'demo', text: 'demo' }));
  $('new-dialog', HTMLDialogElement).showModal();
  $('new-provider').focus();
  try {
    const { providers } = await call('GET /api/v1/providers');
    const keep = select.value;
    select.replaceChildren(
      ...providers.map((p) =>
        el('option', {
          value: p.name,
          text: p.name + (p.status && p.status !== 'available' && p.status !== 'running' ? ' (' + p.status + ')' : ''),
        }),
      ),
    );
    if (providers.some((p) => p.name === keep)) select.value = keep;
  } catch (e) {
    $('new-error').textContent = 'Could not list providers: ' + errorText(e);
  }
}

/** @param {SubmitEvent} ev */
export async function createSession(ev) {
  ev.preventDefault();
  const value = (/** @type {string} */ id) => $(id, HTMLInputElement).value.trim();
  const policy = /** @type {CreateSessionRequest['policy']} */ ($('new-policy', HTMLSelectElement).value);
  /** @type {CreateSessionRequest} */
  const body = { provider: $('new-provider', HTMLSelectElement).value || 'demo', policy };
  const cwd = value('new-cwd');
  const title = value('new-title');
  const repo = value('new-repo');
  const branch = value('new-branch');
  if (repo && cwd) {
    $('new-error').textContent = 'Give a working directory or a git repository, not both: the repository gets a worktree of its own.';
    return;
  }
  if (repo) body.workspace = branch ? { repo, branch } : { repo };
  if (cwd) body.cwd = cwd;
  if (title) body.title = title;
  const sandbox = /** @type {CreateSessionRequest['sandbox']} */ ($('new-sandbox', HTMLSelectElement).value);
  if (sandbox && sandbox !== 'none') body.sandbox = sandbox;
  if ($('new-network', HTMLInputElement).checked) body.network = true;
  $('new-error').textContent = '';
  try {
    const s = await call('POST /api/v1/sessions', { body });
    state.sessions.set(s.id, s);
    $('new-dialog', HTMLDialogElement).close();
    $('new-title', HTMLInputElement).value = '';
    $('new-repo', HTMLInputElement).value = '';
    $('new-branch', HTMLInputElement).value = '';
    location.hash = '#/s/' + encodeURIComponent(s.id);
  } catch (e) {
    $('new-error').textContent = errorText(e);
  }
}
