// @ts-check
// The one place the app's state lives: what the daemon told us (sessions,
// workflow runs, pending approvals, the last seq processed), what this device
// keeps across reloads (token, last seq, decisions made offline) and what the
// page shows (the screen, the open session or run, the approval on screen,
// the connection). Other modules
// keep only handles: the socket and timers (connection.js), DOM nodes they
// built (transcript.js, through the open session below).

/** @typedef {import('./types/events').BosunEvent} BosunEvent */
/** @typedef {BosunEvent['type']} EventType */
/**
 * The event of type `T`, with its `data` narrowed to that type's payload.
 * @template {EventType} T
 * @typedef {Extract<BosunEvent, { type: T }>} EventOf
 */
/** @typedef {import('./types/api').SessionView} SessionView */
/** @typedef {import('./types/api').SessionId} SessionId */
/** @typedef {import('./types/api').ApprovalView} ApprovalView */
/** @typedef {import('./types/api').ApprovalId} ApprovalId */
/** @typedef {import('./types/api').TurnId} TurnId */
/** @typedef {import('./types/api').Decision} Decision */
/** @typedef {import('./types/events').ChunkKind} ChunkKind */
/** @typedef {import('./types/api').RunView} RunView */
/** @typedef {import('./types/api').StepView} StepView */
/** @typedef {import('./types/api').WorkflowRunId} WorkflowRunId */
/** @typedef {import('./types/events').BindingView} BindingView */
/** @typedef {import('./types/api').TerminalView} TerminalView */
/** @typedef {import('./types/api').TerminalKind} TerminalKind */
/** @typedef {'list' | 'workflows' | 'terminals' | 'session' | 'run'} Screen */

/**
 * A tool call's row in the transcript, kept so its updates change it in place.
 * @typedef {{ node: HTMLElement, status: HTMLElement, out: HTMLElement }} ToolRow
 */

/**
 * The open session: which events it has rendered, and where the transcript
 * goes on (the agent's block a chunk of the same turn and kind joins).
 * @typedef {object} OpenSession
 * @property {SessionId} id
 * @property {Set<number>} seqs events rendered, so none is rendered twice
 * @property {Set<string>} chunks `turn:index` of the chunks rendered
 * @property {boolean} loading its history is being fetched; live events wait in `buffer`
 * @property {BosunEvent[]} buffer
 * @property {TurnId | null} activeTurn the turn the transcript last saw start
 * @property {Map<string, ToolRow>} tools
 * @property {{ turn: TurnId, kind: ChunkKind, node: HTMLElement } | null} agentBlock
 * @property {Element | null} lastRow the last visible row appended
 */

/** @typedef {{ id: ApprovalId, decision: Decision }} QueuedDecision */

const TOKEN_KEY = 'bosun.token';
const SEQ_KEY = 'bosun.lastSeq';
const QUEUE_KEY = 'bosun.decisions';

export const state = {
  token: localStorage.getItem(TOKEN_KEY) || '',
  /** @type {Map<SessionId, SessionView>} */
  sessions: new Map(),
  /** @type {Map<ApprovalId, ApprovalView>} pending, and not decided here yet (a run's gates too) */
  pending: new Map(),
  /** @type {Map<WorkflowRunId, RunView>} every workflow run, as its events left it */
  runs: new Map(),
  /** @type {Map<WorkflowRunId, number>} the seq of the last event applied to each run */
  runSeqs: new Map(),
  /** @type {Map<WorkflowRunId, string>} the last `workflow:error` each run reported while this page ran */
  runErrors: new Map(),
  /** The last event processed from the stream (WebSocket or polling). */
  lastSeq: 0,
  /** What the page shows: the sessions (#/), the runs (#/w), the terminals (#/terminals), a session (#/s/<id>) or a run (#/w/<id>). */
  screen: /** @type {Screen} */ ('list'),
  /** @type {OpenSession | null} */
  view: null,
  /** @type {{ id: WorkflowRunId } | null} the open run (`#/w/<id>`) */
  run: null,
  /** Where the header's back button goes: a session opened from a run goes back to it. */
  back: '#/',
  started: false,
  pairing: false,
  link: {
    wsOpen: false,
    polling: false,
    /** The last HTTP request failed without an answer. */
    httpDown: false,
    /** Consecutive WebSocket attempts that never opened. */
    failures: 0,
    /** The wait before the next attempt, in ms. */
    backoff: 0,
  },
  /** @type {Map<string, BindingView>} the terminal bindings seen (by binding id; `pty` and emulators), as their events left them */
  terminals: new Map(),
  /** @type {Map<TerminalKind, TerminalView>} the capability map, as `termbridge:capability_update` left it */
  terminalMap: new Map(),
  /** @type {Map<string, number>} the seq of the last event that changed each binding (its id) or map entry (`map:<kind>`) */
  terminalSeqs: new Map(),
  /** @type {{ session: SessionId, binding: string | null } | null} the open session's Terminal tab (`#/s/<id>/t[/<binding>]`), with the terminal open in it */
  sessionTab: null,
  /** @type {ApprovalView | null} the approval the dialog shows */
  shownApproval: null,
  /** @type {ApprovalId | null} closed with Escape, so it does not pop up again at once */
  approvalDismissed: null,
  /** @type {ApprovalId | null} the gate a person asked to decide ("Decide gate"); gates never open by themselves */
  gateAsked: null,
};

