// The Terminals screen at phone size, against a daemon that sees a private
// tmux server, a WezTerm stand-in (BOSUN_WEZTERM_CLI) that needs consent
// (`[termbridge] opt_in`) and an Alacritty stand-in, under the default
// plan-only policy for bindings without a session:
// - the Terminals tab lists the capability map: tmux running, its version,
//   capabilities, notes and risk flags as the API has them;
// - WezTerm's consent: not granted, no spawn form; Grant sets
//   consent_granted_at in the API and offers the form, Revoke clears it;
// - Start in tmux `bash --norc --noprofile` from the form: held, the page
//   says it is waiting for approval and the approval dialog asks; Approve
//   binds it; Send `echo hi-from-phone` with Enter is held too, approved,
//   and Read shows `hi-from-phone` (text typed as HTML is shown as text);
//   Focus records a `termbridge:action` `focus`;
// - only what a terminal's capabilities allow is offered: an Alacritty
//   binding (no focus, send or read back) has Close only, and its 501 is
//   shown; a `pty` binding has no Focus; Alacritty's form has no split;
// - Close on the tmux binding takes it off the list (closed in the API); a
//   pane killed by hand is marked lost with the reason;
// - "Discover again" reads the map again; no CSP violation throughout.
import { run, check, until, WAIT_MS } from './lib.mjs';
import { execFileSync } from 'node:child_process';

/// The private tmux server's socket name (`tmux -L`), from tests/pwa.rs.
const TMUX_SOCKET = process.env.BOSUN_TEST_TMUX_SOCKET;

