// @ts-check
// The open session's transcript, drawn from its events: one render function
// per event type, in `renderers`. Its type lists every event type of the
// schema, so a new event type does not type-check until it has a renderer
// here (or is marked `notInTranscript`), and each renderer gets that type's
// payload. An event type this app does not know yet (a newer daemon's) gets
// an invisible mark, as `notInTranscript` gives, rather than an error.
import { state } from './store.js';
import { $, el } from './dom.js';

/** @typedef {import('./store.js').BosunEvent} BosunEvent */
/** @typedef {import('./store.js').EventType} EventType */
/**
 * @template {EventType} T
 * @typedef {import('./store.js').EventOf<T>} EventOf
 */
/** @typedef {import('./store.js').OpenSession} OpenSession */
/** @typedef {import('./types/events').Action} Action */

/**
 * Draws one event and returns its element: a new row for renderEvent to
 * append, an element already placed (a chunk joins its block), or an
 * invisible mark for an event that only changes state.
 * @template {EventType} T
 * @typedef {(data: EventOf<T>['data'], ev: EventOf<T>, view: OpenSession) => HTMLElement} Renderer
 */

/** @typedef {{ [T in EventType]: Renderer<T> }} Renderers */

/**
 * For events that change state but say nothing in the conversation: a mark,
 * so the transcript still records that the event was seen.
 * @param {unknown} _data
 * @param {BosunEvent} ev
 */
const notInTranscript = (_data, ev) => el('span', { class: 'mark', 'data-type': ev.type });

/** @param {OpenSession} v */
function endBlock(v) {
  v.agentBlock = null;
}

const CHUNK_KINDS = ['text', 'thought', 'command_output', 'notice'];

