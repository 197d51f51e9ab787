// @ts-check
// Workflow runs: the list (#/w), one run (#/w/<id>) with its steps as a
// table, live from the `workflow:*` events the store reduces, and what a
// person can do to a run: resume it, cancel it, retry / skip / abort a step
// that was cut or failed, raise its budget, and decide a gate (in the
// approval dialog of approvals.js, so a gate decided offline is queued and
// sent once like any approval).
import { state, queuedIds, putRun, stepLabel, changed } from './store.js';
import { call, errorText } from './api.js';
import { askGate } from './approvals.js';
import { $, el, show } from './dom.js';

/** @typedef {import('./store.js').RunView} RunView */
/** @typedef {import('./store.js').StepView} StepView */
/** @typedef {import('./store.js').WorkflowRunId} WorkflowRunId */
/** @typedef {import('./types/api').StepDecision} StepDecision */
/** @typedef {import('./types/api').PatchRunRequest} PatchRunRequest */

/** The runs being fetched one by one (`ensureRun`), so each is asked for once at a time. */
const fetching = new Set();

// ---- loading ----

/**
 * Every run, from `GET /api/v1/workflows/runs`: after a reconnect, in case
 * the stream's replay was not the whole story. A run an event changed while
 * the request was out keeps what the events said (store.js `putRun`).
 */
export async function refreshRuns() {
  const sentAt = state.lastSeq;
  try {
    const { runs } = await call('GET /api/v1/workflows/runs');
    for (const run of runs) putRun(run, sentAt);
    changed();
  } catch (_) {
    // offline or refused: the indicator says so; the next reconnect tries again
  }
}

/**
 * Fetches a run the page does not know (an event of a run it never loaded, or
 * a `#/w/<id>` link), again while events of it came during the request.
 * @param {WorkflowRunId} id
 */
export async function ensureRun(id) {
  if (fetching.has(id)) return;
  fetching.add(id);
  try {
    for (let tries = 0; tries < 3; tries++) {
      const sentAt = state.lastSeq;
      const run = await call('GET /api/v1/workflows/runs/{id}', { params: { id } });
      const fresh = putRun(run, sentAt);
      changed();
      if (fresh) break;
    }
  } catch (e) {
    if (state.run && state.run.id === id && !state.runs.has(id)) $('run-error').textContent = 'Could not load the run: ' + errorText(e);
  } finally {
    fetching.delete(id);
  }
}

// ---- what a run says ----

/** @param {RunView} run completed (or skipped) steps of all, as "3/6 steps" */
function progress(run) {
  const done = run.steps.filter((s) => s.state === 'completed' || s.state === 'skipped').length;
  return done + '/' + run.steps.length + ' step' + (run.steps.length === 1 ? '' : 's');
}

/** @param {RunView} run "paused · budget", "running"... */
function stateText(run) {
  return run.state + (run.state === 'paused' && run.pause ? ' · ' + run.pause.reason : '');
}

/** @param {RunView} run */
function isFinal(run) {
  return run.state === 'completed' || run.state === 'failed' || run.state === 'cancelled';
}

/**
 * The step's gate when a person has to decide it: pending, and not decided on this device yet.
 * @param {StepView} s
 * @param {Set<string>} queued
 */
function waitingGate(s, queued) {
  if (s.state !== 'running' || !s.approval_id) return null;
  const a = state.pending.get(s.approval_id);
  return a && !queued.has(a.id) ? a : null;
}

/** @param {RunView} run @param {Set<string>} queued gates waiting on a person */
function gatesWaiting(run, queued) {
  return run.steps.filter((s) => waitingGate(s, queued)).length;
}

/** @param {number} n */
function count(n) {
  return n.toLocaleString('en-US');
}

/** @param {number} c */
function money(c) {
  return c.toFixed(c !== 0 && Math.abs(c) < 1 ? 4 : 2);
}

/** @param {RunView} run "Tokens 1,234 of 10,000 · Cost 0.0123 (no limit)" */
function budgetText(run) {
  const tokens = (run.usage.input_tokens || 0) + (run.usage.output_tokens || 0);
  const b = run.budget || {};
  const of = (/** @type {string} */ spent, /** @type {string | null} */ limit) => spent + (limit === null ? ' (no limit)' : ' of ' + limit);
  return (
    'Tokens ' + of(count(tokens), typeof b.tokens === 'number' ? count(b.tokens) : null) +
    ' · Cost ' + of(money(run.cost || 0), typeof b.cost === 'number' ? money(b.cost) : null)
  );
}