/** @param {string} token */
export function saveToken(token) {
  state.token = token;
  localStorage.setItem(TOKEN_KEY, token);
}

export function forgetToken() {
  state.token = '';
  localStorage.removeItem(TOKEN_KEY);
}

/** The seq this tab (else this device) got to last time, if any. */
export function savedSeq() {
  const raw = sessionStorage.getItem(SEQ_KEY) || localStorage.getItem(SEQ_KEY);
  const n = Number(raw);
  return Number.isFinite(n) && n > 0 ? n : null;
}

/**
 * Keeps `lastSeq` where a reload finds it. Written as it changes (once per
 * batch of events), so what is stored always matches what is on screen.
 */
export function saveSeq() {
  const value = String(state.lastSeq);
  sessionStorage.setItem(SEQ_KEY, value);
  localStorage.setItem(SEQ_KEY, value);
}

// ---- what a terminal showed, so a reload puts it back and resumes after it ----

/** @param {string} id */
const termKey = (id) => 'bosun.term.' + id;
/** The terminals kept, least recently saved first; only the last TERMS_KEPT are. */
const TERMS_KEY = 'bosun.terms';
const TERMS_KEPT = 8;

/**
 * The bytes of a terminal this tab (else this device) last showed, and the
 * offset in its stream after them; null when it has none kept.
 * @param {string} id
 * @returns {{ offset: number, bytes: Uint8Array } | null}
 */
export function savedTerminal(id) {
  for (const store of [sessionStorage, localStorage]) {
    try {
      const saved = JSON.parse(store.getItem(termKey(id)) || 'null');
      if (saved && Number.isSafeInteger(saved.offset) && saved.offset >= 0 && typeof saved.data === 'string') {
        return { offset: saved.offset, bytes: Uint8Array.from(saved.data, (c) => c.charCodeAt(0) & 0xff) };
      }
    } catch (_) {
      // unreadable: try the other store
    }
  }
  return null;
}

/**
 * Keeps a terminal's offset with the bytes that end there, in one value (so
 * the two always match), in both stores, for the last TERMS_KEPT terminals;
 * where it does not fit, the entry is removed, and a reload replays the
 * terminal from the daemon's scrollback instead.
 * @param {string} id
 * @param {number} offset
 * @param {Uint8Array} bytes the last bytes shown, ending at `offset`
 */
export function saveTerminal(id, offset, bytes) {
  let data = '';
  for (let at = 0; at < bytes.length; at += 8192) data += String.fromCharCode(...bytes.subarray(at, at + 8192));
  const value = JSON.stringify({ offset, data });
  for (const store of [sessionStorage, localStorage]) {
    try {
      const kept = JSON.parse(store.getItem(TERMS_KEY) || '[]');
      const ids = (Array.isArray(kept) ? kept : []).filter((x) => typeof x === 'string' && x !== id);
      ids.push(id);
      for (const old of ids.splice(0, Math.max(0, ids.length - TERMS_KEPT))) store.removeItem(termKey(old));
      store.setItem(TERMS_KEY, JSON.stringify(ids));
      store.setItem(termKey(id), value);
    } catch (_) {
      store.removeItem(termKey(id));
    }
  }
}

// ---- decisions taken while offline, kept until the daemon has them ----

/** @returns {QueuedDecision[]} */
export function queuedDecisions() {
  try {
    const q = JSON.parse(localStorage.getItem(QUEUE_KEY) || '[]');
    return Array.isArray(q) ? q : [];
  } catch (_) {
    return [];
  }
}

export function queuedIds() {
  return new Set(queuedDecisions().map((q) => q.id));
}

/** @param {QueuedDecision[]} q */
function setQueued(q) {
  localStorage.setItem(QUEUE_KEY, JSON.stringify(q));
}

