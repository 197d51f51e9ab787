// @ts-check
// Approvals: the dialog that asks about the open session's oldest pending
// action, and decisions queued on the device until the daemon has them, so
// one taken offline is sent once when the network is back.
import { state, queuedDecisions, queuedIds, queueDecision, dropQueued, changed } from './store.js';
import { call, HttpError } from './api.js';
import { $, el } from './dom.js';

/** @typedef {import('./store.js').ApprovalView} ApprovalView */
/** @typedef {import('./store.js').Decision} Decision */

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
  queueDecision(a.id, decision);
  closeApproval();
  changed();
  if (navigator.onLine) await flushDecisions();
}

/** Opens the dialog on the open session's oldest pending approval not decided here. */
export function renderApproval() {
  const queued = queuedIds();
  const view = state.view;
  const candidates = view ? [...state.pending.values()].filter((a) => a.session_id === view.id && !queued.has(a.id)) : [];
  candidates.sort((a, b) => (a.requested_at || '').localeCompare(b.requested_at || ''));
  const next = candidates.find((a) => a.id !== state.approvalDismissed) || null;
  const shown = state.shownApproval;
  if (shown && !candidates.some((a) => a.id === shown.id)) closeApproval();
  if (state.shownApproval || !next || $('new-dialog', HTMLDialogElement).open || $('pair-view').hidden === false) return;
  openApproval(next);
}

/** @param {ApprovalView} a */
function openApproval(a) {
  state.shownApproval = a;
  const act = a.action;
  const body = $('approval-body');
  /** @type {[string, string][]} */
  const rows = [];
  if (act.kind === 'command') {
    $('approval-heading').textContent = 'Approval requested: run a command';
    rows.push(['Command', act.command], ['Directory', act.cwd]);
  } else if (act.kind === 'file_change') {
    $('approval-heading').textContent = 'Approval requested: change a file';
    rows.push(['File', act.path], ['Change', act.summary]);
  } else {
    $('approval-heading').textContent = 'Approval requested';
    rows.push(['Tool', act.tool], ['Action', act.title || JSON.stringify(act)]);
  }
  const dl = el('dl');
  for (const [k, v] of rows) if (v) dl.append(el('dt', { text: k }), el('dd', { text: v }));
  body.replaceChildren(dl);
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
}

export function reviewPending() {
  state.approvalDismissed = null;
  renderApproval();
}
