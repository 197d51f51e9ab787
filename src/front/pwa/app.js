// Bosun phone app. Vanilla JS, no build step: served as is by the daemon.
//
// One WebSocket subscribed to every topic carries the live events; each event
// is processed once, in seq order (`lastSeq` gates it), and the open session's
// transcript is built from its events, de-duplicated by seq. A reload rebuilds
// the transcript from the API, then resumes the subscription from a seq it had.
'use strict';

(function () {
  const TOKEN_KEY = 'bosun.token';
  const SEQ_KEY = 'bosun.lastSeq';
  const QUEUE_KEY = 'bosun.decisions';
  const PAGE = 1000;
  const POLL_MS = 2000;
  const WS_FAILURES_BEFORE_POLLING = 3;

  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = v;
      else node.setAttribute(k, v === true ? '' : String(v));
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  };

  // ---- state ----
  const state = {
    token: localStorage.getItem(TOKEN_KEY) || '',
    sessions: new Map(), // id -> session
    pending: new Map(), // approval id -> approval (pending, not decided here yet)
    lastSeq: 0, // the last event processed from the stream (WebSocket or polling)
    view: null, // {id, seqs:Set, chunks:Set, loading, buffer, activeTurn, tools:Map, agentBlock}
    started: false,
    pairing: false,
  };
  const conn = {
    ws: null,
    wsOpen: false,
    failures: 0, // consecutive WebSocket attempts that never opened
    retryTimer: null,
    backoff: 0,
    pollTimer: null,
    polling: false,
    httpDown: false,
  };

  const readSeq = () => {
    const raw = sessionStorage.getItem(SEQ_KEY) || localStorage.getItem(SEQ_KEY);
    const n = Number(raw);
    return Number.isFinite(n) && n > 0 ? n : null;
  };
  let seqSaveTimer = null;
  const saveSeq = () => {
    if (seqSaveTimer) return;
    // Saving every chunk of a fast stream would be wasted work; a little lag only means a
    // few events are sent again after a reload, and those are de-duplicated by seq.
    seqSaveTimer = setTimeout(() => {
      seqSaveTimer = null;
      sessionStorage.setItem(SEQ_KEY, String(state.lastSeq));
      localStorage.setItem(SEQ_KEY, String(state.lastSeq));
    }, 250);
  };

  // ---- HTTP ----
  class HttpError extends Error {
    constructor(status, body) {
      const err = body && body.error;
      super(err ? err.message : 'HTTP ' + status);
      this.status = status;
      this.code = err ? err.code : '';
    }
  }
  async function api(method, path, body) {
    // X-Bosun-Client: the daemon refuses state-changing requests that lack it
    // (or a JSON body), which is how it tells us from a cross-site form.
    const headers = { 'X-Bosun-Client': 'bosun-web' };
    if (state.token) headers.Authorization = 'Bearer ' + state.token;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let res;
    try {
      res = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
      });
    } catch (e) {
      conn.httpDown = true;
      updateIndicator();
      throw e;
    }
    if (conn.httpDown) {
      conn.httpDown = false;
      updateIndicator();
    }
    let data = null;
    const text = await res.text();
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (_) {
        data = null;
      }
    }
    if (res.status === 401 && !path.startsWith('/auth/')) showPairing();
    if (!res.ok) throw new HttpError(res.status, data);
    return data;
  }

  // ---- connection indicator ----
  function updateIndicator() {
    let s = 'reconnecting';
    if (!navigator.onLine) s = 'offline';
    else if (conn.wsOpen) s = 'live';
    else if (conn.httpDown) s = 'offline';
    const node = $('connection');
    if (node.textContent !== s) node.textContent = s;
    node.dataset.state = s;
    node.dataset.mode = conn.wsOpen ? 'websocket' : conn.polling ? 'polling' : 'none';
  }

  // ---- WebSocket, with backoff and a polling fallback ----
  function wsUrl() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const q = state.token ? '?token=' + encodeURIComponent(state.token) : '';
    return proto + '//' + location.host + '/ws' + q;
  }
  function connect() {
    if (!state.started || state.pairing) return;
    if (conn.ws && (conn.ws.readyState === WebSocket.OPEN || conn.ws.readyState === WebSocket.CONNECTING)) return;
    clearTimeout(conn.retryTimer);
    conn.retryTimer = null;
    if (!navigator.onLine) {
      // No network at all: 'online' brings us back; a slow retry covers a missed event.
      updateIndicator();
      conn.retryTimer = setTimeout(connect, 5000);
      return;
    }
    let ws;
    try {
      ws = new WebSocket(wsUrl());
    } catch (_) {
      onWsFailure(false);
      return;
    }
    conn.ws = ws;
    let opened = false;
    ws.onopen = () => {
      if (conn.ws !== ws) return;
      opened = true;
      conn.wsOpen = true;
      conn.failures = 0;
      conn.backoff = 0;
      stopPolling();
      updateIndicator();
      ws.send(JSON.stringify({ op: 'subscribe', topics: ['*'], since: state.lastSeq }));
      flushDecisions();
    };
    ws.onmessage = (msg) => {
      if (conn.ws !== ws || typeof msg.data !== 'string') return;
      let frame;
      try {
        frame = JSON.parse(msg.data);
      } catch (_) {
        return;
      }
      if (frame.op) {
        if (frame.op === 'error' && frame.error && frame.error.code === 'unauthorized') showPairing();
        return;
      }
      if (frame.type === 'error' && frame.error && frame.error.code === 'unauthorized') {
        showPairing();
        return;
      }
      if (typeof frame.seq === 'number') processEvent(frame);
    };
    ws.onclose = (ev) => {
      if (conn.ws !== ws) return;
      conn.ws = null;
      conn.wsOpen = false;
      updateIndicator();
      // 4401: the daemon closed the socket because the token is no longer valid (e.g. revoked).
      if (ev.code === 4401) {
        showPairing();
        return;
      }
      onWsFailure(opened);
    };
    ws.onerror = () => {
      // onclose follows and schedules the retry.
    };
  }
  function onWsFailure(hadOpened) {
    if (!hadOpened) conn.failures += 1;
    if (conn.failures >= WS_FAILURES_BEFORE_POLLING) startPolling();
    // A drop after a working connection is retried at once; repeated failures back off.
    conn.backoff = hadOpened ? 300 : Math.min(conn.backoff ? conn.backoff * 2 : 500, 15000);
    const delay = conn.backoff * (0.8 + Math.random() * 0.4);
    clearTimeout(conn.retryTimer);
    conn.retryTimer = setTimeout(connect, delay);
    // A 401 on HTTP is how we learn that the socket was refused for want of a token.
    if (!hadOpened && conn.failures >= 1) api('GET', '/health').catch(() => {});
  }
  // An open socket does not learn that its token was revoked; a cheap authenticated request
  // now and then (and whenever the app comes back to the foreground) does, and shows pairing.
  function checkAuth() {
    if (state.started && !state.pairing && navigator.onLine) api('GET', '/health').catch(() => {});
  }
  function reconnectNow() {
    if (!state.started) return;
    checkAuth();
    conn.backoff = 0;
    updateIndicator();
    if (!conn.wsOpen) connect();
    flushDecisions();
  }
  function startPolling() {
    if (conn.polling) return;
    conn.polling = true;
    updateIndicator();
    const tick = async () => {
      if (!conn.polling) return;
      try {
        for (;;) {
          const page = await api('GET', '/api/v1/events?since=' + state.lastSeq + '&limit=' + PAGE);
          // The WebSocket may have come back while this request was out; lastSeq gates both.
          for (const ev of page.events) processEvent(ev);
          if (page.events.length < PAGE) break;
        }
        flushDecisions();
      } catch (_) {
        // offline or refused: the indicator says so; try again on the next tick
      }
      if (conn.polling) conn.pollTimer = setTimeout(tick, POLL_MS);
    };
    tick();
  }
  function stopPolling() {
    conn.polling = false;
    clearTimeout(conn.pollTimer);
    conn.pollTimer = null;
  }

  // ---- events ----
  function processEvent(ev) {
    if (ev.seq <= state.lastSeq) return; // already processed: a replay after a resume
    state.lastSeq = ev.seq;
    saveSeq();
    const d = ev.data || {};
    const sid = ev.topic && ev.topic.startsWith('session:') ? ev.topic.slice(8) : null;
    switch (ev.type) {
      case 'session:update':
        if (d.id) state.sessions.set(d.id, d);
        break;
      case 'session:closed':
        state.sessions.delete(d.session_id || sid);
        for (const [id, a] of state.pending) if (a.session_id === (d.session_id || sid)) state.pending.delete(id);
        break;
      case 'approval:requested':
        if (d.approval && d.approval.status === 'pending') state.pending.set(d.approval.id, d.approval);
        break;
      case 'approval:resolved':
        if (d.approval) state.pending.delete(d.approval.id);
        dropQueued(d.approval && d.approval.id);
        break;
      case 'turn:started':
        if (sid && state.sessions.has(sid)) {
          const s = state.sessions.get(sid);
          state.sessions.set(sid, Object.assign({}, s, { active_turn: d.turn_id, status: 'running' }));
        }
        break;
      case 'turn:completed':
        if (sid && state.sessions.has(sid)) {
          const s = state.sessions.get(sid);
          if (s.active_turn === d.turn_id) state.sessions.set(sid, Object.assign({}, s, { active_turn: null, status: 'idle' }));
        }
        for (const [id, a] of state.pending) if (a.turn_id === d.turn_id) state.pending.delete(id);
        break;
      default:
        break;
    }
    if (state.view && sid === state.view.id) {
      if (state.view.loading) state.view.buffer.push(ev);
      else renderEvent(ev);
    }
    scheduleUi();
  }

  let uiQueued = false;
  function scheduleUi() {
    if (uiQueued) return;
    uiQueued = true;
    requestAnimationFrame(() => {
      uiQueued = false;
      renderList();
      renderSessionHead();
      renderApproval();
    });
  }

  // ---- transcript ----
  function atBottom(box) {
    return box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  }
  function renderEvent(ev) {
    const v = state.view;
    if (!v || v.seqs.has(ev.seq)) return;
    v.seqs.add(ev.seq);
    const box = $('transcript');
    const stick = atBottom(box);
    const d = ev.data || {};
    const node = eventNode(ev, d, v);
    if (node) {
      node.dataset.seq = String(ev.seq);
      if (!node.isConnected) {
        box.append(node);
        // Bookkeeping marks are invisible: a stream goes on in the same block across them.
        if (!node.classList.contains('mark')) v.lastRow = node;
      }
    }
    if (stick) box.scrollTop = box.scrollHeight;
  }

  function endBlock(v) {
    v.agentBlock = null;
  }
  // Returns the element for the event; chunks go into the open block of the same turn and kind.
  function eventNode(ev, d, v) {
    switch (ev.type) {
      case 'turn:started': {
        endBlock(v);
        v.activeTurn = d.turn_id;
        return el('div', { class: 'row user', 'data-turn': d.turn_id, text: d.text || '' });
      }
      case 'stream:chunk': {
        const key = d.turn_id + ':' + d.index;
        if (v.chunks.has(key)) return el('span', { class: 'mark', 'data-duplicate': key });
        v.chunks.add(key);
        const kind = ['text', 'thought', 'command_output', 'notice'].includes(d.kind) ? d.kind : 'text';
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
      }
      case 'turn:update':
        // running / awaiting_approval: the status pill and the approval rows say it already
        return el('span', { class: 'mark', 'data-type': ev.type, 'data-status': d.status || '' });
      case 'turn:steer':
        endBlock(v);
        return el('div', { class: 'row user steer', text: 'Steer: ' + (d.text || '') });
      case 'stream:complete':
        endBlock(v);
        return el('span', { class: 'mark' });
      case 'turn:completed': {
        endBlock(v);
        if (v.activeTurn === d.turn_id) v.activeTurn = null;
        const status = d.status || 'completed';
        const usage = d.usage && (d.usage.input_tokens || d.usage.output_tokens)
          ? ' · ' + (d.usage.input_tokens || 0) + ' in / ' + (d.usage.output_tokens || 0) + ' out'
          : '';
        // A shell command's result: its exit code says more than "completed".
        const r = d.result;
        const result = r
          ? ' · ' + (r.exit_code === null || r.exit_code === undefined ? 'no exit code' : 'exit ' + r.exit_code) +
            (typeof r.duration_ms === 'number' ? ' · ' + r.duration_ms + ' ms' : '')
          : '';
        const attrs = {
          class: 'row event end end-' + status + (r && r.exit_code !== 0 ? ' nonzero' : ''),
          'data-turn-end': d.turn_id,
          'data-status': status,
          text: 'Turn ' + status + (d.reason ? ': ' + d.reason : '') + result + usage,
        };
        if (r) attrs['data-exit-code'] = r.exit_code === null || r.exit_code === undefined ? '' : String(r.exit_code);
        return el('div', attrs);
      }
      case 'approval:requested': {
        endBlock(v);
        const a = d.approval || {};
        return el('div', { class: 'row approval', 'data-approval': a.id }, el('strong', { text: 'Approval requested: ' }), actionText(a.action));
      }
      case 'approval:resolved': {
        endBlock(v);
        const a = d.approval || {};
        const who = d.automatic ? ' automatically (policy)' : a.decided_by ? ' by ' + a.decided_by : '';
        return el('div', { class: 'row event approval-resolved', 'data-approval': a.id, text: 'Action ' + (a.status || 'resolved') + who + ': ' + actionText(a.action) });
      }
      case 'tool:call': {
        endBlock(v);
        const t = d.tool || {};
        const status = el('span', { class: 'status', 'data-status': t.status || '', text: t.status || '' });
        const out = el('pre', { class: 'tool-output', hidden: true });
        const node = el(
          'div',
          { class: 'row tool', 'data-tool': t.id || '' },
          el('div', { class: 'tool-head' }, el('span', { text: (t.kind ? t.kind + ': ' : '') + (t.title || 'tool') }), status),
          detailNode(t.detail),
          out
        );
        v.tools.set(t.id, { node, status, out });
        return node;
      }
      case 'tool:update': {
        endBlock(v);
        const t = v.tools.get(d.tool_id);
        if (!t) return el('div', { class: 'row event', text: 'tool ' + (d.status || 'update') + (d.output ? ': ' + d.output : '') });
        if (d.status) {
          t.status.textContent = d.status;
          t.status.dataset.status = d.status;
        }
        if (d.title) t.node.querySelector('.tool-head span').textContent = d.title;
        if (typeof d.output === 'string' && d.output) {
          t.out.hidden = false;
          t.out.textContent = d.output;
        }
        if (d.detail) t.node.insertBefore(detailNode(d.detail), t.out);
        return el('span', { class: 'mark', 'data-tool-update': d.tool_id });
      }
      case 'plan:update': {
        endBlock(v);
        for (const old of document.querySelectorAll('#transcript .row.plan[data-turn="' + CSS.escape(d.turn_id || '') + '"]')) old.classList.add('superseded');
        const list = el('ol');
        for (const e of d.entries || []) list.append(el('li', { 'data-status': e.status || '', text: e.content || '' }));
        return el('div', { class: 'row plan', 'data-turn': d.turn_id }, el('strong', { text: 'Plan' }), list);
      }
      case 'diagnostics:log':
        return el('div', { class: 'row event', text: (d.level || 'log') + ': ' + (d.message || '') });
      case 'policy:violation':
        endBlock(v);
        return el('div', {
          class: 'row event end-failed violation',
          'data-violation': d.turn_id || '',
          text: 'Policy violation: the agent ' + (d.what || 'acted') + ' without an approval',
        });
      case 'policy:mode_restored':
        return el('div', {
          class: 'row event',
          text: 'The agent switched itself to mode "' + (d.from || '?') + '", which does not ask; put back in "' + (d.to || '?') + '"',
        });
      case 'provider:status':
        // Only trouble is worth a line; ready/running/bound are routine.
        if (d.status !== 'crashed' && d.status !== 'restarting') return el('span', { class: 'mark', 'data-type': ev.type });
        return el('div', {
          class: 'row event end-failed',
          text: 'Agent ' + (d.provider || '') + ' ' + d.status + (d.reason ? ': ' + d.reason : d.error ? ': ' + d.error : ''),
        });
      case 'session:closed':
        return el('div', { class: 'row event', text: 'Session closed' });
      default:
        // session:update, usage:update, ...: state, not conversation
        return el('span', { class: 'mark', 'data-type': ev.type });
    }
  }

  function actionText(action) {
    if (!action) return '';
    if (action.kind === 'command') return action.command + (action.cwd ? '  (in ' + action.cwd + ')' : '');
    if (action.kind === 'file_change') return action.path + (action.summary ? ': ' + action.summary : '');
    return (action.tool ? action.tool + ': ' : '') + (action.title || JSON.stringify(action));
  }

  // A tool's detail: a diff when it has one, else its text or JSON.
  function detailNode(detail) {
    if (detail === undefined || detail === null || detail === '') return null;
    let text;
    if (typeof detail === 'string') text = detail;
    else if (typeof detail.diff === 'string') text = detail.diff;
    else if (Array.isArray(detail.diffs) || detail.old_text !== undefined || detail.new_text !== undefined) {
      const diffs = Array.isArray(detail.diffs) ? detail.diffs : [detail];
      text = diffs.map(diffText).join('\n');
    } else text = JSON.stringify(detail, null, 2);
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
  function diffText(d) {
    const out = ['--- ' + (d.path || 'a'), '+++ ' + (d.path || 'b')];
    for (const l of String(d.old_text || '').split('\n')) if (l) out.push('- ' + l);
    for (const l of String(d.new_text || '').split('\n')) if (l) out.push('+ ' + l);
    return out.join('\n');
  }

  // ---- session list ----
  function pendingCount(id) {
    let n = 0;
    const queued = queuedIds();
    for (const a of state.pending.values()) if (a.session_id === id && !queued.has(a.id)) n++;
    return n;
  }
  function renderList() {
    const ul = $('sessions');
    const sessions = [...state.sessions.values()].filter((s) => !s.archived).sort((a, b) => (b.created_at || '').localeCompare(a.created_at || ''));
    $('no-sessions').hidden = sessions.length > 0;
    const existing = new Map([...ul.children].map((li) => [li.dataset.session, li]));
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
          el('span', { class: 'meta' })
        );
      }
      const [a, status, badge, meta] = li.children;
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

  /// provider · policy [· sandbox [+ network]] · branch or cwd
  function sessionMeta(s) {
    const parts = [s.provider, s.policy];
    if (s.sandbox && s.sandbox !== 'none') parts.push(s.sandbox + (s.network ? ' + network' : ''));
    parts.push(s.workspace ? s.workspace.repo + ' @ bosun/' + s.id : s.cwd);
    return parts.join(' · ');
  }

  // ---- session view ----
  function currentSession() {
    return state.view ? state.sessions.get(state.view.id) : null;
  }
  function activeTurn() {
    const s = currentSession();
    if (s && s.active_turn) return s.active_turn;
    return state.view ? state.view.activeTurn : null;
  }
  function renderSessionHead() {
    const s = currentSession();
    if (!state.view) return;
    $('session-title').textContent = s ? s.title : state.view.id;
    $('session-meta').textContent = s ? sessionMeta(s) : '';
    $('title').textContent = s ? s.title : 'Bosun';
    const st = $('session-status');
    st.textContent = s ? (s.status || '').replace('_', ' ') : '';
    st.dataset.status = s ? s.status : '';
    const active = !!activeTurn();
    $('stop').disabled = !active;
    $('steer').disabled = !active;
    const violation = s && s.violation;
    $('violation-banner').hidden = !violation;
    if (violation) {
      $('violation-text').textContent =
        'The agent ' + (violation.what || 'acted') + ' without an approval. The turn was stopped, and ' +
        (violation.provider || 'its provider') + ' is no longer trusted for plan-only sessions.';
    }
    const n = pendingCount(state.view.id);
    $('pending-banner').hidden = n === 0;
    $('pending-text').textContent = n + ' action' + (n === 1 ? '' : 's') + ' waiting for a decision';
  }

  async function openSession(id) {
    const v = { id, seqs: new Set(), chunks: new Set(), loading: true, buffer: [], activeTurn: null, tools: new Map(), agentBlock: null, lastRow: null };
    state.view = v;
    $('transcript').replaceChildren();
    $('composer-error').textContent = '';
    show('session');
    renderSessionHead();
    try {
      if (!state.sessions.has(id)) {
        const s = await api('GET', '/api/v1/sessions/' + encodeURIComponent(id));
        state.sessions.set(id, s);
        for (const a of s.pending_approvals || []) state.pending.set(a.id, a);
      }
      let since = 0;
      for (;;) {
        const page = await api('GET', '/api/v1/events?session=' + encodeURIComponent(id) + '&since=' + since + '&limit=' + PAGE);
        if (state.view !== v) return;
        for (const ev of page.events) renderEvent(ev);
        since = page.next;
        if (page.events.length < PAGE) break;
      }
    } catch (e) {
      if (state.view === v) $('composer-error').textContent = 'Could not load the session: ' + e.message;
    }
    if (state.view !== v) return;
    v.loading = false;
    v.buffer.sort((a, b) => a.seq - b.seq);
    for (const ev of v.buffer) renderEvent(ev);
    v.buffer = [];
    const box = $('transcript');
    box.scrollTop = box.scrollHeight;
    scheduleUi();
    // With a keyboard, typing can start at once; on a phone that would pop the keyboard up.
    if (matchMedia('(pointer: fine)').matches && !$('approval-dialog').open) $('message').focus();
  }

  async function sendMessage() {
    const box = $('message');
    const text = box.value;
    if (!text.trim() || !state.view) return;
    $('composer-error').textContent = '';
    try {
      await api('POST', '/api/v1/sessions/' + encodeURIComponent(state.view.id) + '/turns', { text });
      box.value = '';
    } catch (e) {
      $('composer-error').textContent = e.code === 'busy' ? 'A turn is running: Steer or Stop it first.' : e.message;
    }
  }
  async function steer() {
    const box = $('message');
    const turn = activeTurn();
    if (!box.value.trim() || !turn) return;
    $('composer-error').textContent = '';
    try {
      await api('POST', '/api/v1/sessions/' + encodeURIComponent(state.view.id) + '/turns/' + encodeURIComponent(turn) + '/steer', { text: box.value });
      box.value = '';
    } catch (e) {
      $('composer-error').textContent = e.message;
    }
  }
  async function stop() {
    const turn = activeTurn();
    if (!turn) return;
    $('composer-error').textContent = '';
    try {
      await api('POST', '/api/v1/sessions/' + encodeURIComponent(state.view.id) + '/turns/' + encodeURIComponent(turn) + '/interrupt', {});
    } catch (e) {
      $('composer-error').textContent = e.message;
    }
  }

  // ---- approvals, with decisions queued while offline ----
  function queued() {
    try {
      const q = JSON.parse(localStorage.getItem(QUEUE_KEY) || '[]');
      return Array.isArray(q) ? q : [];
    } catch (_) {
      return [];
    }
  }
  function queuedIds() {
    return new Set(queued().map((q) => q.id));
  }
  function setQueued(q) {
    localStorage.setItem(QUEUE_KEY, JSON.stringify(q));
  }
  function dropQueued(id) {
    if (!id) return;
    const q = queued();
    if (q.some((d) => d.id === id)) setQueued(q.filter((d) => d.id !== id));
  }
  let flushing = false;
  async function flushDecisions() {
    if (flushing) return;
    flushing = true;
    try {
      for (const d of queued()) {
        try {
          await api('POST', '/api/v1/approvals/' + encodeURIComponent(d.id), { decision: d.decision });
          dropQueued(d.id);
        } catch (e) {
          // A network failure keeps it for the next reconnect; an answer (404, 409) settles it.
          if (e instanceof HttpError && e.status !== 401 && e.status !== 503) dropQueued(d.id);
          else break;
        }
      }
    } finally {
      flushing = false;
      scheduleUi();
    }
  }
  async function decide(decision) {
    const a = shownApproval;
    if (!a) return;
    $('approval-error').textContent = '';
    const q = queued().filter((d) => d.id !== a.id);
    q.push({ id: a.id, decision });
    setQueued(q);
    closeApproval();
    scheduleUi();
    if (navigator.onLine) await flushDecisions();
  }

  let shownApproval = null;
  let approvalDismissed = null; // the approval closed with Escape, so it does not pop up again at once
  function renderApproval() {
    const dialog = $('approval-dialog');
    const queuedSet = queuedIds();
    const candidates = state.view ? [...state.pending.values()].filter((a) => a.session_id === state.view.id && !queuedSet.has(a.id)) : [];
    candidates.sort((a, b) => (a.requested_at || '').localeCompare(b.requested_at || ''));
    const next = candidates.find((a) => a.id !== approvalDismissed) || null;
    if (shownApproval && !candidates.some((a) => a.id === shownApproval.id)) closeApproval();
    if (shownApproval || !next || $('new-dialog').open || $('pair-view').hidden === false) return;
    openApproval(next);
  }
  function openApproval(a) {
    shownApproval = a;
    const act = a.action || {};
    const body = $('approval-body');
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
    const dialog = $('approval-dialog');
    dialog.dataset.approval = a.id;
    if (!dialog.open) dialog.showModal();
    $('approve').focus();
  }
  function closeApproval() {
    shownApproval = null;
    const dialog = $('approval-dialog');
    if (dialog.open) dialog.close();
  }

  // ---- new session ----
  async function openNewSession() {
    $('new-error').textContent = '';
    const select = $('new-provider');
    if (!select.options.length) select.append(el('option', { value: 'demo', text: 'demo' }));
    $('new-dialog').showModal();
    $('new-provider').focus();
    try {
      const { providers } = await api('GET', '/api/v1/providers');
      const keep = select.value;
      select.replaceChildren(
        ...providers.map((p) =>
          el('option', { value: p.name, text: p.name + (p.status && p.status !== 'available' && p.status !== 'running' ? ' (' + p.status + ')' : '') })
        )
      );
      if (providers.some((p) => p.name === keep)) select.value = keep;
    } catch (e) {
      $('new-error').textContent = 'Could not list providers: ' + e.message;
    }
  }
  async function createSession(ev) {
    ev.preventDefault();
    const body = { provider: $('new-provider').value || 'demo', policy: $('new-policy').value };
    const cwd = $('new-cwd').value.trim();
    const title = $('new-title').value.trim();
    const repo = $('new-repo').value.trim();
    const branch = $('new-branch').value.trim();
    if (repo && cwd) {
      $('new-error').textContent = 'Give a working directory or a git repository, not both: the repository gets a worktree of its own.';
      return;
    }
    if (repo) body.workspace = branch ? { repo, branch } : { repo };
    if (cwd) body.cwd = cwd;
    if (title) body.title = title;
    const sandbox = $('new-sandbox').value;
    if (sandbox && sandbox !== 'none') body.sandbox = sandbox;
    if ($('new-network').checked) body.network = true;
    $('new-error').textContent = '';
    try {
      const s = await api('POST', '/api/v1/sessions', body);
      state.sessions.set(s.id, s);
      $('new-dialog').close();
      $('new-title').value = '';
      $('new-repo').value = '';
      $('new-branch').value = '';
      location.hash = '#/s/' + encodeURIComponent(s.id);
    } catch (e) {
      $('new-error').textContent = e.message;
    }
  }

  // ---- pairing ----
  function showPairing() {
    if (state.pairing) return;
    state.pairing = true;
    // The daemon refused this token (revoked or unknown): keeping it would only be refused again.
    state.token = '';
    localStorage.removeItem(TOKEN_KEY);
    stopPolling();
    if (conn.ws) conn.ws.close();
    closeApproval();
    if ($('new-dialog').open) $('new-dialog').close();
    show('pair');
    $('pair-code').focus();
  }
  async function pair(code, totp) {
    const body = { pairing_code: code.trim(), device_name: deviceName() };
    if (totp) body.totp = totp.trim();
    const res = await api('POST', '/auth/token', body);
    state.token = res.token;
    localStorage.setItem(TOKEN_KEY, res.token);
  }
  function deviceName() {
    const ua = navigator.userAgent;
    const m = ua.match(/\(([^;)]+)/);
    return ('Bosun app' + (m ? ' on ' + m[1] : '')).slice(0, 64);
  }
  async function submitPair(ev) {
    ev.preventDefault();
    $('pair-error').textContent = '';
    try {
      await pair($('pair-code').value, $('pair-totp').value);
      $('pair-code').value = '';
      $('pair-totp').value = '';
      state.pairing = false;
      await start();
    } catch (e) {
      $('pair-error').textContent = 'Pairing failed: ' + e.message;
    }
  }

  // ---- views and routing ----
  function show(which) {
    $('pair-view').hidden = which !== 'pair';
    $('list-view').hidden = which !== 'list';
    $('session-view').hidden = which !== 'session';
    $('back').hidden = which !== 'session';
    if (which !== 'session') $('title').textContent = 'Bosun';
  }
  function route() {
    if (state.pairing || !state.started) return;
    const m = location.hash.match(/^#\/s\/([^/]+)$/);
    if (m) {
      const id = decodeURIComponent(m[1]);
      if (!state.view || state.view.id !== id) {
        approvalDismissed = null;
        closeApproval();
        openSession(id);
      }
      return;
    }
    state.view = null;
    closeApproval();
    show('list');
    scheduleUi();
  }

  async function loadState() {
    // The head is read first: events after it are replayed over the snapshot below, and
    // replaying a session's update over a newer snapshot is corrected by the events that follow.
    const health = await api('GET', '/health');
    const head = typeof health.head_seq === 'number' ? health.head_seq : 0;
    const [sessions, approvals] = await Promise.all([api('GET', '/api/v1/sessions'), api('GET', '/api/v1/approvals?status=pending')]);
    state.sessions = new Map(sessions.sessions.map((s) => [s.id, s]));
    state.pending = new Map(approvals.approvals.map((a) => [a.id, a]));
    // Resume from the seq this tab had when it is older than the head (a few events again,
    // de-duplicated), never from a seq the daemon does not have (a new data dir).
    const saved = readSeq();
    state.lastSeq = saved !== null && saved < head ? saved : head;
  }

  let authTimer = null;
  async function start() {
    try {
      await loadState();
    } catch (e) {
      if (state.pairing) return;
      // The daemon is unreachable: show what we can and keep trying.
      show('list');
      $('no-sessions').hidden = false;
      $('no-sessions').textContent = 'Cannot reach the daemon (' + e.message + '). Retrying…';
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
    const pairMatch = location.hash.match(/^#pair=([^&]+)/);
    if (pairMatch) {
      history.replaceState(null, '', location.pathname + location.search);
      try {
        await pair(decodeURIComponent(pairMatch[1]), '');
      } catch (e) {
        showPairing();
        $('pair-code').value = decodeURIComponent(pairMatch[1]);
        $('pair-error').textContent = 'Pairing failed: ' + e.message + (e.status === 401 ? ' (an authenticator code may be needed)' : '');
        return;
      }
    }
    await start();
  }

  // ---- wiring ----
  function wire() {
    $('back').addEventListener('click', () => {
      location.hash = '#/';
    });
    $('new-session').addEventListener('click', openNewSession);
    $('new-form').addEventListener('submit', createSession);
    $('new-cancel').addEventListener('click', () => $('new-dialog').close());
    $('new-dialog').addEventListener('close', () => $('new-session').focus());
    $('pair-form').addEventListener('submit', submitPair);
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
      // Escape only puts the question aside; the banner brings it back.
      approvalDismissed = shownApproval ? shownApproval.id : null;
      shownApproval = null;
      setTimeout(() => $('message').focus(), 0);
    });
    $('review-pending').addEventListener('click', () => {
      approvalDismissed = null;
      renderApproval();
    });
    window.addEventListener('hashchange', route);
    window.addEventListener('online', reconnectNow);
    window.addEventListener('offline', () => {
      // The socket may linger for a while after the network went; do not trust it. The
      // reconnect after 'online' resumes from lastSeq, so nothing is lost.
      if (conn.ws) conn.ws.close();
      updateIndicator();
    });
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible') reconnectNow();
    });
    window.addEventListener('pageshow', (ev) => {
      if (ev.persisted) reconnectNow();
    });
  }

  window.bosun = {
    get lastSeq() {
      return state.lastSeq;
    },
    get connection() {
      return $('connection').textContent;
    },
    // Closes the socket as a network drop would: the app reconnects and resumes from lastSeq.
    dropConnection() {
      if (conn.ws) conn.ws.close();
    },
  };

  if ('serviceWorker' in navigator) {
    window.addEventListener('load', () => {
      navigator.serviceWorker.register('/sw.js', { scope: '/' }).catch(() => {});
    });
  }

  wire();
  updateIndicator();
  boot();
})();