/** @param {ApprovalId} id @param {Decision} decision */
export function queueDecision(id, decision) {
  const q = queuedDecisions().filter((d) => d.id !== id);
  q.push({ id, decision });
  setQueued(q);
}

/** @param {ApprovalId | undefined} id */
export function dropQueued(id) {
  if (!id) return;
  const q = queuedDecisions();
  if (q.some((d) => d.id === id)) setQueued(q.filter((d) => d.id !== id));
}

// ---- what events change here (the transcript draws them in transcript.js) ----

/** @param {BosunEvent} ev @returns {SessionId | null} */
export function sessionOf(ev) {
  return ev.topic && ev.topic.startsWith('session:') ? ev.topic.slice(8) : null;
}

/** @param {BosunEvent} ev @returns {WorkflowRunId | null} */
export function runOf(ev) {
  return ev.topic && ev.topic.startsWith('workflow:') ? ev.topic.slice(9) : null;
}

/** A step's name in a run: its id, and `#index` for an item of a fan-out. @param {StepView} s */
export function stepLabel(s) {
  return s.step_id + (typeof s.index === 'number' ? '#' + s.index : '');
}

/**
 * `run` with `step` in it: in place of the same step (same id and index);
 * a fan-out's first item in place of its placeholder (the entry without an
 * index, which the items replace), the others after the items before them.
 * @param {RunView} run
 * @param {StepView} step
 * @returns {RunView}
 */
export function withStep(run, step) {
  const steps = run.steps.slice();
  const index = typeof step.index === 'number' ? step.index : null;
  const at = steps.findIndex((s) => s.step_id === step.step_id && (typeof s.index === 'number' ? s.index : null) === index);
  if (at >= 0) steps[at] = step;
  else {
    const placeholder = index === null ? -1 : steps.findIndex((s) => s.step_id === step.step_id && typeof s.index !== 'number');
    if (placeholder >= 0) steps[placeholder] = step;
    else {
      let after = -1;
      steps.forEach((s, k) => {
        if (s.step_id === step.step_id && typeof s.index === 'number' && index !== null && s.index < index) after = k;
      });
      const before = steps.findIndex((s) => s.step_id === step.step_id && typeof s.index === 'number' && index !== null && s.index > index);
      steps.splice(after >= 0 ? after + 1 : before >= 0 ? before : steps.length, 0, step);
    }
  }
  return Object.assign({}, run, { steps });
}

/**
 * Puts a run as the API gave it, unless an event newer than the request
 * (seq above `sentAt`) changed it meanwhile: the answer may then be the older
 * of the two, and the events keep the run up to date anyway. A run not known
 * yet is put in either case (its events changed nothing), and is not fresh.
 * @param {RunView} run
 * @param {number} sentAt `lastSeq` when the request was sent
 * @returns {boolean} whether the answer is at least as new as every event of the run seen
 */
export function putRun(run, sentAt) {
  const seen = state.runSeqs.get(run.id);
  const fresh = seen === undefined || seen <= sentAt;
  if (fresh || !state.runs.has(run.id)) state.runs.set(run.id, run);
  return fresh;
}

/**
 * Puts a binding or a capability map entry as the API gave it, unless an
 * event newer than the request (seq above `sentAt`) changed it meanwhile
 * (as `putRun` does for runs).
 * @param {{ binding?: BindingView, entry?: TerminalView }} answer
 * @param {number} sentAt `lastSeq` when the request was sent
 */
export function putTerminal(answer, sentAt) {
  const { binding, entry } = answer;
  if (binding) {
    const seen = state.terminalSeqs.get(binding.binding_id);
    if (seen === undefined || seen <= sentAt || !state.terminals.has(binding.binding_id)) state.terminals.set(binding.binding_id, binding);
  }
  if (entry) {
    const seen = state.terminalSeqs.get('map:' + entry.terminal);
    if (seen === undefined || seen <= sentAt || !state.terminalMap.has(entry.terminal)) state.terminalMap.set(entry.terminal, entry);
  }
}

/**
 * Changes a known run; an event of a run not loaded yet changes nothing
 * (workflows.js fetches that run).
 * @param {WorkflowRunId} id
 * @param {(run: RunView) => RunView} change
 */
function updateRun(id, change) {
  const run = state.runs.get(id);
  if (run) state.runs.set(id, change(run));
}

/**
 * The events that change the state above. Only state is kept here; an event
 * type that changes none needs no entry.
 * @type {{ [T in EventType]?: (data: EventOf<T>['data'], sid: SessionId | null, ev: EventOf<T>) => void }}
 */
