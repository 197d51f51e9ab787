// @ts-check
// The open session's Terminal tab: its PTY terminals (`GET
// /api/v1/terminals/bindings?session_id=`, kept current by the
// `termbridge:binding` events the store reduces), "New terminal" (the user's
// shell in the session), one terminal open in xterm.js over
// `/ws/terminal/{id}` (binary frames, proto/src/terminal.rs), Close, and a
// row of keys a phone keyboard lacks (Esc, Tab, a sticky Ctrl, arrows).
//
// Byte-exact and resumable: every byte handed to xterm is counted by its
// offset in the terminal's stream (`written`), a frame's bytes before it are
// dropped and a socket always resumes with `?from=written`, so nothing is
// shown twice or skipped, whatever reconnects it (a dropped socket, with
// backoff; `online`; a `pageshow` from the back/forward cache). The bytes
// shown (their last CACHE_BYTES) and their end offset are kept together in
// sessionStorage (and localStorage), so a reload puts them back on the new
// screen and resumes from that offset. What xterm has rendered (its write
// callback) is acknowledged, which is the daemon's flow control.
import { state, changed, savedTerminal, saveTerminal } from './store.js';
import { call, errorText } from './api.js';
import { Terminal } from './vendor/xterm.mjs';
import { FitAddon } from './vendor/addon-fit.mjs';
import { $, el } from './dom.js';

/** @typedef {import('./types/events').BindingView} BindingView */
/** @typedef {import('./types/events').BindingState} BindingState */
/** @typedef {import('./types/events').ExitView} ExitView */
/** @typedef {import('./types/events').OutputRange} OutputRange */
/** @typedef {import('./types/events').TerminalSize} TerminalSize */
/**
 * The socket's first frame (proto `TerminalHello`, not in the schemas).
 * @typedef {{ binding_id: string, from: number, output: OutputRange, state: BindingState, size?: TerminalSize | null }} TerminalHello
 */
/**
 * The socket's last frame (proto `TerminalExit`): every byte before `end` was sent.
 * @typedef {{ state: BindingState, exit?: ExitView | null, end: number, reason?: string | null }} TerminalExit
 */
/** @typedef {import('./types/api').SessionId} SessionId */

const FRAME = { OUTPUT: 0x01, HELLO: 0x02, EXIT: 0x03, CLIPBOARD: 0x04, INPUT: 0x10, RESIZE: 0x11, ACK: 0x12 };
/** The most one INPUT frame carries (the daemon takes frames up to 64 KiB). */
export const INPUT_PIECE = 16 * 1024;
/** How much of a terminal's output a reload puts back on screen. */
const CACHE_BYTES = 512 * 1024;
const SAVE_MS = 500;
const ACK_MS = 30;

/**
 * The terminal on screen: its xterm, its socket and where it is in the stream.
 * @typedef {object} OpenTerminal
 * @property {string} id
 * @property {SessionId} session
 * @property {Terminal} term
 * @property {FitAddon} fit
 * @property {WebSocket | null} ws
 * @property {number} written the offset after the last byte handed to xterm
 * @property {number} rendered the offset after the last byte xterm rendered (its write callback)
 * @property {number} acked the last offset acknowledged on this socket
 * @property {Uint8Array[]} cache the bytes shown, newest last (at most CACHE_BYTES kept)
 * @property {number} cached their length
 * @property {boolean} dirty written moved since the last save
 * @property {boolean} ended the EXIT frame came: no more reconnects
 * @property {number} backoff
 * @property {ReturnType<typeof setTimeout> | undefined} retry
 * @property {ReturnType<typeof setTimeout> | undefined} ackTimer
 * @property {ResizeObserver} observer
 */

/** @type {OpenTerminal | null} */
let open = null;
/** Ctrl was pressed on the key row: it applies to the next key. */
let ctrlArmed = false;
/** @type {ReturnType<typeof setInterval> | undefined} */
let saveTimer;
const encoder = new TextEncoder();

// ---- the list ----

