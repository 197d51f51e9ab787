// Shared harness of the browser scripts: Debian's Chromium driven through
// playwright-core at phone size, a step log, and one JSON report on stdout.
//
// Every script is run as `node <script>.mjs <daemon url> <out dir>` by
// tests/pwa.rs. It exits 0 when every step passed, 1 when one failed (the
// report names it), 2 on a usage error or when it ran out of time. Progress
// goes to stderr; the last line on stdout is the JSON report.

import { chromium } from 'playwright-core';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const CHROMIUM = '/usr/bin/chromium';
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
/// A phone: what the app is designed for first.
export const VIEWPORT = { width: 390, height: 844 };
/// How long one wait for the app may take before the step fails.
export const WAIT_MS = 20_000;

export class StepFailed extends Error {}

/// Fails the current step with `message` unless `cond` holds.
export function check(cond, message) {
  if (!cond) throw new StepFailed(message);
}

/// Polls `fn` until it returns a truthy value, or fails with `what`.
export async function until(what, fn, timeoutMs = WAIT_MS, everyMs = 100) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const value = await fn();
      if (value) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new StepFailed(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${last.message})` : ''}`);
    }
    await sleep(everyMs);
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/// Runs in every page before the app: wraps `WebSocket` so the tests see the
/// app's sockets from outside (the app has no test hook). It counts attempts,
/// can close the open socket as a lost network would (`t.dropConnection()`),
/// and can point `/ws` at a closed port so the upgrade fails
/// (`t.refuseWebSocket()`): `page.routeWebSocket()` cannot refuse a socket, as
/// a route that does not connect to the server is a mock the page sees as open.
///
/// A terminal socket (`/ws/terminal/…`) is also recorded in `terminals`: its
/// URL, the frames the app sent (type and bytes, as hex) and the frames it
/// got (type, and an OUTPUT's offset and length, a CLIPBOARD's length), so `t.terminalSockets()`
/// tells what went over it (this page load only).
function watchWebSockets() {
  const Native = window.WebSocket;
  const watch = { attempts: 0, refused: false, open: new Set(), terminals: [] };
  Object.defineProperty(window, '__bosunSockets', { value: watch });
  const hex = (bytes) => [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
  window.WebSocket = class extends Native {
    constructor(url, protocols) {
      watch.attempts += 1;
      const path = new URL(url, location.href).pathname;
      const refused = watch.refused && path === '/ws';
      super(refused ? 'ws://127.0.0.1:9/ws' : url, protocols);
      watch.open.add(this);
      this.addEventListener('close', (ev) => {
        watch.open.delete(this);
        if (this.__record) this.__record.closed = ev.code;
      });
      if (path.startsWith('/ws/terminal/')) {
        const record = { url: String(url), sent: [], got: [], closed: null };
        this.__record = record;
        watch.terminals.push(record);
        this.addEventListener('message', (msg) => {
          if (!(msg.data instanceof ArrayBuffer)) return record.got.push({ type: 'text' });
          const f = new Uint8Array(msg.data);
          const entry = { type: f[0] };
          if (f[0] === 1) {
            entry.offset = Number(new DataView(msg.data).getBigUint64(1));
            entry.len = f.length - 9;
          } else if (f[0] === 4) {
            entry.len = f.length - 1; // CLIPBOARD: OSC 52 sequences, not JSON
          } else {
            entry.json = JSON.parse(new TextDecoder().decode(f.subarray(1)));
          }
          record.got.push(entry);
        });
      }
    }
    send(data) {
      if (this.__record) {
        if (typeof data === 'string') this.__record.sent.push({ type: 'text' });
        else {
          const f = data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
          this.__record.sent.push({ type: f[0], hex: hex(f.subarray(1)) });
        }
      }
      return super.send(data);
    }
  };
}

/// Runs `body(t)` with a fresh browser; prints the report and exits.
export async function run(name, body, { timeoutMs = 240_000 } = {}) {
  const [url, outDir] = process.argv.slice(2);
  if (!url || !outDir) {
    console.error(`usage: node ${name}.mjs <daemon url> <out dir>`);
    process.exit(2);
  }
  mkdirSync(outDir, { recursive: true });
  const report = { script: name, ok: false, steps: [], failed: null, error: null, console: [], info: {} };
  const finish = (code) => {
    process.stdout.write(JSON.stringify(report) + '\n');
    process.exit(code);
  };
  const timer = setTimeout(() => {
    report.error = `the script ran out of time (${timeoutMs} ms); steps passed: ${report.steps.join(', ')}`;
    finish(2);
  }, timeoutMs);

  const profile = mkdtempSync(join(tmpdir(), 'bosun-chromium-'));
  let context;
  const t = new Test(url.replace(/\/$/, ''), outDir, report);
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ARGS,
      viewport: VIEWPORT,
      isMobile: true,
      hasTouch: true,
      deviceScaleFactor: 2,
      serviceWorkers: 'allow',
    });
    t.context = context;
    await context.addInitScript(watchWebSockets);
    t.page = context.pages()[0] ?? (await context.newPage());
    t.watch(t.page);
    await body(t);
    report.ok = true;
  } catch (err) {
    report.failed = t.current;
    report.error = err instanceof StepFailed ? err.message : `${err.name}: ${err.message}`;
    if (t.page) {
      const shot = join(outDir, `failure-${name}.png`);
      try {
        await t.page.screenshot({ path: shot, fullPage: true, timeout: 5000 });
        report.info.failure_screenshot = shot;
        report.info.failure_html = (await t.page.content()).slice(0, 2500);
      } catch {
        // The page may be gone; the report still says what failed.
      }
    }
  } finally {
    clearTimeout(timer);
    if (context) await context.close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
  }
  finish(report.ok ? 0 : 1);
}

