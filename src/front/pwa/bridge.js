// @ts-check
// The Terminals screen (#/terminals): the terminal emulators the daemon can
// drive (tmux, kitty, WezTerm, Konsole, Tilix, Alacritty) and its own `pty`
// terminals. The capability map (`GET /api/v1/terminals`, kept current by
// `termbridge:capability_update`) with each terminal's state, version,
// capabilities, notes and risk flags, its consent (Grant / Revoke) when it
// needs one, and a form that starts something in a running one; "Discover
// again". The bindings (`GET /api/v1/terminals/bindings`, kept current by
// `termbridge:binding` and `termbridge:binding_lost`), each with only the
// actions its terminal's capabilities allow: Focus, Send (Enter, paste),
// Read (the text shown as text), and Close. A spawn or a send the policy
// holds is shown as waiting for approval, and decided in the approval
// dialog of approvals.js. The state is in the store; this module keeps only
// what the page shows of its own actions (a line under each card, the text
// read back).
import { state, changed, putTerminal, queuedIds } from './store.js';
import { call, errorText } from './api.js';
import { askApproval } from './approvals.js';
import { $, el, show } from './dom.js';

/** @typedef {import('./store.js').BindingView} BindingView */
/** @typedef {import('./store.js').TerminalView} TerminalView */
/** @typedef {import('./store.js').TerminalKind} TerminalKind */
/** @typedef {import('./store.js').ApprovalView} ApprovalView */
/** @typedef {import('./types/api').TerminalCapabilities} TerminalCapabilities */
/** @typedef {import('./types/api').ActionDone} ActionDone */
/** @typedef {import('./types/api').Placement} Placement */
/** @typedef {import('./types/api').SpawnTerminalRequest} SpawnTerminalRequest */

/** The map's order (the daemon's): `pty`, then the emulators. */
const ORDER = ['pty', 'tmux', 'kitty', 'wezterm', 'konsole', 'tilix', 'alacritty'];
/** @type {Record<string, string>} */
const NAMES = { pty: 'pty (Bosun)', tmux: 'tmux', kitty: 'kitty', wezterm: 'WezTerm', konsole: 'Konsole', tilix: 'Tilix', alacritty: 'Alacritty' };
/** @type {[keyof TerminalCapabilities, string][]} */
const CAPS = [
  ['spawn', 'spawn'],
  ['split', 'split'],
  ['focus', 'focus'],
  ['send_text', 'send text'],
  ['read_text', 'read back'],
  ['clipboard_read', 'clipboard read'],
  ['clipboard_write', 'clipboard write'],
  ['cwd_sync', 'cwd sync'],
  ['bracketed_paste', 'bracketed paste'],
];
/** Bindings that ended (lost, exited) still listed, newest first. */
const ENDED_SHOWN = 20;
/** The most of a text read back shown (a `pty`'s whole scrollback may be megabytes). */
const READ_SHOWN = 20000;

/** @type {Map<string, { text: string, error: boolean }>} the last action's outcome, by binding id or `map:<kind>` */
const notes = new Map();
/** @type {Map<string, string>} the text Read brought back, by binding id */
const readBack = new Map();
/** @type {WeakMap<Element, string>} what each part of a card was last built from */
const builtFrom = new WeakMap();
let loading = false;

/** @param {string} kind */
function nameOf(kind) {
  return NAMES[kind] || kind;
}

/**
 * Rebuilds `node`'s children with `build` only when `key` changed, so a
 * redraw (once per event) never replaces a button under a finger.
 * @param {HTMLElement} node
 * @param {string} key
 * @param {() => (Node | string)[]} build
 */
function sync(node, key, build) {
  if (builtFrom.get(node) === key) return;
  builtFrom.set(node, key);
  node.replaceChildren(...build());
}