/** @param {SessionId} session */
export async function loadTerminals(session) {
  try {
    const list = await call('GET /api/v1/terminals/bindings', { query: { session_id: session } });
    for (const b of list.bindings) if (b.terminal === 'pty') state.terminals.set(b.binding_id, b);
    changed();
  } catch (e) {
    if (state.view && state.view.id === session) $('term-error').textContent = 'Could not list the terminals: ' + errorText(e);
  }
}

/** @param {BindingView} b */
function stateText(b) {
  if (b.state === 'exited' && b.exit) {
    if (b.exit.signal) return 'exited (' + b.exit.signal + ')';
    return 'exited ' + (b.exit.code === null || b.exit.code === undefined ? '?' : b.exit.code);
  }
  return b.state;
}

/** @param {BindingView} b */
function label(b) {
  return b.command && b.command.length ? b.command.join(' ') : 'shell';
}

export function renderTerminals() {
  const view = state.view;
  if (!view || !state.sessionTab || state.sessionTab.session !== view.id) return;
  const mine = [...state.terminals.values()]
    .filter((b) => b.session_id === view.id && b.terminal === 'pty')
    .sort((a, b) => (b.created_at || '').localeCompare(a.created_at || ''));
  const ul = $('terminals');
  $('no-terminals').hidden = mine.length > 0;
  ul.replaceChildren(
    ...mine.map((b) =>
      el(
        'li',
        { 'data-binding': b.binding_id, 'data-state': b.state },
        el('a', { href: '#/s/' + encodeURIComponent(view.id) + '/t/' + encodeURIComponent(b.binding_id), text: label(b) }),
        el('span', { class: 'status', 'data-status': b.state, text: stateText(b) }),
        el('span', { class: 'meta', text: b.binding_id + ' · ' + b.cwd }),
      ),
    ),
  );
  const b = open && state.terminals.get(open.id);
  if (open && b) {
    $('term-title').textContent = label(b);
    const st = $('term-state');
    const text = stateText(b);
    if (st.textContent !== text) st.textContent = text;
    st.dataset.state = b.state;
    $('term-close', HTMLButtonElement).disabled = b.state !== 'open';
  }
}

export async function newTerminal() {
  const view = state.view;
  if (!view) return;
  $('term-error').textContent = '';
  const size = guessSize();
  try {
    // A shell with no command runs nothing by itself: it is never held for
    // an approval, so the answer has the binding.
    const started = await call('POST /api/v1/terminals/bindings', {
      body: { terminal: 'pty', session_id: view.id, command: [], cols: size.cols, rows: size.rows },
    });
    const b = started.binding;
    if (!b) throw new Error('the terminal waits for approval ' + (started.approval ? started.approval.id : ''));
    state.terminals.set(b.binding_id, b);
    location.hash = '#/s/' + encodeURIComponent(view.id) + '/t/' + encodeURIComponent(b.binding_id);
  } catch (e) {
    $('term-error').textContent = 'Could not start a terminal: ' + errorText(e);
  }
}

export async function closeTerminal() {
  if (!open) return;
  const id = open.id;
  $('term-error').textContent = '';
  try {
    await call('DELETE /api/v1/terminals/bindings/{id}', { params: { id } });
  } catch (e) {
    $('term-error').textContent = 'Could not close the terminal: ' + errorText(e);
  }
}

/** A first size for a new terminal, before xterm measures its box. */
function guessSize() {
  const box = $('term-wrap').getBoundingClientRect();
  const width = box.width || window.innerWidth;
  const height = box.height || window.innerHeight * 0.6;
  return { cols: Math.max(20, Math.floor(width / 7.8)), rows: Math.max(5, Math.floor(height / 17)) };
}

// ---- the tab: shown, and one terminal open ----

/**
 * Shows the session's transcript or its terminals (`binding`: that one open).
 * @param {'transcript' | 'terminal'} tab
 * @param {string | null} binding
 */