// ---- the list ----

export function renderRuns() {
  if (state.screen !== 'workflows') return;
  const ul = $('runs');
  const runs = [...state.runs.values()].sort((a, b) => (b.created_at || '').localeCompare(a.created_at || ''));
  $('no-runs').hidden = runs.length > 0;
  const queued = queuedIds();
  /** @type {Map<string | undefined, HTMLElement>} */
  const existing = new Map([...ul.children].map((li) => [/** @type {HTMLElement} */ (li).dataset.run, /** @type {HTMLElement} */ (li)]));
  /** @type {HTMLElement | null} */
  let prev = null;
  for (const run of runs) {
    let li = existing.get(run.id);
    existing.delete(run.id);
    if (!li) {
      li = el(
        'li',
        { 'data-run': run.id },
        el('a', { href: '#/w/' + encodeURIComponent(run.id) }),
        el('span', { class: 'status' }),
        el('span', { class: 'badge', hidden: true }),
        el('span', { class: 'progress' }),
        el('span', { class: 'meta' }),
      );
    }
    const [a, status, badge, prog, meta] = /** @type {HTMLElement[]} */ ([...li.children]);
    setText(a, run.name || run.id);
    setText(status, stateText(run));
    status.dataset.status = run.state;
    li.dataset.state = run.state;
    const gates = gatesWaiting(run, queued);
    badge.hidden = gates === 0;
    setText(badge, String(gates));
    badge.setAttribute('aria-label', gates + ' gate' + (gates === 1 ? '' : 's') + ' waiting for a decision');
    setText(prog, progress(run));
    setText(meta, run.id + ' · ' + when(run.created_at) + (run.pause ? ' · ' + run.pause.message : ''));
    if (prev ? prev.nextSibling !== li : ul.firstChild !== li) {
      if (prev) prev.after(li);
      else ul.prepend(li);
    }
    prev = li;
  }
  for (const li of existing.values()) li.remove();
}

/** @param {HTMLElement} node @param {string} text */
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

/** @param {string | null | undefined} ts an RFC 3339 time, shown short in the device's zone */
function when(ts) {
  if (!ts) return '';
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? ts : d.toLocaleString(undefined, { dateStyle: 'short', timeStyle: 'short' });
}

// ---- one run ----

/**
 * Shows a run: at once from the store, which its events keep current; fetched
 * first if the page does not know it.
 * @param {WorkflowRunId} id
 */
export function openRun(id) {
  state.run = { id };
  $('steps-body').replaceChildren();
  $('run-error').textContent = '';
  show('run');
  if (!state.runs.has(id)) ensureRun(id);
  changed();
}

export function renderRun() {
  if (state.screen !== 'run' || !state.run) return;
  const id = state.run.id;
  const run = state.runs.get(id);
  $('title').textContent = run ? run.name || id : 'Workflow run';
  $('run-title').textContent = run ? 'Workflow run ' + (run.name || id) : 'Workflow run';
  const st = $('run-state');
  setText(st, run ? stateText(run) : 'loading');
  st.dataset.status = run ? run.state : '';
  setText($('run-progress'), run ? progress(run) : '');
  setText($('run-meta'), run ? id + ' · started ' + when(run.created_at) + (run.ended_at ? ' · ended ' + when(run.ended_at) : '') : id);
  if (!run) return;
  const final = isFinal(run);
  const pause = run.state === 'paused' && run.pause ? run.pause : null;
  $('run-pause').hidden = !pause;
  $('run-pause').dataset.reason = pause ? pause.reason : '';
  if (pause) setText($('run-pause-text'), 'Paused (' + pause.reason + '): ' + pause.message);
  // Resume goes on after a raised budget, or once the steps it paused for are decided;
  // while a step still waits, its Retry / Skip / Abort are what to press.
  const waiting = run.steps.some((s) => s.state === 'interrupted' || s.state === 'failed');
  $('run-resume').hidden = !pause || (pause.reason !== 'budget' && waiting);
  const edit = $('run-budget-edit', HTMLDetailsElement);
  if (pause && pause.reason === 'budget' && edit.dataset.openedFor !== id) {
    edit.dataset.openedFor = id;
    edit.open = true;
  }
  const lastError = state.runErrors.get(id);
  setText($('run-last-error'), lastError && run.state === 'failed' ? lastError : '');
  setText($('run-budget'), budgetText(run));
  $('budget-tokens', HTMLInputElement).placeholder = typeof run.budget.tokens === 'number' ? String(run.budget.tokens) : 'no limit';
  $('budget-cost', HTMLInputElement).placeholder = typeof run.budget.cost === 'number' ? String(run.budget.cost) : 'no limit';
  $('run-budget-edit').hidden = final;
  $('run-cancel').hidden = final;
  renderSteps(run, final);
}