/**
 * Keeps `ul` one `li` per item, in order: each made once by `make` (keyed by
 * `keyOf`) and brought up to date by `update`.
 * @template T
 * @param {HTMLElement} ul
 * @param {T[]} items
 * @param {(item: T) => string} keyOf
 * @param {(item: T) => HTMLElement} make
 * @param {(li: HTMLElement, item: T) => void} update
 */
function keyed(ul, items, keyOf, make, update) {
  /** @type {Map<string | undefined, HTMLElement>} */
  const existing = new Map([...ul.children].map((li) => [/** @type {HTMLElement} */ (li).dataset.key, /** @type {HTMLElement} */ (li)]));
  /** @type {HTMLElement | null} */
  let prev = null;
  for (const item of items) {
    const key = keyOf(item);
    let li = existing.get(key);
    existing.delete(key);
    if (!li) {
      li = make(item);
      li.dataset.key = key;
    }
    update(li, item);
    if (prev ? prev.nextSibling !== li : ul.firstChild !== li) {
      if (prev) prev.after(li);
      else ul.prepend(li);
    }
    prev = li;
  }
  for (const li of existing.values()) li.remove();
}

/** @param {string | null | undefined} ts an RFC 3339 time, shown short in the device's zone */
function when(ts) {
  if (!ts) return '';
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? ts : d.toLocaleString(undefined, { dateStyle: 'short', timeStyle: 'medium' });
}

/** @param {string} key @param {string} text @param {boolean} [error] */
function note(key, text, error = false) {
  notes.set(key, { text, error });
  changed();
}

/**
 * Splits a command line into its words: at spaces, `'…'` and `"…"` keeping
 * theirs (no other shell syntax: nothing is expanded).
 * @param {string} line
 * @returns {string[]}
 */
export function words(line) {
  /** @type {string[]} */
  const out = [];
  let word = '';
  let inWord = false;
  let quote = '';
  for (const c of line) {
    if (quote) {
      if (c === quote) quote = '';
      else word += c;
    } else if (c === "'" || c === '"') {
      quote = c;
      inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) out.push(word);
      word = '';
      inWord = false;
    } else {
      word += c;
      inWord = true;
    }
  }
  if (quote) throw new Error('the command has an unclosed ' + quote);
  if (inWord) out.push(word);
  return out;
}

// ---- loading ----

/** Shows the screen, from the store at once, and reads the map and the bindings again. */
export function openTerminals() {
  show('terminals');
  refreshTerminals();
  changed();
}

/**
 * The map and every binding, from the API (on opening the screen, and after
 * a reconnect while it is open); what an event changed meanwhile is kept.
 */
export async function refreshTerminals() {
  if (loading) return;
  loading = true;
  const sentAt = state.lastSeq;
  try {
    const [map, list] = await Promise.all([call('GET /api/v1/terminals'), call('GET /api/v1/terminals/bindings')]);
    for (const entry of map.terminals) putTerminal({ entry }, sentAt);
    for (const binding of list.bindings) putTerminal({ binding }, sentAt);
    $('bridge-error').textContent = '';
  } catch (e) {
    $('bridge-error').textContent = 'Could not list the terminals: ' + errorText(e);
  } finally {
    loading = false;
    changed();
  }
}

/** "Discover again": the daemon looks for the terminals again (`POST /api/v1/terminals/discover`). */
export async function rediscover() {
  const button = $('rediscover', HTMLButtonElement);
  button.disabled = true;
  $('bridge-error').textContent = '';
  const sentAt = state.lastSeq;
  try {
    const map = await call('POST /api/v1/terminals/discover');
    for (const entry of map.terminals) putTerminal({ entry }, sentAt);
  } catch (e) {
    $('bridge-error').textContent = 'Could not discover the terminals: ' + errorText(e);
  } finally {
    button.disabled = false;
    changed();
  }
}

// ---- what waits for a person ----

/** The terminal approvals pending and not decided on this device, oldest first. */
function waiting() {
  const queued = queuedIds();
  return [...state.pending.values()]
    .filter((a) => a.action.kind === 'terminal' && !queued.has(a.id))
    .sort((a, b) => (a.requested_at || '').localeCompare(b.requested_at || ''));
}