export function showTab(tab, binding) {
  const view = state.view;
  if (!view) return;
  state.sessionTab = tab === 'terminal' ? { session: view.id, binding } : null;
  const base = '#/s/' + encodeURIComponent(view.id);
  $('tab-transcript', HTMLAnchorElement).href = base;
  $('tab-terminal', HTMLAnchorElement).href = base + '/t';
  for (const [id, on] of [['tab-transcript', tab === 'transcript'], ['tab-terminal', tab === 'terminal']]) {
    const a = $(/** @type {string} */ (id));
    if (on) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  $('transcript').hidden = tab !== 'transcript';
  $('composer').hidden = tab !== 'transcript';
  $('terminal-panel').hidden = tab !== 'terminal';
  $('session-view').classList.toggle('terminal-open', tab === 'terminal' && !!binding);
  $('terminal-list').hidden = tab !== 'terminal' || !!binding;
  $('term-box').hidden = tab !== 'terminal' || !binding;
  if (tab !== 'terminal' || !binding) detach();
  if (tab === 'terminal') {
    if (binding && (!open || open.id !== binding)) attach(view.id, binding);
    loadTerminals(view.id);
  }
  renderTerminals();
}

/** Leaves the terminal on screen (its socket closed, what it showed saved). */
export function detach() {
  if (!open) return;
  const t = open;
  open = null;
  document.getElementById('term-clipboard')?.remove();
  save(t);
  clearTimeout(t.retry);
  clearTimeout(t.ackTimer);
  t.observer.disconnect();
  if (t.ws) {
    const ws = t.ws;
    t.ws = null;
    ws.close();
  }
  t.term.dispose();
  $('term').replaceChildren();
  setCtrl(false);
}

/**
 * Puts a terminal on screen: what this tab showed of it before (a reload),
 * then its stream from there.
 * @param {SessionId} session
 * @param {string} id
 */
function attach(session, id) {
  detach();
  const term = new Terminal({
    scrollback: 10000,
    cursorBlink: false,
    convertEol: false,
    fontSize: 14,
    fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace',
  });
  const fit = new FitAddon();
  term.loadAddon(fit);
  const host = $('term');
  host.replaceChildren();
  term.open(host);
  /** @type {OpenTerminal} */
  const t = {
    id,
    session,
    term,
    fit,
    ws: null,
    written: 0,
    rendered: 0,
    acked: 0,
    cache: [],
    cached: 0,
    dirty: false,
    ended: false,
    backoff: 0,
    retry: undefined,
    ackTimer: undefined,
    observer: new ResizeObserver(() => refit()),
  };
  open = t;
  const saved = savedTerminal(id);
  if (saved) {
    // What this tab had shown: back on the screen, and the stream goes on from its end.
    const bytes = saved.bytes;
    t.written = saved.offset;
    t.rendered = saved.offset;
    if (bytes.length) {
      t.cache.push(bytes);
      t.cached = bytes.length;
      term.write(bytes);
    }
  }
  t.observer.observe($('term-wrap'));
  term.onData((data) => sendInput(t, encoder.encode(applyCtrl(data))));
  term.onBinary((data) => sendInput(t, Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff)));
  term.onResize(({ cols, rows }) => sendResize(t, cols, rows));
  refit();
  connect(t);
  if (!saveTimer) saveTimer = setInterval(() => open && save(open), SAVE_MS);
  if (matchMedia('(pointer: fine)').matches) term.focus();
}

/** Fits the terminal to its box; xterm's onResize sends the new size. */
export function refit() {
  const vv = window.visualViewport;
  if (vv) document.documentElement.style.setProperty('--viewport-height', Math.round(vv.height) + 'px');
  if (!open || $('term-box').hidden) return;
  try {
    open.fit.fit();
  } catch (_) {
    // not laid out yet: the next resize fits it
  }
}

// ---- the socket ----