const reducers = {
  'session:update'(d) {
    if (d.id) state.sessions.set(d.id, d);
  },
  'session:closed'(d, sid) {
    const id = d.session_id || sid;
    if (id) state.sessions.delete(id);
    for (const [key, a] of state.pending) if (a.session_id === id) state.pending.delete(key);
  },
  'approval:requested'(d) {
    if (d.approval && d.approval.status === 'pending') state.pending.set(d.approval.id, d.approval);
  },
  'approval:resolved'(d) {
    if (d.approval) state.pending.delete(d.approval.id);
    dropQueued(d.approval && d.approval.id);
  },
  'turn:started'(d, sid) {
    const s = sid && state.sessions.get(sid);
    if (sid && s) state.sessions.set(sid, Object.assign({}, s, { active_turn: d.turn_id, status: /** @type {const} */ ('running') }));
  },
  'turn:completed'(d, sid) {
    const s = sid && state.sessions.get(sid);
    if (sid && s && s.active_turn === d.turn_id) {
      state.sessions.set(sid, Object.assign({}, s, { active_turn: null, status: /** @type {const} */ ('idle') }));
    }
    for (const [id, a] of state.pending) if (a.turn_id === d.turn_id) state.pending.delete(id);
  },
  // Terminal bindings, of every terminal (the Terminal tab shows a session's
  // `pty` ones, the Terminals screen all), and the capability map.
  'termbridge:binding'(d, _sid, ev) {
    state.terminals.set(d.binding.binding_id, d.binding);
    state.terminalSeqs.set(d.binding.binding_id, ev.seq);
  },
  'termbridge:binding_lost'(d, _sid, ev) {
    const b = state.terminals.get(d.binding_id);
    if (b) state.terminals.set(d.binding_id, Object.assign({}, b, { state: /** @type {const} */ ('lost'), reason: d.reason }));
    state.terminalSeqs.set(d.binding_id, ev.seq);
  },
  'termbridge:capability_update'(d, _sid, ev) {
    state.terminalMap.set(d.terminal.terminal, d.terminal);
    state.terminalSeqs.set('map:' + d.terminal.terminal, ev.seq);
  },
  // Workflow runs (topic `workflow:<id>`). Their gates come as approval:requested /
  // approval:resolved on the same topic, and are kept in `pending` as above.
  'workflow:started'(d) {
    state.runs.set(d.run.id, d.run);
  },
  'workflow:step'(d) {
    updateRun(d.run_id, (r) => withStep(r, d.step));
  },
  'workflow:event'(d) {
    if (d.kind === 'budget') {
      updateRun(d.run_id, (r) =>
        Object.assign({}, r, {
          usage: d.usage || r.usage,
          cost: typeof d.cost === 'number' ? d.cost : r.cost,
          budget: d.budget || r.budget,
        }),
      );
    } else if (d.kind === 'resumed') {
      updateRun(d.run_id, (r) => Object.assign({}, r, { state: /** @type {const} */ ('running'), pause: null }));
    }
    // progress and stalled: the step's own workflow:step carries what changed.
  },
  'workflow:error'(d) {
    state.runErrors.set(d.run_id, d.message);
  },
  'workflow:paused'(d) {
    updateRun(d.run_id, (r) =>
      Object.assign({}, r, { state: /** @type {const} */ ('paused'), pause: { reason: d.reason, message: d.message } }),
    );
  },
  'workflow:completed'(d, _sid, ev) {
    updateRun(d.run_id, (r) =>
      Object.assign({}, r, { state: d.state, pause: null, usage: d.usage, cost: d.cost, ended_at: r.ended_at || ev.ts }),
    );
  },
};

/**
 * Applies one event to the state (not to the transcript).
 * @param {BosunEvent} ev
 */
export function applyEvent(ev) {
  const run = runOf(ev);
  if (run) state.runSeqs.set(run, ev.seq);
  if (!Object.hasOwn(reducers, ev.type)) return;
  const reduce = /** @type {(data: BosunEvent['data'], sid: SessionId | null, ev: BosunEvent) => void} */ (reducers[ev.type]);
  reduce(ev.data, sessionOf(ev), ev);
}

// ---- redrawing what depends on the state, once per frame ----

/** @type {() => void} */
let redraw = () => {};
let redrawQueued = false;

/** @param {() => void} fn draws everything that depends on the state */
export function onChange(fn) {
  redraw = fn;
}

/** Says the state changed: the page is redrawn before the next frame. */
export function changed() {
  if (redrawQueued) return;
  redrawQueued = true;
  requestAnimationFrame(() => {
    redrawQueued = false;
    redraw();
  });
}