/** @type {Renderers} */
export const renderers = {
  'session:update': notInTranscript,

  'session:closed': () => el('div', { class: 'row event', text: 'Session closed' }),

  'turn:started'(d, _ev, v) {
    endBlock(v);
    v.activeTurn = d.turn_id;
    return el('div', { class: 'row user', 'data-turn': d.turn_id, text: d.text || '' });
  },

  // running / awaiting_approval: the status pill and the approval rows say it already
  'turn:update': (d, ev) => el('span', { class: 'mark', 'data-type': ev.type, 'data-status': d.status || '' }),

  'turn:steer'(d, _ev, v) {
    endBlock(v);
    return el('div', { class: 'row user steer', text: 'Steer: ' + (d.text || '') });
  },

  // Chunks go into the open block of the same turn and kind.
  'stream:chunk'(d, _ev, v) {
    const key = d.turn_id + ':' + d.index;
    if (v.chunks.has(key)) return el('span', { class: 'mark', 'data-duplicate': key });
    v.chunks.add(key);
    const kind = CHUNK_KINDS.includes(d.kind) ? d.kind : 'text';
    const span = el('span', { class: 'chunk', 'data-chunk': key, 'data-kind': kind, text: d.text || '' });
    let block = v.agentBlock;
    if (!block || block.turn !== d.turn_id || block.kind !== kind || block.node !== v.lastRow) {
      const label = kind === 'text' ? null : el('span', { class: 'visually-hidden', text: kind.replace('_', ' ') + ': ' });
      const node = el('div', { class: 'row agent ' + kind, 'data-turn': d.turn_id, 'data-kind': kind }, label);
      $('transcript').append(node);
      v.lastRow = node;
      block = v.agentBlock = { turn: d.turn_id, kind, node };
    }
    block.node.append(span);
    return span;
  },

  'stream:complete'(_d, _ev, v) {
    endBlock(v);
    return el('span', { class: 'mark' });
  },

  'turn:completed'(d, _ev, v) {
    endBlock(v);
    if (v.activeTurn === d.turn_id) v.activeTurn = null;
    const status = d.status || 'completed';
    const usage =
      d.usage && (d.usage.input_tokens || d.usage.output_tokens)
        ? ' · ' + (d.usage.input_tokens || 0) + ' in / ' + (d.usage.output_tokens || 0) + ' out'
        : '';
    // A shell command's result: its exit code says more than "completed".
    const r = d.result;
    const exit = r && (r.exit_code === null || r.exit_code === undefined ? null : r.exit_code);
    const result = r
      ? ' · ' + (exit === null ? 'no exit code' : 'exit ' + exit) +
        (typeof r.duration_ms === 'number' ? ' · ' + r.duration_ms + ' ms' : '')
      : '';
    return el('div', {
      class: 'row event end end-' + status + (r && r.exit_code !== 0 ? ' nonzero' : ''),
      'data-turn-end': d.turn_id,
      'data-status': status,
      text: 'Turn ' + status + (d.reason ? ': ' + d.reason : '') + result + usage,
      'data-exit-code': r ? (exit === null ? '' : String(exit)) : undefined,
    });
  },

  'approval:requested'(d, _ev, v) {
    endBlock(v);
    const a = d.approval;
    return el(
      'div',
      { class: 'row approval', 'data-approval': a.id },
      el('strong', { text: 'Approval requested: ' }),
      actionText(a.action),
    );
  },

  'approval:resolved'(d, _ev, v) {
    endBlock(v);
    const a = d.approval;
    const who = d.automatic ? ' automatically (policy)' : a.decided_by ? ' by ' + a.decided_by : '';
    return el('div', {
      class: 'row event approval-resolved',
      'data-approval': a.id,
      text: 'Action ' + (a.status || 'resolved') + who + ': ' + actionText(a.action),
    });
  },

  'provider:status'(d, ev) {
    // Only trouble is worth a line; ready/running/bound are routine.
    if (d.status !== 'crashed' && d.status !== 'restarting') return el('span', { class: 'mark', 'data-type': ev.type });
    return el('div', {
      class: 'row event end-failed',
      text: 'Agent ' + (d.provider || '') + ' ' + d.status + (d.reason ? ': ' + d.reason : ''),
    });
  },

  'tool:call'(d, _ev, v) {
    endBlock(v);
    const t = d.tool;
    const status = el('span', { class: 'status', 'data-status': t.status || '', text: t.status || '' });
    const out = el('pre', { class: 'tool-output', hidden: true });
    const node = el(
      'div',
      { class: 'row tool', 'data-tool': t.id || '' },
      el('div', { class: 'tool-head' }, el('span', { text: (t.kind ? t.kind + ': ' : '') + (t.title || 'tool') }), status),
      detailNode(t.detail),
      out,
    );
    v.tools.set(t.id, { node, status, out });
    return node;
  },

  'tool:update'(d, _ev, v) {
    endBlock(v);
    const t = v.tools.get(d.tool_id);
    if (!t) return el('div', { class: 'row event', text: 'tool ' + (d.status || 'update') + (d.output ? ': ' + d.output : '') });
    if (d.status) {
      t.status.textContent = d.status;
      t.status.dataset.status = d.status;
    }
    const head = t.node.querySelector('.tool-head span');
    if (d.title && head) head.textContent = d.title;
    if (typeof d.output === 'string' && d.output) {
      t.out.hidden = false;
      t.out.textContent = d.output;
    }
    if (d.detail) t.node.insertBefore(/** @type {Node} */ (detailNode(d.detail)), t.out);
    return el('span', { class: 'mark', 'data-tool-update': d.tool_id });
  },

  'plan:update'(d, _ev, v) {
    endBlock(v);
    const selector = '#transcript .row.plan[data-turn="' + CSS.escape(d.turn_id || '') + '"]';
    for (const old of document.querySelectorAll(selector)) old.classList.add('superseded');
    const list = el('ol');
    for (const e of d.entries || []) list.append(el('li', { 'data-status': e.status || '', text: e.content || '' }));
    return el('div', { class: 'row plan', 'data-turn': d.turn_id }, el('strong', { text: 'Plan' }), list);
  },

  'usage:update': notInTranscript,
  'command:ran': notInTranscript,
  'file:written': notInTranscript,
  'file:deleted': notInTranscript,
  'file:changed': notInTranscript,

  'policy:violation'(d, _ev, v) {
    endBlock(v);
    return el('div', {
      class: 'row event end-failed violation',
      'data-violation': d.turn_id || '',
      text: 'Policy violation: the agent ' + (d.what || 'acted') + ' without an approval',
    });
  },

  'policy:mode_restored': (d) =>
    el('div', {
      class: 'row event',
      text: 'The agent switched itself to mode "' + (d.from || '?') + '", which does not ask; put back in "' + (d.to || '?') + '"',
    }),

  'actor:restarted': notInTranscript,
  // On the system topic, never a session's.
  'settings:changed': notInTranscript,

  // A workflow run's events are on its own topic, not a session's: the run
  // view (workflows.js) draws them from the store.
  'workflow:started': notInTranscript,
  'workflow:step': notInTranscript,
  'workflow:event': notInTranscript,
  'workflow:error': notInTranscript,
  'workflow:paused': notInTranscript,
  'workflow:completed': notInTranscript,

  // A task of the session's docs/TASKS.md changed (through the API, an edit
  // of the file, or its run): one line in the transcript.
  'task:updated': (d) =>
    el('div', {
      class: 'row event',
      text: 'Task ' + (d.task.status === 'done' ? '☑ ' : '☐ ') + d.task.title + ' (' + d.task.status.replace('_', ' ') + ', by ' + d.by + ')',
    }),
  'task:removed': (d) => el('div', { class: 'row event', text: 'Task removed (by ' + d.by + ')' }),

  // A session's terminals: the Terminal tab (terminal.js) shows them live;
  // the transcript says when one starts, ends or is acted on.
  'termbridge:binding': (d) => {
    const b = d.binding;
    const how = b.exit ? (b.exit.signal ? ' (' + b.exit.signal + ')' : ' (exit ' + b.exit.code + ')') : '';
    const what = b.command.length ? b.command.join(' ') : 'shell';
    return el('div', { class: 'row event', text: 'Terminal ' + b.terminal + ' ' + what + ': ' + b.state + how });
  },
  'termbridge:binding_lost': (d) => el('div', { class: 'row event', text: 'Terminal ' + d.terminal + ' lost: ' + d.reason }),
  'termbridge:action': (d) =>
    el('div', { class: 'row event', text: 'Terminal ' + d.action + ' (' + d.decision + ', ' + d.latency_ms.toFixed(1) + ' ms) ' + d.detail }),
  'termbridge:denied': (d) => el('div', { class: 'row event', text: 'Terminal ' + d.action + ' denied: ' + d.reason }),
  'termbridge:capability_update': notInTranscript,

  'diagnostics:log': (d) => el('div', { class: 'row event', text: (d.level || 'log') + ': ' + (d.message || '') }),
};