/** @param {OpenTerminal} t */
function connect(t) {
  if (open !== t || t.ended) return;
  if (t.ws && (t.ws.readyState === WebSocket.OPEN || t.ws.readyState === WebSocket.CONNECTING)) return;
  clearTimeout(t.retry);
  t.retry = undefined;
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const url = proto + '//' + location.host + '/ws/terminal/' + encodeURIComponent(t.id) + '?from=' + t.written;
  let ws;
  try {
    ws = new WebSocket(url);
  } catch (_) {
    retry(t, false);
    return;
  }
  ws.binaryType = 'arraybuffer';
  t.ws = ws;
  let hello = false;
  ws.onopen = () => {
    if (t.ws !== ws) return;
    // The token goes in the first message, never in the URL (which ends up in logs).
    if (state.token) ws.send(JSON.stringify({ op: 'auth', token: state.token }));
    t.acked = 0;
    sendResize(t, t.term.cols, t.term.rows);
  };
  ws.onmessage = (msg) => {
    if (t.ws !== ws || !(msg.data instanceof ArrayBuffer)) return;
    const frame = new Uint8Array(msg.data);
    if (!frame.length) return;
    if (frame[0] === FRAME.HELLO) {
      hello = true;
      t.backoff = 0;
      const h = /** @type {TerminalHello} */ (json(frame));
      // Older bytes than the daemon keeps are gone: the stream goes on from what it has.
      if (h.from > t.written) {
        t.term.write('\r\n\x1b[2m[' + (h.from - t.written) + ' bytes of output no longer kept]\x1b[0m\r\n');
        t.written = h.from;
      }
      updateBinding(t.id, { state: h.state, size: h.size || undefined, output: h.output });
    } else if (frame[0] === FRAME.OUTPUT && frame.length >= 9) {
      output(t, Number(new DataView(frame.buffer, frame.byteOffset + 1, 8).getBigUint64(0)), frame.subarray(9));
    } else if (frame[0] === FRAME.CLIPBOARD) {
      // Live only and outside the offsets: it never reaches xterm.
      const text = osc52Text(frame.subarray(1));
      if (text !== null) toClipboard(text);
    } else if (frame[0] === FRAME.EXIT) {
      const x = /** @type {TerminalExit} */ (json(frame));
      t.ended = true;
      updateBinding(t.id, { state: x.state, exit: x.exit, reason: x.reason });
    }
  };
  ws.onclose = (ev) => {
    if (t.ws !== ws) return;
    t.ws = null;
    if (t.ended || open !== t) return;
    if (ev.code === 4404) {
      t.ended = true;
      $('term-error').textContent = 'This terminal is gone.';
      return;
    }
    if (ev.code === 4401) {
      $('term-error').textContent = 'The daemon refused this device’s token.';
      return;
    }
    retry(t, hello);
  };
  ws.onerror = () => {
    // onclose follows and schedules the retry.
  };
}

/**
 * The text OSC 52 sequences carry (`ESC ] 52 ; sel ; base64 ST`), the
 * pieces of one batched write joined; null when there is none.
 * @param {Uint8Array} bytes
 * @returns {string | null}
 */
export function osc52Text(bytes) {
  const raw = Array.from(bytes, (b) => String.fromCharCode(b)).join('');
  const pieces = [];
  for (const m of raw.matchAll(/\x1b\]52;[^;\x07\x1b]*;([A-Za-z0-9+/=]*)(?:\x07|\x1b\\)/g)) {
    try {
      pieces.push(Uint8Array.from(atob(m[1]), (c) => c.charCodeAt(0)));
    } catch (_) {
      return null;
    }
  }
  if (!pieces.length) return null;
  const all = new Uint8Array(pieces.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of pieces) {
    all.set(p, at);
    at += p.length;
  }
  return new TextDecoder().decode(all);
}

/**
 * Puts text the daemon sent for this screen's clipboard there. A browser
 * may refuse a write the user did not start (no focus, no permission):
 * then a Copy button does it from the user's own tap.
 * @param {string} text
 */