/**
 * The steps' table, changed in place (row by row, keyed by the step's label)
 * so a button being pressed is not replaced under the finger.
 * @param {RunView} run
 * @param {boolean} final
 */
function renderSteps(run, final) {
  const body = $('steps-body');
  const queued = queuedIds();
  /** @type {Map<string, HTMLTableRowElement>} */
  const existing = new Map();
  for (const tr of body.querySelectorAll('tr')) existing.set(tr.dataset.key || '', tr);
  /** @type {HTMLTableRowElement[]} */
  const rows = [];
  for (const s of run.steps) {
    const label = stepLabel(s);
    const key = 'step:' + label;
    let tr = existing.get(key);
    existing.delete(key);
    if (!tr) {
      tr = el(
        'tr',
        { 'data-key': key, class: 'step' },
        el('th', { scope: 'row' }),
        el('td'),
        el('td', {}, el('span', { class: 'status' })),
        el('td'),
        el('td', { class: 'step-error' }),
      );
    }
    fillStep(tr, s, label);
    rows.push(tr);
    const actions = stepActions(run, s, label, final, queued);
    const akey = 'actions:' + label;
    if (actions) {
      let atr = existing.get(akey);
      existing.delete(akey);
      if (!atr) atr = el('tr', { 'data-key': akey, class: 'step-actions' }, el('td', { colspan: 5 }));
      const cell = /** @type {HTMLElement} */ (atr.firstElementChild);
      // Rebuilt only when what it offers changes.
      if (cell.dataset.sig !== actions.sig) {
        cell.dataset.sig = actions.sig;
        cell.replaceChildren(...actions.nodes);
      }
      rows.push(atr);
    }
  }
  for (const tr of existing.values()) tr.remove();
  /** @type {Element | null} */
  let prev = null;
  for (const tr of rows) {
    if (prev ? prev.nextElementSibling !== tr : body.firstElementChild !== tr) {
      if (prev) prev.after(tr);
      else body.prepend(tr);
    }
    prev = tr;
  }
}

/** @param {HTMLTableRowElement} tr @param {StepView} s @param {string} label */
function fillStep(tr, s, label) {
  const [name, kind, st, tries, error] = /** @type {HTMLElement[]} */ ([...tr.children]);
  tr.dataset.step = s.step_id;
  tr.dataset.index = typeof s.index === 'number' ? String(s.index) : '';
  tr.dataset.state = s.state;
  tr.dataset.label = label;
  // The step's name; a link to its session when it has one.
  const href = s.session_id ? '#/s/' + encodeURIComponent(s.session_id) : null;
  const sig = label + '|' + (href || '') + '|' + (s.item || '');
  if (name.dataset.sig !== sig) {
    name.dataset.sig = sig;
    const title = href ? el('a', { href, 'data-session': s.session_id, text: label }) : el('span', { text: label });
    // A fan-out item's value, cut to a line (whole in its title).
    if (s.item) name.replaceChildren(title, el('span', { class: 'item', title: s.item, text: s.item }));
    else name.replaceChildren(title);
  }
  setText(kind, s.kind);
  const pill = /** @type {HTMLElement} */ (st.firstElementChild);
  setText(pill, s.state + (s.stalled ? ' · stalled' : ''));
  pill.dataset.status = s.state;
  setText(tries, String(s.attempts || 0));
  setText(error, s.error || '');
}

/**
 * What a person can do to a step, if anything: decide its gate, or retry,
 * skip or abort it when it was cut or failed.
 * @param {RunView} run
 * @param {StepView} s
 * @param {string} label
 * @param {boolean} final
 * @param {Set<string>} queued
 * @returns {{ sig: string, nodes: HTMLElement[] } | null}
 */