class Test {
  constructor(url, outDir, report) {
    this.url = url;
    this.outDir = outDir;
    this.report = report;
    this.current = null;
    this.token = null;
  }

  watch(page) {
    page.on('console', (msg) => {
      if (msg.type() === 'error' || msg.type() === 'warning') this.report.console.push(`${msg.type()}: ${msg.text()}`);
    });
    page.on('pageerror', (err) => this.report.console.push(`pageerror: ${err.message}`));
  }

  /// One named step: logged, and named in the report if it throws.
  async step(name, fn) {
    this.current = name;
    const started = Date.now();
    process.stderr.write(`[${this.report.script}] ${name}...\n`);
    const value = await fn();
    this.report.steps.push(name);
    process.stderr.write(`[${this.report.script}] ${name}: ok (${Date.now() - started} ms)\n`);
    return value;
  }

  async screenshot(file) {
    const path = join(this.outDir, file);
    await this.page.screenshot({ path });
    (this.report.info.screenshots ??= []).push(path);
  }

  /// `file` as the page is, then `<name>-dark.png` with the dark colour scheme.
  async screenshotLightAndDark(file) {
    await this.page.emulateMedia({ colorScheme: 'light' });
    await this.screenshot(file);
    await this.page.emulateMedia({ colorScheme: 'dark' });
    await this.screenshot(file.replace(/\.png$/, '-dark.png'));
    await this.page.emulateMedia({ colorScheme: 'light' });
  }

