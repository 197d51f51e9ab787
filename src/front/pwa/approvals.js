// @ts-check
// Approvals: the dialog that asks about the open session's oldest pending
// action, about the open workflow run's gate a person asked to decide, or on
// the Terminals screen about a held terminal spawn or send a person asked to
// review (`askApproval`), and
// decisions queued on the device until the daemon has them, so one taken
// offline is sent once when the network is back (a gate is an approval too:
// the same queue and POST /api/v1/approvals/{id} decide it).
import { state, queuedDecisions, queuedIds, queueDecision, dropQueued, changed } from './store.js';
import { call, HttpError } from './api.js';
import { $, el } from './dom.js';

/** @typedef {import('./store.js').ApprovalView} ApprovalView */
/** @typedef {import('./store.js').Decision} Decision */
/** @typedef {import('./store.js').ApprovalId} ApprovalId */

let flushing = false;

/** Sends the queued decisions, oldest first; stops at the first that cannot be sent. */
export async function flushDecisions() {
  if (flushing) return;
  flushing = true;
  try {
    for (const d of queuedDecisions()) {
      try {
        await call('POST /api/v1/approvals/{id}', { params: { id: d.id }, body: { decision: d.decision } });
        dropQueued(d.id);
      } catch (e) {
        // A network failure keeps it for the next reconnect; an answer (404, 409) settles it.
        if (e instanceof HttpError && e.status !== 401 && e.status !== 503) dropQueued(d.id);
        else break;
      }
    }
  } finally {
    flushing = false;
    changed();
  }
}

/** @param {Decision} decision on the approval the dialog shows */
export async function decide(decision) {
  const a = state.shownApproval;
  if (!a) return;
  $('approval-error').textContent = '';
  state.gateAsked = null;
  queueDecision(a.id, decision);
  closeApproval();
  changed();
  if (navigator.onLine) await flushDecisions();
}

/**
 * Whether the open page may show `a`: an approval of the open session, a
 * gate of the open run (a gate has no session), or on the Terminals screen
 * a terminal's.
 * @param {ApprovalView} a
 */
function ofOpenPage(a) {
  if (state.view) return !!a.session_id && a.session_id === state.view.id;
  if (state.run) return a.action.kind === 'gate' && a.action.run_id === state.run.id;
  if (state.screen === 'terminals') return a.action.kind === 'terminal';
  return false;
}

/**
 * Keeps the dialog on what the page may ask about, pending and not decided
 * here: the open session's oldest approval opens by itself; a run's gate
 * only when asked for (`askGate`), as its message is for a person who
 * chose to read it.
 */
export function renderApproval() {
  const queued = queuedIds();
  const candidates = [...state.pending.values()].filter((a) => ofOpenPage(a) && !queued.has(a.id));
  candidates.sort((a, b) => (a.requested_at || '').localeCompare(b.requested_at || ''));
  const next = state.view
    ? candidates.find((a) => a.id !== state.approvalDismissed) || null
    : candidates.find((a) => a.id === state.gateAsked) || null;
  const shown = state.shownApproval;
  if (shown && !candidates.some((a) => a.id === shown.id)) closeApproval();
  if (state.shownApproval || !next || $('new-dialog', HTMLDialogElement).open || $('pair-view').hidden === false) return;
  openApproval(next);
}

/**
 * "Decide gate" on a step of the open run, or "Review" of a held terminal
 * action on the Terminals screen: the dialog asks about that approval (once
 * the page has it pending).
 * @param {ApprovalId} id
 */
export function askApproval(id) {
  askGate(id);
}

/**
 * "Decide gate" on a step of the open run: the dialog asks about its gate.
 * @param {ApprovalId} id
 */
export function askGate(id) {
  state.approvalDismissed = null;
  state.gateAsked = id;
  if (state.shownApproval && state.shownApproval.id !== id) closeApproval();
  renderApproval();
}

/** @param {ApprovalView} a */
function openApproval(a) {
  state.shownApproval = a;
  const act = a.action;
  const body = $('approval-body');
  /** @type {[string, string][]} */
  const rows = [];
  /** @type {HTMLElement[]} */
  const more = [];
  if (act.kind === 'command') {
    $('approval-heading').textContent = 'Approval requested: run a command';
    rows.push(['Command', act.command], ['Directory', act.cwd]);
  } else if (act.kind === 'file_change') {
    $('approval-heading').textContent = 'Approval requested: change a file';
    rows.push(['File', act.path], ['Change', act.summary]);
  } else if (act.kind === 'gate') {
    // No session: the run and the step say what waits, and the gate's message
    // (long and multi-line at times, a merge's conflicts) scrolls in its box.
    $('approval-heading').textContent = 'Approval requested: workflow gate';
    const run = state.runs.get(act.run_id);
    rows.push(['Workflow', run ? run.name + ' (' + act.run_id + ')' : act.run_id], ['Step', act.step_id]);
    more.push(
      el('pre', { class: 'gate-message', 'data-testid': 'gate-message', tabindex: 0, 'aria-label': 'Gate message', text: act.message }),
      el('p', { class: 'hint', text: 'Approve lets the run go on; Decline fails it.' }),
    );
  } else if (act.kind === 'terminal') {
    // What would be typed or started, every hidden character made visible
    // by the daemon; the concerns say why it was held.
    $('approval-heading').textContent = act.action === 'spawn' ? 'Approval requested: start in a terminal' : 'Approval requested: send to a terminal';
    rows.push(['Terminal', act.terminal + (act.binding_id ? ' (' + act.binding_id + ')' : '')], ['Why', act.concerns.join(', ')]);
    more.push(el('pre', { class: 'gate-message', 'data-testid': 'terminal-text', tabindex: 0, 'aria-label': 'Text', text: act.text }));
  } else {
    $('approval-heading').textContent = 'Approval requested';
    rows.push(['Tool', act.tool], ['Action', act.title || JSON.stringify(act)]);
  }
  const dl = el('dl');
  for (const [k, v] of rows) if (v) dl.append(el('dt', { text: k }), el('dd', { text: v }));
  body.replaceChildren(dl, ...more);
  body.dataset.approval = a.id;
  const dialog = $('approval-dialog', HTMLDialogElement);
  dialog.dataset.approval = a.id;
  if (!dialog.open) dialog.showModal();
  $('approve').focus();
}

export function closeApproval() {
  state.shownApproval = null;
  const dialog = $('approval-dialog', HTMLDialogElement);
  if (dialog.open) dialog.close();
}

/** Escape only puts the question aside; the banner's Review brings it back. */
export function putAside() {
  state.approvalDismissed = state.shownApproval ? state.shownApproval.id : null;
  state.shownApproval = null;
  state.gateAsked = null;
}

export function reviewPending() {
  state.approvalDismissed = null;
  renderApproval();
}