function toClipboard(text) {
  const note = clipboardNote();
  const copied = () => {
    note.replaceChildren('Copied ' + text.length + ' characters to the clipboard.');
    note.dataset.state = 'copied';
  };
  const offer = () => {
    const button = el('button', { type: 'button', text: 'Copy' });
    button.addEventListener('click', () => {
      navigator.clipboard.writeText(text).then(copied, () => {
        note.replaceChildren('The browser refused the clipboard.');
        note.dataset.state = 'refused';
      });
    });
    note.replaceChildren('The terminal sent ' + text.length + ' characters for the clipboard. ', button);
    note.dataset.state = 'offered';
  };
  note.hidden = false;
  if (navigator.clipboard && navigator.clipboard.writeText) navigator.clipboard.writeText(text).then(copied, offer);
  else offer();
}

/** The line under the terminal that says what became of a clipboard write. */
function clipboardNote() {
  let note = document.getElementById('term-clipboard');
  if (!note) {
    note = el('p', { id: 'term-clipboard', class: 'meta', role: 'status', 'data-testid': 'terminal-clipboard' });
    $('term-box').append(note);
  }
  return note;
}

/**
 * A socket that had worked is tried again at once, one that never did after
 * a wait that doubles up to 10 s.
 * @param {OpenTerminal} t
 * @param {boolean} hadWorked
 */
function retry(t, hadWorked) {
  t.backoff = hadWorked ? 300 : Math.min(t.backoff ? t.backoff * 2 : 500, 10000);
  clearTimeout(t.retry);
  t.retry = setTimeout(() => connect(t), t.backoff * (0.8 + Math.random() * 0.4));
}

/** The network or the page came back: reconnect now rather than after the backoff. */
export function reconnectTerminal() {
  if (!open || open.ended) return;
  open.backoff = 0;
  connect(open);
}

/** The network went: the socket may linger; close it, and 'online' resumes from the offset. */
export function dropTerminalSocket() {
  if (open && open.ws) open.ws.close();
}

/** The page is going away (or into the back/forward cache): keep what it shows. */
export function saveOpenTerminal() {
  if (open) save(open);
}

/** @param {Uint8Array} frame */
function json(frame) {
  return JSON.parse(new TextDecoder().decode(frame.subarray(1)));
}

/**
 * Output from `offset`: the part not shown yet goes to xterm once.
 * @param {OpenTerminal} t
 * @param {number} offset
 * @param {Uint8Array} bytes
 */
function output(t, offset, bytes) {
  const end = offset + bytes.length;
  if (end <= t.written) return;
  if (offset > t.written) {
    t.term.write('\r\n\x1b[2m[' + (offset - t.written) + ' bytes of output no longer kept]\x1b[0m\r\n');
    t.written = offset;
  }
  const fresh = bytes.slice(t.written - offset);
  t.written = end;
  t.dirty = true;
  t.cache.push(fresh);
  t.cached += fresh.length;
  while (t.cache.length > 1 && t.cached - t.cache[0].length >= CACHE_BYTES) t.cached -= /** @type {Uint8Array} */ (t.cache.shift()).length;
  t.term.write(fresh, () => {
    if (end > t.rendered) t.rendered = end;
    scheduleAck(t);
  });
}

/** @param {OpenTerminal} t */
function scheduleAck(t) {
  if (t.ackTimer !== undefined) return;
  t.ackTimer = setTimeout(() => {
    t.ackTimer = undefined;
    if (!t.ws || t.ws.readyState !== WebSocket.OPEN || t.rendered <= t.acked) return;
    const frame = new Uint8Array(9);
    frame[0] = FRAME.ACK;
    new DataView(frame.buffer).setBigUint64(1, BigInt(t.rendered));
    t.ws.send(frame);
    t.acked = t.rendered;
  }, ACK_MS);
}

/** @param {OpenTerminal} t */
function save(t) {
  if (!t.dirty) return;
  t.dirty = false;
  let bytes = new Uint8Array(t.cached);
  let at = 0;
  for (const piece of t.cache) {
    bytes.set(piece, at);
    at += piece.length;
  }
  if (bytes.length > CACHE_BYTES) bytes = bytes.subarray(bytes.length - CACHE_BYTES);
  saveTerminal(t.id, t.written, bytes);
}