  /// The daemon's API from the test side (not through the page).
  async api(method, path, body) {
    const headers = { accept: 'application/json', 'x-bosun-client': 'bosun-browser-test' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    const resp = await fetch(this.url + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await resp.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = text;
    }
    return { status: resp.status, body: json };
  }

  async apiOk(method, path, body, want = 200) {
    const { status, body: answer } = await this.api(method, path, body);
    check(status === want, `${method} ${path} answered ${status}, wanted ${want}: ${JSON.stringify(answer)}`);
    return answer;
  }

  /// Every stored event of a session, paging through GET /api/v1/events.
  async events(session, since = 0) {
    const out = [];
    for (;;) {
      const page = await this.apiOk('GET', `/api/v1/events?since=${since}&session=${session}&limit=1000`);
      out.push(...page.events);
      since = page.next;
      if (page.events.length < 1000) return out;
    }
  }

  /// The stored chunks of a turn as `data-chunk` values, in seq order.
  async storedChunks(session, turnId, upToSeq = Infinity) {
    const events = await this.events(session);
    return events
      .filter((e) => e.type === 'stream:chunk' && e.data.turn_id === turnId && e.seq <= upToSeq)
      .map((e) => `${e.data.turn_id}:${e.data.index}`);
  }

  // --- the page, through the contract's accessible names ---

  button(name) {
    return this.page.getByRole('button', { name, exact: true });
  }

  transcript() {
    return this.page.locator('[data-testid="transcript"]');
  }

  connection() {
    return this.page.locator('[data-testid="connection"]');
  }

  async connectionText() {
    return ((await this.connection().first().textContent({ timeout: 2000 })) ?? '').trim().toLowerCase();
  }

  async waitLive(what = 'the connection indicator to say "live"', timeoutMs = WAIT_MS) {
    await until(what, async () => (await this.connectionText()).includes('live'), timeoutMs);
  }

  /// Sets a labelled form field, whatever control the app chose for it.
  async setField(label, value) {
    const field = this.page.getByLabel(label, { exact: true }).first();
    await field.waitFor({ timeout: WAIT_MS }).catch(() => {
      throw new StepFailed(`no form field labelled "${label}"`);
    });
    const tag = await field.evaluate((e) => e.tagName);
    if (tag === 'SELECT') {
      const options = await field.evaluate((e) => [...e.options].map((o) => [o.value, o.textContent.trim()]));
      const match = options.find(([v, text]) => v === value || text === value || text.toLowerCase().includes(value));
      check(match, `"${label}" has no option "${value}"; options: ${JSON.stringify(options)}`);
      await field.selectOption(match[0]);
    } else {
      await field.fill(value);
    }
  }

  async transcriptText() {
    return (await this.transcript().first().textContent({ timeout: 2000 })) ?? '';
  }

  async waitText(what, text, timeoutMs = WAIT_MS) {
    await until(`${what} (transcript text containing ${JSON.stringify(text)})`, async () =>
      (await this.transcriptText()).includes(text), timeoutMs);
  }

  /// The last seq the app processed, as it keeps it for a reload (this
  /// tab's `bosun.lastSeq` in sessionStorage); undefined before it has one.
  async lastSeq() {
    return this.page.evaluate(() => {
      const raw = sessionStorage.getItem('bosun.lastSeq');
      return raw === null ? undefined : Number(raw);
    });
  }

  /// Rendered chunks and lastSeq read in one go, so they belong together.
  async renderedState(turnId) {
    return this.page.evaluate((turn) => {
      const root = document.querySelector('[data-testid="transcript"]');
      const chunks = root ? [...root.querySelectorAll('[data-chunk]')].map((e) => e.getAttribute('data-chunk')) : [];
      const raw = sessionStorage.getItem('bosun.lastSeq');
      return {
        lastSeq: raw === null ? undefined : Number(raw),
        chunks: turn ? chunks.filter((c) => c.startsWith(turn + ':')) : chunks,
      };
    }, turnId);
  }

  /// Closes the page's open WebSocket as a network drop would; the app
  /// reconnects by itself and resumes from its lastSeq.
  async dropConnection() {
    const closed = await this.page.evaluate(() => {
      const open = [...window.__bosunSockets.open];
      for (const ws of open) ws.close();
      return open.length;
    });
    this.report.info.dropped_sockets = (this.report.info.dropped_sockets ?? 0) + closed;
    return closed;
  }

  /// From the next page load on, every `/ws` socket fails to open.
  async refuseWebSocket() {
    await this.context.addInitScript(() => {
      window.__bosunSockets.refused = true;
    });
  }

  /// Lets `/ws` sockets through again, in the current page.
  async allowWebSocket() {
    await this.page.evaluate(() => {
      window.__bosunSockets.refused = false;
    });
  }

  /// What went over each terminal socket of this page load (see watchWebSockets).
  async terminalSockets() {
    return this.page.evaluate(() => JSON.parse(JSON.stringify(window.__bosunSockets.terminals)));
  }

  /// How many WebSockets the page has tried to open.
  async wsAttempts() {
    return this.page.evaluate(() => window.__bosunSockets.attempts);
  }

  /// Types and sends a prompt; returns the new turn id (from the API).
  async send(session, text) {
    const before = new Set((await this.apiOk('GET', `/api/v1/sessions/${session}/turns`)).turns.map((x) => x.id ?? x.turn_id));
    const box = this.page.getByLabel('Message', { exact: true }).first();
    await box.waitFor({ timeout: WAIT_MS }).catch(() => {
      throw new StepFailed('no textarea labelled "Message"');
    });
    await box.fill(text);
    await this.button('Send').click({ timeout: WAIT_MS });
    return until(`a new turn for ${JSON.stringify(text)} in GET /api/v1/sessions/${session}/turns`, async () => {
      const turns = (await this.apiOk('GET', `/api/v1/sessions/${session}/turns`)).turns;
      const fresh = turns.find((x) => !before.has(x.id ?? x.turn_id));
      return fresh && (fresh.id ?? fresh.turn_id);
    });
  }

  async waitTurnEnd(session, turnId, timeoutMs = 60_000) {
    return until(`turn ${turnId} to end (turn:completed in the event log)`, async () => {
      const events = await this.events(session);
      return events.find((e) => e.type === 'turn:completed' && e.data.turn_id === turnId);
    }, timeoutMs, 200);
  }

  /// The session the page created, found by its (unique) working directory.
  async sessionByCwd(cwd) {
    return until(`a session with cwd ${cwd} in GET /api/v1/sessions`, async () => {
      const { sessions } = await this.apiOk('GET', '/api/v1/sessions');
      return sessions.find((s) => s.cwd === cwd);
    });
  }

  /// Starts recording every text the connection indicator shows.
  async recordConnection() {
    // Watches the whole document: the app may replace the indicator element.
    await this.page.evaluate(() => {
      const read = () => {
        const el = document.querySelector('[data-testid="connection"]');
        return el ? el.textContent.trim().toLowerCase() : null;
      };
      if (window.__bosunObserver) window.__bosunObserver.disconnect();
      window.__bosunStates = [read()];
      window.__bosunObserver = new MutationObserver(() => {
        const text = read();
        if (window.__bosunStates[window.__bosunStates.length - 1] !== text) window.__bosunStates.push(text);
      });
      window.__bosunObserver.observe(document.documentElement, {
        childList: true,
        subtree: true,
        characterData: true,
        attributes: true,
      });
    });
  }

  async connectionStates() {
    return this.page.evaluate(() => window.__bosunStates ?? []);
  }
}

/// Fails if `values` holds one twice; names the first duplicate.
export function checkNoDuplicates(values, what) {
  const seen = new Set();
  for (const v of values) {
    check(!seen.has(v), `${what}: ${v} is rendered twice`);
    seen.add(v);
  }
}

/// Fails unless the rendered chunks equal the stored ones, one for one and in order.
export function checkSameChunks(rendered, stored, what) {
  checkNoDuplicates(rendered, what);
  const missing = stored.filter((c) => !rendered.includes(c));
  const extra = rendered.filter((c) => !stored.includes(c));
  check(
    missing.length === 0 && extra.length === 0,
    `${what}: rendered ${rendered.length} chunks, stored ${stored.length}; missing ${JSON.stringify(missing.slice(0, 10))}, ` +
      `not stored ${JSON.stringify(extra.slice(0, 10))}`,
  );
  const firstOff = rendered.findIndex((c, i) => c !== stored[i]);
  check(firstOff === -1, `${what}: out of order at position ${firstOff}: rendered ${rendered[firstOff]}, stored ${stored[firstOff]}`);
}