/// Records Content-Security-Policy violations from before the app runs.
function watchCsp() {
  window.__cspViolations = [];
  document.addEventListener('securitypolicyviolation', (e) => {
    window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI} ${e.sample || ''}`);
  });
}

run('bridge', async (t) => {
  await t.context.addInitScript(watchCsp);
  const page = t.page;
  const entry = (kind) => page.locator(`[data-testid="terminal-entry"][data-terminal="${kind}"]`);
  const bindingCard = (id) => page.locator(`[data-testid="binding"][data-binding="${id}"]`);
  const within = (loc, name) => loc.getByRole('button', { name, exact: true });
  const mapEntry = async (kind) => (await t.apiOk('GET', '/api/v1/terminals')).terminals.find((x) => x.terminal === kind);
  const bindings = async () => (await t.apiOk('GET', '/api/v1/terminals/bindings')).bindings;
  const dialog = () => page.locator('#approval-dialog');
  const allEvents = async () => {
    const out = [];
    for (let since = 0; ; ) {
      const got = await t.apiOk('GET', `/api/v1/events?since=${since}&limit=1000`);
      out.push(...got.events);
      since = got.next;
      if (got.events.length < 1000) return out;
    }
  };
  /// Approves what the dialog shows, after checking its heading and text.
  const approveInDialog = async (heading, text) => {
    await until('the approval dialog to open', async () => dialog().evaluate((d) => d.open));
    const shown = ((await page.locator('#approval-heading').textContent()) ?? '').trim();
    check(shown === heading, `the dialog asks "${shown}", wanted "${heading}"`);
    const body = (await page.locator('#approval-body [data-testid="terminal-text"]').textContent()) ?? '';
    check(body.includes(text), `the dialog shows ${JSON.stringify(body)}, wanted it to hold ${JSON.stringify(text)}`);
    await t.button('Approve').click();
    await until('the dialog to close', async () => !(await dialog().evaluate((d) => d.open)));
  };

  await t.step('the Terminals tab opens the screen', async () => {
    await page.goto(t.url + '/');
    await t.waitLive();
    await page.getByRole('link', { name: 'Terminals', exact: true }).click({ timeout: WAIT_MS });
    await until('the hash #/terminals', async () => page.url().endsWith('#/terminals'));
    await page.getByRole('heading', { name: 'Terminals', exact: true }).waitFor({ timeout: WAIT_MS });
    check((await page.getByRole('link', { name: 'Terminals', exact: true }).getAttribute('aria-current')) === 'page', 'the tab is marked current');
  });

  await t.step('the map lists tmux as running, with its version, capabilities, notes and risk flags', async () => {
    const api = await mapEntry('tmux');
    check(api && api.running && api.installed, `tmux in the API's map: ${JSON.stringify(api)}`);
    const tmux = entry('tmux');
    await tmux.waitFor({ timeout: WAIT_MS });
    const presence = ((await tmux.locator('[data-testid="presence"]').textContent()) ?? '').trim();
    check(presence === 'running', `tmux shows "${presence}"`);
    check((await tmux.getAttribute('data-running')) === 'true', 'data-running');
    const version = ((await tmux.locator('[data-testid="version"]').textContent()) ?? '').trim();
    check(api.version && version === api.version, `the version "${version}", the API's "${api.version}"`);
    const caps = await tmux.locator('[data-testid="capabilities"] li').evaluateAll((lis) => lis.map((li) => li.dataset.cap));
    t.report.info.tmux_caps = caps;
    for (const cap of ['spawn', 'split', 'focus', 'send_text', 'read_text']) check(caps.includes(cap), `tmux lacks ${cap}: ${JSON.stringify(caps)}`);
    const wanted = Object.entries(api.capabilities).filter(([k, v]) => v === true).map(([k]) => k).sort();
    check(JSON.stringify([...caps].sort()) === JSON.stringify(wanted), `shown ${JSON.stringify(caps)}, the API's ${JSON.stringify(wanted)}`);
    const notes = await tmux.locator('[data-testid="note"]').allTextContents();
    check(JSON.stringify(notes) === JSON.stringify(api.notes), `notes ${JSON.stringify(notes)}, the API's ${JSON.stringify(api.notes)}`);
    const risks = await tmux.locator('[data-testid="risk-flags"] li').evaluateAll((lis) => lis.map((li) => li.dataset.risk));
    check(JSON.stringify(risks) === JSON.stringify(api.risk_flags), `risk flags ${JSON.stringify(risks)}, the API's ${JSON.stringify(api.risk_flags)}`);
    // Every terminal kind is listed, as in the API.
    const kinds = await page.locator('[data-testid="terminal-entry"]').evaluateAll((lis) => lis.map((li) => li.dataset.terminal));
    const apiKinds = (await t.apiOk('GET', '/api/v1/terminals')).terminals.map((x) => x.terminal);
    check(JSON.stringify(kinds) === JSON.stringify(apiKinds), `listed ${JSON.stringify(kinds)}, the API ${JSON.stringify(apiKinds)}`);
    await t.screenshot('terminals-map.png');
  });

  await t.step('WezTerm needs consent: Grant sets consent_granted_at, Revoke clears it', async () => {
    const wez = entry('wezterm');
    const api = await mapEntry('wezterm');
    check(api && api.requires_opt_in && !api.consent_granted_at && api.running, `wezterm in the API: ${JSON.stringify(api)}`);
    const consent = wez.locator('[data-testid="consent"]');
    check((await consent.getAttribute('data-granted')) === 'false', 'consent is shown not granted');
    check((await wez.locator('form').count()) === 0, 'no spawn form until consent is granted');
    await within(wez, 'Grant consent').click();
    const granted = await until('consent_granted_at in the API', async () => (await mapEntry('wezterm')).consent_granted_at);
    await until('the page to show it granted', async () => (await consent.getAttribute('data-granted')) === 'true');
    check(((await consent.textContent()) ?? '').includes('Consent granted'), 'it says so');
    await until('the spawn form offered', async () => (await wez.locator('form').count()) === 1);
    t.report.info.consent_granted_at = granted;
    await within(wez, 'Revoke consent').click();
    await until('consent_granted_at cleared in the API', async () => !(await mapEntry('wezterm')).consent_granted_at);
    await until('the page to show it not granted', async () => (await consent.getAttribute('data-granted')) === 'false');
    await until('the spawn form gone', async () => (await wez.locator('form').count()) === 0);
    check(await within(wez, 'Grant consent').isVisible(), 'Grant is offered again');
  });

  let tmuxBinding;
  await t.step('Start in tmux from the form: held under plan-only, waiting for approval; approved, it is bound', async () => {
    const tmux = entry('tmux');
    await tmux.getByText('Start in tmux', { exact: true }).click();
    await tmux.getByLabel('Command', { exact: true }).fill('bash --norc --noprofile');
    const options = await tmux.getByLabel('Placement', { exact: true }).evaluate((s) => [...s.options].map((o) => o.value));
    check(JSON.stringify(options) === '["window","tab","split"]', `tmux's placements: ${JSON.stringify(options)}`);
    await tmux.getByLabel('Placement', { exact: true }).selectOption('window');
    await within(tmux, 'Start').click();
    const waiting = page.locator('[data-testid="waiting-spawns"] [data-testid="waiting-approval"]');
    await until('"waiting for approval" on the page', async () =>
      ((await waiting.first().textContent({ timeout: 1000 })) ?? '').toLowerCase().includes('waiting for approval'));
    // The list can show the held spawn (from its event) before the POST's
    // answer reaches the form: the form's own line follows.
    await until('the form to say it waits', async () =>
      ((await tmux.locator('.note').textContent({ timeout: 1000 })) ?? '').toLowerCase().includes('waiting for approval'));
    check((await bindings()).filter((b) => b.terminal === 'tmux').length === 0, 'nothing started before the decision');
    const pending = (await t.apiOk('GET', '/api/v1/approvals?status=pending')).approvals;
    check(pending.length === 1 && pending[0].action.kind === 'terminal' && pending[0].action.action === 'spawn', `pending: ${JSON.stringify(pending)}`);
    await t.screenshot('terminals-waiting.png');
    await approveInDialog('Approval requested: start in a terminal', 'bash --norc --noprofile');
    tmuxBinding = await until('a tmux binding in the API', async () => (await bindings()).find((b) => b.terminal === 'tmux' && b.state === 'open'));
    t.report.info.tmux_binding = tmuxBinding;
    check(JSON.stringify(tmuxBinding.command) === '["bash","--norc","--noprofile"]', `its command: ${JSON.stringify(tmuxBinding.command)}`);
    const card = bindingCard(tmuxBinding.binding_id);
    await card.waitFor({ timeout: WAIT_MS });
    check((await card.locator('[data-testid="ipc-endpoint"]').textContent()) === tmuxBinding.ipc_endpoint, 'its ipc_endpoint is shown');
    check(((await card.locator('[data-testid="binding-state"]').textContent()) ?? '').trim() === 'open', 'it is open');
    check(((await card.locator('.meta').textContent()) ?? '').includes(tmuxBinding.cwd), 'its cwd is shown');
    await until('the waiting item gone', async () => (await waiting.count()) === 0);
  });

  await t.step('Send `echo hi-from-phone` with Enter: held, approved; Read shows hi-from-phone', async () => {
    const card = bindingCard(tmuxBinding.binding_id);
    for (const name of ['Focus', 'Read', 'Close', 'Send']) check(await within(card, name).isVisible(), `tmux's binding offers ${name}`);
    await card.getByLabel('Text to send', { exact: true }).fill('echo hi-from-phone');
    await card.getByLabel('Enter', { exact: true }).check();
    // tmux pastes bracketed (paste-buffer -p): offered.
    check(await card.getByLabel('Paste', { exact: true }).isVisible(), 'Paste is offered where bracketed_paste is');
    await within(card, 'Send').click();
    await until('the card to say it waits for approval', async () =>
      ((await card.locator('.note').textContent()) ?? '').toLowerCase().includes('waiting for approval'));
    check((await card.getByLabel('Text to send', { exact: true }).inputValue()) === '', 'the text box is emptied once sent');
    check(!(await card.getByLabel('Enter', { exact: true }).isChecked()), 'Enter is unticked once sent');
    await approveInDialog('Approval requested: send to a terminal', 'echo hi-from-phone');
    await until('the waiting item under the binding gone', async () => (await card.locator('[data-testid="waiting-approval"]').count()) === 0);
    const pre = card.locator('[data-testid="read-text"]');
    const text = await until('Read to show the output line hi-from-phone', async () => {
      await within(card, 'Read').click();
      await until('the text read back', async () => await pre.isVisible(), 5000);
      const shown = (await pre.textContent()) ?? '';
      return shown.split('\n').some((l) => l.trim() === 'hi-from-phone') && shown;
    }, 20_000, 500);
    t.report.info.read_back = text;
    await card.scrollIntoViewIfNeeded();
    await t.screenshot('terminals-binding.png');
  });

  await t.step('what is read back is text, never HTML', async () => {
    const card = bindingCard(tmuxBinding.binding_id);
    // Typing without Enter runs nothing: not held under plan-only.
    await card.getByLabel('Text to send', { exact: true }).fill('<i id="not-html">x</i>');
    await within(card, 'Send').click();
    await until('"Sent."', async () => (t.report.info.note = (await card.locator('.note').textContent()) ?? '') === 'Sent.');
    const pre = card.locator('[data-testid="read-text"]');
    await until('Read to show the typed markup', async () => {
      await within(card, 'Read').click();
      return ((await pre.textContent()) ?? '').includes('<i id="not-html">x</i>');
    }, 20_000, 500);
    check((await pre.evaluate((p) => p.children.length)) === 0 && (await page.locator('#not-html').count()) === 0, 'the text became markup');
  });

  await t.step('Focus records a termbridge:action focus', async () => {
    const card = bindingCard(tmuxBinding.binding_id);
    await within(card, 'Focus').click();
    await until('"Focused."', async () => ((await card.locator('.note').textContent()) ?? '') === 'Focused.');
    const action = await until('a termbridge:action focus in GET /api/v1/events', async () =>
      (await allEvents()).find((e) => e.type === 'termbridge:action' && e.data.action === 'focus' && e.data.binding_id === tmuxBinding.binding_id));
    t.report.info.focus_action = action.data;
  });

  await t.step('only what a terminal can do is offered (Alacritty: Close only; pty: no Focus)', async () => {
    const ala = await t.apiOk('POST', '/api/v1/terminals/bindings', { terminal: 'alacritty', placement: 'window' }, 201);
    const pty = await t.apiOk('POST', '/api/v1/terminals/bindings', { terminal: 'pty' }, 201);
    const aCard = bindingCard(ala.binding.binding_id);
    const pCard = bindingCard(pty.binding.binding_id);
    await aCard.waitFor({ timeout: WAIT_MS });
    await pCard.waitFor({ timeout: WAIT_MS });
    const offered = async (card) =>
      card.locator('button:visible, input:visible').evaluateAll((els) => els.map((e) => (e.tagName === 'INPUT' ? 'input:' + e.id.split('-').pop() : e.textContent.trim())));
    const a = await offered(aCard);
    const p = await offered(pCard);
    t.report.info.offered = { alacritty: a, pty: p };
    check(JSON.stringify(a) === '["Close"]', `Alacritty (no focus, send_text, read_text) offers ${JSON.stringify(a)}`);
    check(!p.includes('Focus') && p.includes('Read') && p.includes('Send') && p.includes('Close'), `pty (focus: false) offers ${JSON.stringify(p)}`);
    const placements = await entry('alacritty').getByLabel('Placement', { exact: true }).evaluate((s) => [...s.options].map((o) => o.value));
    check(!placements.includes('split'), `Alacritty (split: false) offers ${JSON.stringify(placements)}`);
    // Closing is not something Alacritty's IPC can do: the 501 is shown.
    await within(aCard, 'Close').click();
    await until('the error shown', async () => {
      const n = aCard.locator('.note');
      return (await n.getAttribute('class')).includes('error') && ((await n.textContent()) ?? '').startsWith('Could not close it: ');
    });
    t.report.info.alacritty_close = await aCard.locator('.note').textContent();
    check((await t.apiOk('GET', `/api/v1/terminals/bindings/${ala.binding.binding_id}`)).state === 'open', 'still open');
    await t.apiOk('DELETE', `/api/v1/terminals/bindings/${pty.binding.binding_id}`);
    await until('the closed pty gone from the list', async () => (await pCard.count()) === 0);
  });

  await t.step('Close takes the tmux binding off the list', async () => {
    const card = bindingCard(tmuxBinding.binding_id);
    await within(card, 'Close').click();
    await until('the card gone', async () => (await card.count()) === 0);
    const b = await t.apiOk('GET', `/api/v1/terminals/bindings/${tmuxBinding.binding_id}`);
    check(b.state === 'closed', `the binding: ${JSON.stringify(b)}`);
  });

  await t.step('a pane killed by hand: its binding is marked lost, with the reason', async () => {
    check(TMUX_SOCKET, 'BOSUN_TEST_TMUX_SOCKET is not set');
    // No command: the shell starts unasked, even under plan-only.
    const spawned = await t.apiOk('POST', '/api/v1/terminals/bindings', { terminal: 'tmux' }, 201);
    const b = spawned.binding;
    const card = bindingCard(b.binding_id);
    await card.waitFor({ timeout: WAIT_MS });
    const pane = b.ipc_endpoint.split('/').pop();
    execFileSync('tmux', ['-L', TMUX_SOCKET, 'kill-pane', '-t', pane]);
    const lost = await until('the binding lost in the API', async () => {
      const now = await t.apiOk('GET', `/api/v1/terminals/bindings/${b.binding_id}`);
      return now.state === 'lost' && now;
    });
    await until('the card marked lost with its reason', async () => {
      const text = ((await card.locator('[data-testid="binding-state"]').textContent()) ?? '').trim();
      return (await card.getAttribute('data-state')) === 'lost' && text === `lost: ${lost.reason}`;
    });
    check((await card.getByRole('button').count()) === 0, 'a lost binding offers no action');
  });

  await t.step('"Discover again" reads the map again', async () => {
    const before = (await mapEntry('tmux')).discovered_at;
    await t.button('Discover again').click();
    await until('the button back', async () => !(await t.button('Discover again').isDisabled()));
    check(((await page.locator('#bridge-error').textContent()) ?? '') === '', 'no error');
    check((await entry('tmux').locator('[data-testid="presence"]').textContent()) === 'running', 'tmux still running');
    t.report.info.discovered = { before, after: (await mapEntry('tmux')).discovered_at };
  });

  await t.step('no CSP violation, no page error', async () => {
    const violations = await page.evaluate(() => window.__cspViolations);
    check(violations.length === 0, `CSP violations: ${JSON.stringify(violations)}`);
    const errors = t.report.console.filter((c) => c.startsWith('pageerror'));
    check(errors.length === 0, `page errors: ${JSON.stringify(errors)}`);
  });
});