/** @param {ApprovalView} a a terminal approval: what it would do */
function waitingText(a) {
  const act = a.action;
  if (act.kind !== 'terminal') return 'Waiting for approval';
  return act.action === 'spawn'
    ? 'Waiting for approval: start ' + (act.text || 'a shell') + ' in ' + nameOf(act.terminal)
    : 'Waiting for approval: send ' + act.text;
}

/** @param {ApprovalView} a */
function waitingItem(a) {
  return el(
    'li',
    { class: 'waiting-approval', 'data-testid': 'waiting-approval', 'data-approval': a.id },
    el('span', { class: 'waiting-text', text: waitingText(a) }),
    button('Review', () => askApproval(a.id)),
  );
}

/**
 * @param {string} name
 * @param {() => void} onClick
 * @param {Record<string, string | boolean>} [attrs]
 */
function button(name, onClick, attrs = {}) {
  const b = el('button', Object.assign({ type: 'button' }, attrs), name);
  b.addEventListener('click', onClick);
  return b;
}

// ---- drawing ----

export function renderBridge() {
  if (state.screen !== 'terminals') return;
  const held = waiting();
  const spawns = held.filter((a) => a.action.kind === 'terminal' && !a.action.binding_id);
  keyed($('bridge-waiting'), spawns, (a) => a.id, waitingItem, () => {});
  $('bridge-waiting').hidden = spawns.length === 0;
  renderBindings(held);
  renderMap();
}

/** @param {ApprovalView[]} held */
function renderBindings(held) {
  const all = [...state.terminals.values()].filter((b) => b.state !== 'closed');
  all.sort((a, b) => Number(b.state === 'open') - Number(a.state === 'open') || (b.created_at || '').localeCompare(a.created_at || ''));
  const open = all.filter((b) => b.state === 'open');
  const shown = open.concat(all.filter((b) => b.state !== 'open').slice(0, ENDED_SHOWN));
  $('no-bindings').hidden = shown.length > 0;
  keyed($('bindings'), shown, (b) => b.binding_id, makeBinding, (li, b) => updateBinding(li, b, held));
}

/** @param {BindingView} b */
function makeBinding(b) {
  return el(
    'li',
    { 'data-testid': 'binding', 'data-binding': b.binding_id, 'aria-label': 'Binding ' + b.binding_id },
    el('div', { class: 'card-head' }),
    el('div', { class: 'meta' }),
    el('ul', { class: 'card-waiting', 'aria-label': 'Waiting for approval' }),
    el('div', { class: 'card-actions' }),
    el('p', { class: 'note', role: 'status' }),
    el('pre', { class: 'read-back', 'data-testid': 'read-text', tabindex: 0, 'aria-label': 'Text read back', hidden: true }),
  );
}

/** @param {BindingView} b */
function stateText(b) {
  if (b.state === 'lost') return 'lost' + (b.reason ? ': ' + b.reason : '');
  if (b.state === 'exited' && b.exit) {
    if (b.exit.signal) return 'exited (' + b.exit.signal + ')';
    return 'exited ' + (b.exit.code === null || b.exit.code === undefined ? '?' : b.exit.code);
  }
  return b.state;
}

/**
 * @param {HTMLElement} li
 * @param {BindingView} b
 * @param {ApprovalView[]} held
 */