function stepActions(run, s, label, final, queued) {
  if (final) return null;
  const gate = waitingGate(s, queued);
  if (gate) {
    const button = el('button', { type: 'button', class: 'primary', 'data-approval': gate.id, text: 'Decide gate' });
    button.addEventListener('click', () => askGate(gate.id));
    return { sig: 'gate:' + gate.id, nodes: [button] };
  }
  if (s.state === 'running' && s.approval_id && queued.has(s.approval_id)) {
    return { sig: 'queued:' + s.approval_id, nodes: [el('span', { class: 'hint', text: 'Decision queued: it is sent when the daemon can be reached.' })] };
  }
  if (s.state === 'running' && s.session_id) {
    // The step's agent asks in its own session (a plan-only step): the session's dialog decides it.
    const sid = s.session_id;
    const n = [...state.pending.values()].filter((a) => a.session_id === sid && !queued.has(a.id)).length;
    if (n > 0) {
      const text = n === 1 ? 'An approval waits in its session' : n + ' approvals wait in its session';
      return { sig: 'session:' + sid + ':' + n, nodes: [el('a', { href: '#/s/' + encodeURIComponent(sid), class: 'waiting', text })] };
    }
  }
  if ((s.state === 'interrupted' || s.state === 'failed') && s.kind !== 'gate') {
    /** @type {[StepDecision, string, string | null][]} */
    const choices = [
      ['retry', 'Retry', null],
      ['skip', 'Skip', null],
      ['abort', 'Abort', 'danger'],
    ];
    const nodes = choices.map(([decision, text, cls]) => {
      const b = el('button', { type: 'button', class: cls, 'data-decision': decision, 'aria-label': text + ' ' + label, text });
      b.addEventListener('click', () => decideStep(run.id, s, decision));
      return b;
    });
    return { sig: 'decide:' + s.state, nodes };
  }
  return null;
}

// ---- what a person does ----

/**
 * @param {() => Promise<unknown>} request
 */
async function act(request) {
  $('run-error').textContent = '';
  const sentAt = state.lastSeq;
  try {
    const run = await request();
    // The answer is the run as the change left it; its events say the same, a moment later.
    if (run && typeof run === 'object' && 'steps' in run) putRun(/** @type {RunView} */ (run), sentAt);
    changed();
  } catch (e) {
    $('run-error').textContent = errorText(e);
  }
}

/** @param {WorkflowRunId} id @param {StepView} s @param {StepDecision} decision */
function decideStep(id, s, decision) {
  if (decision === 'abort' && !confirm('Abort step ' + stepLabel(s) + '? The run ends as failed.')) return;
  /** @type {import('./types/api').StepDecisionRequest} */
  const body = { decision };
  if (typeof s.index === 'number') body.index = s.index;
  act(() => call('POST /api/v1/workflows/runs/{id}/steps/{step}/decide', { params: { id, step: s.step_id }, body }));
}

export function resumeRun() {
  const run = state.run;
  if (run) act(() => call('POST /api/v1/workflows/runs/{id}/resume', { params: { id: run.id } }));
}

export function cancelRun() {
  const run = state.run;
  if (!run) return;
  const view = state.runs.get(run.id);
  if (!confirm('Cancel the run ' + (view ? view.name : run.id) + '? Running steps are stopped, and the rest never start.')) return;
  act(() => call('POST /api/v1/workflows/runs/{id}/cancel', { params: { id: run.id } }));
}

/** @param {SubmitEvent} ev */
export function setBudget(ev) {
  ev.preventDefault();
  const run = state.run;
  if (!run) return;
  const tokens = $('budget-tokens', HTMLInputElement);
  const cost = $('budget-cost', HTMLInputElement);
  /** @type {PatchRunRequest['budget']} */
  const budget = {};
  if (tokens.value.trim()) budget.tokens = Math.round(Number(tokens.value));
  if (cost.value.trim()) budget.cost = Number(cost.value);
  if (budget.tokens === undefined && budget.cost === undefined) {
    $('run-error').textContent = 'Give a token budget, a cost budget or both.';
    return;
  }
  act(async () => {
    const answer = await call('PATCH /api/v1/workflows/runs/{id}', { params: { id: run.id }, body: { budget } });
    tokens.value = '';
    cost.value = '';
    return answer;
  });
}