/**
 * Sends input in pieces of at most INPUT_PIECE bytes (a big paste too).
 * @param {OpenTerminal} t
 * @param {Uint8Array} bytes
 */
function sendInput(t, bytes) {
  if (!t.ws || t.ws.readyState !== WebSocket.OPEN || !bytes.length) return;
  for (let at = 0; at < bytes.length; at += INPUT_PIECE) {
    const piece = bytes.subarray(at, at + INPUT_PIECE);
    const frame = new Uint8Array(piece.length + 1);
    frame[0] = FRAME.INPUT;
    frame.set(piece, 1);
    t.ws.send(frame);
  }
}

/** @param {OpenTerminal} t @param {number} cols @param {number} rows */
function sendResize(t, cols, rows) {
  if (!t.ws || t.ws.readyState !== WebSocket.OPEN) return;
  const frame = new Uint8Array(5);
  const view = new DataView(frame.buffer);
  frame[0] = FRAME.RESIZE;
  view.setUint16(1, cols);
  view.setUint16(3, rows);
  t.ws.send(frame);
}

/**
 * What a socket frame says of the binding, into the store.
 * @param {string} id
 * @param {Partial<BindingView>} change
 */
function updateBinding(id, change) {
  const b = state.terminals.get(id);
  if (!b) return;
  /** @type {Record<string, unknown>} */
  const set = {};
  for (const [k, v] of Object.entries(change)) if (v !== undefined) set[k] = v;
  state.terminals.set(id, Object.assign({}, b, set));
  changed();
}

// ---- the key row ----

/** @param {boolean} on */
function setCtrl(on) {
  ctrlArmed = on;
  const b = document.getElementById('key-ctrl');
  if (b) b.setAttribute('aria-pressed', on ? 'true' : 'false');
}

/**
 * The next key after the row's Ctrl: a letter and `@[\]^_` become their
 * control codes, `?` DEL, and the arrows their Ctrl variants.
 * @param {string} data
 */
function applyCtrl(data) {
  if (!ctrlArmed) return data;
  setCtrl(false);
  if (data.length === 1) {
    const c = data.toUpperCase().charCodeAt(0);
    if (c >= 0x40 && c <= 0x5f) return String.fromCharCode(c - 0x40);
    if (data === ' ') return '\x00';
    if (data === '?') return '\x7f';
    return data;
  }
  const arrow = data.match(/^\x1b[[O]([ABCD])$/);
  if (arrow) return '\x1b[1;5' + arrow[1];
  return data;
}

/** @param {string} key the `data-key` of a button of the row */
function keyBytes(key) {
  if (!open) return '';
  const app = open.term.modes.applicationCursorKeysMode;
  /** @type {Record<string, string>} */
  const arrows = { up: 'A', down: 'B', right: 'C', left: 'D' };
  if (key === 'esc') return '\x1b';
  if (key === 'tab') return '\t';
  if (arrows[key]) return (app ? '\x1bO' : '\x1b[') + arrows[key];
  return '';
}

export function wireTerminal() {
  $('new-terminal').addEventListener('click', newTerminal);
  $('term-close').addEventListener('click', closeTerminal);
  const row = $('term-keys');
  // The keys must not take the focus from the terminal (a phone would hide its keyboard).
  row.addEventListener('pointerdown', (ev) => ev.preventDefault());
  row.addEventListener('mousedown', (ev) => ev.preventDefault());
  row.addEventListener('click', (ev) => {
    const target = /** @type {Element} */ (ev.target).closest('button');
    if (!target || !open) return;
    const key = target.getAttribute('data-key') || '';
    if (key === 'ctrl') {
      setCtrl(!ctrlArmed);
    } else {
      const data = applyCtrl(keyBytes(key));
      sendInput(open, encoder.encode(data));
    }
    open.term.focus();
  });
  for (const ev of ['orientationchange', 'resize']) window.addEventListener(ev, () => refit());
  if (window.visualViewport) window.visualViewport.addEventListener('resize', () => refit());
}