function updateBinding(li, b, held) {
  const [head, meta, wait, actions, line, pre] = /** @type {HTMLElement[]} */ ([...li.children]);
  li.dataset.state = b.state;
  li.dataset.terminal = b.terminal;
  const label = b.command && b.command.length ? b.command.join(' ') : 'shell';
  const status = stateText(b);
  sync(head, JSON.stringify([b.terminal, label, b.state, status]), () => [
    el('strong', { class: 'card-name', text: nameOf(b.terminal) }),
    el('span', { class: 'card-label', text: label }),
    el('span', { class: 'status', 'data-status': b.state, 'data-testid': 'binding-state', text: status }),
  ]);
  const sid = b.session_id || null;
  const session = sid ? state.sessions.get(sid) : undefined;
  sync(meta, JSON.stringify([b.ipc_endpoint, b.cwd, sid, session ? session.title : '', b.binding_id]), () => {
    /** @type {(Node | string)[]} */
    const parts = [el('span', { class: 'endpoint', 'data-testid': 'ipc-endpoint', text: b.ipc_endpoint })];
    // An emulator's cwd is known once its shell reports it (OSC 7) or it was started in one.
    if (b.cwd) parts.push(' · ', el('span', { class: 'cwd', 'data-testid': 'cwd', text: b.cwd }));
    parts.push(' · ' + b.binding_id);
    if (sid) {
      const href = '#/s/' + encodeURIComponent(sid) + (b.terminal === 'pty' ? '/t/' + encodeURIComponent(b.binding_id) : '');
      parts.push(' · ', el('a', { href, text: 'session ' + (session && session.title ? session.title : sid) }));
    }
    return parts;
  });
  const mine = held.filter((a) => a.action.kind === 'terminal' && a.action.binding_id === b.binding_id);
  keyed(wait, mine, (a) => a.id, waitingItem, () => {});
  wait.hidden = mine.length === 0;
  const entry = state.terminalMap.get(b.terminal);
  const caps = entry ? entry.capabilities : null;
  sync(actions, JSON.stringify([b.state, caps]), () => (b.state === 'open' ? bindingActions(b, caps) : []));
  const n = notes.get(b.binding_id);
  line.textContent = n ? n.text : '';
  line.classList.toggle('error', !!(n && n.error));
  const text = readBack.get(b.binding_id);
  pre.hidden = text === undefined;
  if (text !== undefined && pre.textContent !== text) pre.textContent = text;
}

/**
 * The actions a binding's terminal allows, and Close.
 * @param {BindingView} b
 * @param {TerminalCapabilities | null} caps null while the map is not known yet
 * @returns {HTMLElement[]}
 */
function bindingActions(b, caps) {
  const id = b.binding_id;
  const row = el('div', { class: 'buttons' });
  if (caps && caps.focus) row.append(button('Focus', () => focusBinding(id)));
  if (caps && caps.read_text) row.append(button('Read', () => readBinding(id)));
  row.append(button('Close', () => closeBinding(id), { class: 'danger' }));
  if (!caps || !caps.send_text) return [row];
  const field = 'send-' + id;
  const input = el('input', { id: field, name: 'text', autocomplete: 'off', autocapitalize: 'off', spellcheck: 'false', required: true });
  const enter = el('input', { type: 'checkbox', id: field + '-enter', name: 'enter' });
  const paste = caps.bracketed_paste ? el('input', { type: 'checkbox', id: field + '-paste', name: 'paste' }) : null;
  const form = el(
    'form',
    { class: 'form send-form', 'aria-label': 'Send text to ' + id },
    el('label', { for: field, text: 'Text to send' }),
    input,
    el('div', { class: 'checks' },
      el('label', { class: 'check', for: field + '-enter' }, enter, ' Enter'),
      paste ? el('label', { class: 'check', for: field + '-paste' }, paste, ' Paste') : null,
    ),
    el('button', { type: 'submit' }, 'Send'),
  );
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    sendText(id, input, enter, !!(paste && paste.checked));
  });
  return [row, form];
}

/**
 * What an action came to: done, or held for a person (the dialog asks).
 * @param {string} id
 * @param {ActionDone} done
 * @param {number} sentAt
 * @param {string} text said when it was done
 */
function acted(id, done, sentAt, text) {
  putTerminal({ binding: done.binding }, sentAt);
  if (done.outcome === 'awaiting_approval' && done.approval_id) {
    note(id, 'Waiting for approval (see above, or the approval dialog).');
    askApproval(done.approval_id);
  } else note(id, text);
}