/**
 * The renderer of `ev`'s type; a type newer than this app gets a mark.
 * @param {BosunEvent} ev
 * @returns {(data: BosunEvent['data'], ev: BosunEvent, view: OpenSession) => HTMLElement}
 */
function rendererOf(ev) {
  if (!Object.hasOwn(renderers, ev.type)) return notInTranscript;
  // Each renderer takes its own type's payload, and `ev` is that type.
  return /** @type {(data: BosunEvent['data'], ev: BosunEvent, view: OpenSession) => HTMLElement} */ (renderers[ev.type]);
}

/** @param {HTMLElement} box */
function atBottom(box) {
  return box.scrollHeight - box.scrollTop - box.clientHeight < 80;
}

/**
 * Draws an event of the open session, once: an event seen before (a replay
 * after a resume) is skipped.
 * @param {BosunEvent} ev
 */
export function renderEvent(ev) {
  const v = state.view;
  if (!v || v.seqs.has(ev.seq)) return;
  v.seqs.add(ev.seq);
  const box = $('transcript');
  const stick = atBottom(box);
  const node = rendererOf(ev)(ev.data, ev, v);
  node.dataset.seq = String(ev.seq);
  if (!node.isConnected) {
    box.append(node);
    // Bookkeeping marks are invisible: a stream goes on in the same block across them.
    if (!node.classList.contains('mark')) v.lastRow = node;
  }
  if (stick) box.scrollTop = box.scrollHeight;
}

/** @param {Action | undefined} action */
function actionText(action) {
  if (!action) return '';
  if (action.kind === 'command') return action.command + (action.cwd ? '  (in ' + action.cwd + ')' : '');
  if (action.kind === 'file_change') return action.path + (action.summary ? ': ' + action.summary : '');
  if (action.kind === 'gate') return 'workflow gate ' + action.step_id + ': ' + action.message;
  if (action.kind === 'terminal') return action.terminal + ' ' + action.action + ': ' + action.text + ' (' + action.concerns.join(', ') + ')';
  return (action.tool ? action.tool + ': ' : '') + (action.title || JSON.stringify(action));
}

/**
 * A tool's detail (free-form, as the agent's protocol gave it): a diff when
 * it has one, else its text or JSON.
 * @param {unknown} detail
 */
function detailNode(detail) {
  if (detail === undefined || detail === null || detail === '') return null;
  let text;
  if (typeof detail === 'string') text = detail;
  else {
    const d = /** @type {Record<string, unknown>} */ (detail);
    if (typeof d.diff === 'string') text = d.diff;
    else if (Array.isArray(d.diffs) || d.old_text !== undefined || d.new_text !== undefined) {
      const diffs = Array.isArray(d.diffs) ? d.diffs : [d];
      text = diffs.map(diffText).join('\n');
    } else text = JSON.stringify(detail, null, 2);
  }
  const pre = el('pre', { class: 'detail' });
  if (/^(---|\+\+\+|@@|[-+] )/m.test(text)) {
    pre.classList.add('diff');
    for (const line of text.split('\n')) {
      const cls = line.startsWith('+') && !line.startsWith('+++') ? 'add' : line.startsWith('-') && !line.startsWith('---') ? 'del' : null;
      pre.append(el('span', { class: cls, text: line + '\n' }));
    }
  } else pre.textContent = text;
  return pre;
}

/** @param {{ path?: unknown, old_text?: unknown, new_text?: unknown }} d */
function diffText(d) {
  const out = ['--- ' + (d.path || 'a'), '+++ ' + (d.path || 'b')];
  for (const l of String(d.old_text || '').split('\n')) if (l) out.push('- ' + l);
  for (const l of String(d.new_text || '').split('\n')) if (l) out.push('+ ' + l);
  return out.join('\n');
}