/** @param {string} id */
async function focusBinding(id) {
  const sentAt = state.lastSeq;
  note(id, 'Focusing…');
  try {
    acted(id, await call('POST /api/v1/terminals/bindings/{id}/focus', { params: { id } }), sentAt, 'Focused.');
  } catch (e) {
    note(id, 'Could not focus it: ' + errorText(e), true);
  }
}

/** @param {string} id */
async function readBinding(id) {
  note(id, 'Reading…');
  try {
    const got = await call('GET /api/v1/terminals/bindings/{id}/text', { params: { id } });
    // The screen's blank lines at its end say nothing.
    const text = got.text.replace(/\s+$/, '');
    readBack.set(id, text.length > READ_SHOWN ? text.slice(-READ_SHOWN) : text);
    note(id, 'Read at ' + when(new Date().toISOString()) + (text.length > READ_SHOWN ? ' (its last ' + READ_SHOWN + ' characters):' : ':'));
  } catch (e) {
    note(id, 'Could not read it: ' + errorText(e), true);
  }
}

/** @param {string} id */
async function closeBinding(id) {
  const sentAt = state.lastSeq;
  note(id, 'Closing…');
  try {
    acted(id, await call('DELETE /api/v1/terminals/bindings/{id}', { params: { id } }), sentAt, 'Closed.');
  } catch (e) {
    note(id, 'Could not close it: ' + errorText(e), true);
  }
}

/**
 * Sends the text box's text; once sent (or held), the box is emptied and
 * Enter unticked, so the next text runs nothing unless asked to.
 * @param {string} id
 * @param {HTMLInputElement} input
 * @param {HTMLInputElement} enterBox
 * @param {boolean} paste
 */
async function sendText(id, input, enterBox, paste) {
  const text = input.value;
  const enter = enterBox.checked;
  if (!text && !enter) return;
  const sentAt = state.lastSeq;
  note(id, 'Sending…');
  try {
    const done = await call('POST /api/v1/terminals/bindings/{id}/send', { params: { id }, body: { text, enter, paste } });
    input.value = '';
    enterBox.checked = false;
    acted(id, done, sentAt, 'Sent.');
  } catch (e) {
    note(id, 'Could not send it: ' + errorText(e), true);
  }
}

// ---- the capability map ----

function renderMap() {
  const entries = [...state.terminalMap.values()].sort((a, b) => ORDER.indexOf(a.terminal) - ORDER.indexOf(b.terminal));
  $('no-map').hidden = entries.length > 0;
  keyed($('terminal-map'), entries, (t) => t.terminal, makeEntry, updateEntry);
}

/** @param {TerminalView} t */
function makeEntry(t) {
  return el(
    'li',
    { 'data-testid': 'terminal-entry', 'data-terminal': t.terminal, 'aria-label': nameOf(t.terminal) },
    el('div', { class: 'card-head' }),
    el('div', { class: 'entry-info' }),
    el('div', { class: 'entry-consent' }),
    el('div', { class: 'entry-spawn' }),
    el('p', { class: 'note', role: 'status' }),
  );
}

/** @param {TerminalView} t */
function presence(t) {
  if (t.running) return ['running', t.reachable ? 'running' : 'running, not answering'];
  if (t.installed) return ['installed', 'installed, not running'];
  return ['missing', 'not installed'];
}

/** @param {TerminalView} t */
function consented(t) {
  return !t.requires_opt_in || !!t.consent_granted_at;
}

/** @param {HTMLElement} li @param {TerminalView} t */
function updateEntry(li, t) {
  const [head, info, consent, spawn, line] = /** @type {HTMLElement[]} */ ([...li.children]);
  const [presenceKey, presenceText] = presence(t);
  li.dataset.running = String(t.running);
  li.dataset.installed = String(t.installed);
  sync(head, JSON.stringify([presenceKey, presenceText, t.version]), () => [
    el('strong', { class: 'card-name', text: nameOf(t.terminal) }),
    el('span', { class: 'status', 'data-status': presenceKey, 'data-testid': 'presence', text: presenceText }),
    t.version ? el('span', { class: 'version', 'data-testid': 'version', text: t.version }) : '',
  ]);
  sync(info, JSON.stringify([t.capabilities, t.notes, t.risk_flags]), () => {
    const caps = CAPS.filter(([k]) => t.capabilities[k]);
    return [
      el('ul', { class: 'chips caps', 'data-testid': 'capabilities', 'aria-label': 'What the daemon can do in ' + nameOf(t.terminal) },
        ...(caps.length ? caps.map(([k, text]) => el('li', { 'data-cap': k, text })) : [el('li', { class: 'none', text: 'nothing' })]),
      ),
      t.risk_flags.length
        ? el('ul', { class: 'chips risks', 'data-testid': 'risk-flags', 'aria-label': 'Risks' },
            ...t.risk_flags.map((r) => el('li', { 'data-risk': r, text: r.replace(/_/g, ' ') })),
          )
        : '',
      ...t.notes.map((n) => el('p', { class: 'hint', 'data-testid': 'note', text: n })),
    ];
  });
  sync(consent, JSON.stringify([t.requires_opt_in, t.consent_granted_at]), () => {
    if (!t.requires_opt_in) return [];
    const kind = t.terminal;
    return t.consent_granted_at
      ? [
          el('p', { class: 'consent', 'data-testid': 'consent', 'data-granted': 'true', text: 'Consent granted ' + when(t.consent_granted_at) + '.' }),
          button('Revoke consent', () => setConsent(kind, false), { class: 'danger' }),
        ]
      : [
          el('p', { class: 'consent', 'data-testid': 'consent', 'data-granted': 'false', text: 'Needs your consent: nothing is done in it until you grant it.' }),
          button('Grant consent', () => setConsent(kind, true)),
        ];
  });
  const canSpawn = t.terminal !== 'pty' && t.running && t.capabilities.spawn && consented(t);
  sync(spawn, JSON.stringify([t.terminal === 'pty', canSpawn, t.capabilities.split]), () => {
    if (t.terminal === 'pty') return [el('p', { class: 'hint', text: "Start one from a session's Terminal tab." })];
    return canSpawn ? [spawnForm(t)] : [];
  });
  if (canSpawn) updateSplitTargets(spawn, t.terminal);
  const n = notes.get('map:' + t.terminal);
  line.textContent = n ? n.text : '';
  line.classList.toggle('error', !!(n && n.error));
}

/**
 * @param {TerminalKind} kind
 * @param {boolean} grant
 */
async function setConsent(kind, grant) {
  const sentAt = state.lastSeq;
  const key = 'map:' + kind;
  note(key, grant ? 'Granting…' : 'Revoking…');
  try {
    const entry = grant
      ? await call('POST /api/v1/terminals/{terminal}/consent', { params: { terminal: kind } })
      : await call('DELETE /api/v1/terminals/{terminal}/consent', { params: { terminal: kind } });
    putTerminal({ entry }, sentAt);
    note(key, grant ? 'Consent granted.' : 'Consent revoked.');
  } catch (e) {
    note(key, 'Could not ' + (grant ? 'grant' : 'revoke') + ' consent: ' + errorText(e), true);
  }
}

/**
 * The form that starts something in a running terminal: a command (the
 * user's shell when empty), a directory, and where (a window, a tab, or,
 * where the terminal splits, a split of one of its bound panes).
 * @param {TerminalView} t
 */
function spawnForm(t) {
  const kind = t.terminal;
  const id = 'spawn-' + kind;
  const command = el('input', { id: id + '-command', name: 'command', placeholder: 'empty: your shell', autocomplete: 'off', autocapitalize: 'off', spellcheck: 'false' });
  const cwd = el('input', { id: id + '-cwd', name: 'cwd', placeholder: "/absolute/path (default: the daemon's)", autocomplete: 'off', autocapitalize: 'off', spellcheck: 'false' });
  const placement = el('select', { id: id + '-placement', name: 'placement' },
    el('option', { value: 'window' }, 'window'),
    el('option', { value: 'tab' }, 'tab'),
    t.capabilities.split ? el('option', { value: 'split' }, 'split of a bound pane') : null,
  );
  const target = el('select', { id: id + '-split-of', name: 'split_of', class: 'split-of' });
  const targetLabel = el('label', { for: id + '-split-of', text: 'Split which' });
  const showTarget = () => {
    const split = placement.value === 'split';
    target.hidden = !split;
    targetLabel.hidden = !split;
  };
  placement.addEventListener('change', showTarget);
  const form = el(
    'form',
    { class: 'form spawn-form', 'aria-label': 'Start in ' + nameOf(kind) },
    el('label', { for: id + '-command', text: 'Command' }),
    command,
    el('p', { class: 'hint', text: "Words split at spaces; quote with ' or \". Nothing is expanded." }),
    el('label', { for: id + '-cwd', text: 'Working directory' }),
    cwd,
    el('label', { for: id + '-placement', text: 'Placement' }),
    placement,
    targetLabel,
    target,
    el('button', { type: 'submit', class: 'primary' }, 'Start'),
  );
  showTarget();
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    spawnIn(kind, form, command.value, cwd.value.trim(), placement.value, target.value);
  });
  return el('details', { class: 'isolation spawn' }, el('summary', { text: 'Start in ' + nameOf(kind) }), form);
}

/**
 * Keeps the spawn form's "Split which" the open bindings of its terminal
 * (the form itself is not rebuilt, so what is typed in it stays).
 * @param {HTMLElement} spawn
 * @param {TerminalKind} kind
 */
function updateSplitTargets(spawn, kind) {
  const select = spawn.querySelector('select.split-of');
  if (!(select instanceof HTMLSelectElement)) return;
  const open = [...state.terminals.values()].filter((b) => b.terminal === kind && b.state === 'open');
  const key = JSON.stringify(open.map((b) => [b.binding_id, b.ipc_endpoint]));
  sync(select, key, () => open.map((b) => el('option', { value: b.binding_id }, b.ipc_endpoint + ' (' + b.binding_id + ')')));
  const placement = spawn.querySelector('select[name="placement"]');
  const split = placement instanceof HTMLSelectElement ? placement.querySelector('option[value="split"]') : null;
  if (split instanceof HTMLOptionElement) split.disabled = open.length === 0;
}

/**
 * @param {TerminalKind} kind
 * @param {HTMLFormElement} form
 * @param {string} line
 * @param {string} cwd
 * @param {string} where
 * @param {string} splitOf
 */
async function spawnIn(kind, form, line, cwd, where, splitOf) {
  const key = 'map:' + kind;
  /** @type {SpawnTerminalRequest} */
  const body = { terminal: kind, placement: /** @type {Placement} */ (where) };
  const sentAt = state.lastSeq;
  try {
    body.command = words(line);
    if (cwd) body.cwd = cwd;
    if (where === 'split') {
      if (!splitOf) throw new Error('no bound pane of ' + nameOf(kind) + ' to split');
      body.split_of = splitOf;
    }
    note(key, 'Starting…');
    const out = await call('POST /api/v1/terminals/bindings', { body });
    form.reset();
    if (out.outcome === 'awaiting_approval' && out.approval) {
      if (out.approval.status === 'pending') state.pending.set(out.approval.id, out.approval);
      note(key, 'Waiting for approval to start it.');
      askApproval(out.approval.id);
    } else if (out.binding) {
      putTerminal({ binding: out.binding }, sentAt);
      note(key, 'Started: ' + out.binding.ipc_endpoint + ' (' + out.binding.binding_id + ').');
    }
  } catch (e) {
    note(key, 'Could not start it: ' + errorText(e), true);
  }
}
