// The Terminal tab of a session, at phone size: "New terminal" starts a
// shell shown in xterm.js; the key row sends Tab (bash completes `ech`), the
// arrows (history, the cursor), Esc and a sticky Ctrl as the right bytes; a
// change of viewport sends a RESIZE frame; a 40 KB paste goes in INPUT
// frames of at most 16 KiB and `wc -c` counts every byte; `exit 3` shows
// "exited 3"; Close closes one. Then a terminal printing 1500 numbered lines
// slowly, with a dropped socket, offline/online and a reload mid-stream:
// what xterm rendered (read back
// from its rows, paging through its scrollback) is every line once, in
// order; each socket resumed from the offset the page had rendered (`?from=`),
// and the app acknowledged up to the end. No CSP violation throughout.
import { run, check, until, sleep, WAIT_MS } from './lib.mjs';
import { tmpdir } from 'node:os';

const LINES = 1500;

/// Records Content-Security-Policy violations from before the app runs.
function watchCsp() {
  window.__cspViolations = [];
  document.addEventListener('securitypolicyviolation', (e) => {
    window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI} ${e.sample || ''}`);
  });
}

run('terminal', async (t) => {
  await t.context.addInitScript(watchCsp);
  const session = await t.apiOk('POST', '/api/v1/sessions', { provider: 'demo', cwd: tmpdir(), title: 'Terminal test', policy: 'plan-only' }, 201);
  t.report.info.session = session.id;
  const term = () => t.page.locator('[data-testid="terminal"]');
  const state = () => t.page.locator('[data-testid="terminal-state"]');
  const stateText = async () => ((await state().textContent({ timeout: 2000 })) ?? '').trim();
  /// The rows xterm shows now, as text.
  const rows = async () => {
    const r = await t.page.evaluate(() =>
      [...document.querySelectorAll('[data-testid="terminal"] .xterm-rows > div')].map((d) => d.textContent.replace(/\u00a0/g, ' ').trimEnd()),
    );
    t.report.info.last_rows = r; // what the screen showed last, for a failure's report
    return r;
  };
  const focus = () => term().locator('textarea').first().focus();
  /// The frames of one type the app sent on the terminal sockets of this page load.
  const sent = async (type) => (await t.terminalSockets()).flatMap((s) => s.sent.filter((f) => f.type === type));
  const inputs = async () => (await sent(0x10)).map((f) => f.hex);

  await t.step('open the session and its Terminal tab', async () => {
    await t.page.goto(t.url + '/');
    await t.waitLive();
    await t.page.getByRole('link', { name: 'Terminal test' }).first().click({ timeout: WAIT_MS });
    await t.page.getByRole('link', { name: 'Terminal', exact: true }).click({ timeout: WAIT_MS });
    await t.button('New terminal').waitFor({ timeout: WAIT_MS });
    check(await t.page.getByText('No terminals in this session yet.').isVisible(), 'the empty list says so');
  });

  let shell;
  await t.step('"New terminal" starts a shell in the session, shown in xterm.js', async () => {
    await t.button('New terminal').click();
    shell = await until('the hash to name the new terminal', async () => (t.page.url().match(/\/t\/(b_[0-9a-f]+)$/) || [])[1]);
    t.report.info.shell = shell;
    const b = await t.apiOk('GET', `/api/v1/terminals/bindings/${shell}`);
    check(b.session_id === session.id && b.terminal === 'pty' && b.command.length === 0, `the binding: ${JSON.stringify(b)}`);
    await until('the state "open"', async () => (await stateText()) === 'open');
    await until('a shell prompt', async () => (await rows()).some((r) => /[#$] ?$/.test(r)));
    const box = await term().boundingBox();
    const vp = t.page.viewportSize();
    check(box && box.width <= vp.width && box.y + box.height <= vp.height, `the terminal fits the viewport: ${JSON.stringify(box)} in ${JSON.stringify(vp)}`);
    const keys = await t.page.getByRole('toolbar', { name: 'Terminal keys' }).boundingBox();
    check(keys && keys.y + keys.height <= vp.height + 1, `the key row is on screen: ${JSON.stringify(keys)}`);
    const first = (await t.terminalSockets())[0];
    check(first && /\/ws\/terminal\/b_[0-9a-f]+\?from=0$/.test(first.url), `the socket: ${first && first.url}`);
    check((await sent(0x11)).length > 0, 'the app sent its size (RESIZE) when the socket opened');
  });

  await t.step('Tab on the key row completes `ech` (INPUT 09)', async () => {
    await focus();
    await t.page.keyboard.type('ech');
    await t.button('Tab').click();
    await until('bash to complete "echo"', async () => (await rows()).some((r) => /\becho$/.test(r)));
    // bash completes the command with a space after it.
    await t.page.keyboard.type('tab-completed');
    await t.page.keyboard.press('Enter');
    await until('the output "tab-completed"', async () => (await rows()).filter((r) => r === 'tab-completed').length === 1);
    check((await inputs()).includes('09'), `no INPUT frame with a Tab: ${JSON.stringify(await inputs())}`);
  });

  await t.step('Up arrow recalls the last command (ESC [ A or ESC O A)', async () => {
    await t.button('Up arrow').click();
    await until('the recalled command', async () => (await rows()).filter((r) => /echo tab-completed$/.test(r)).length === 2);
    await t.page.keyboard.press('Enter');
    await until('the output twice', async () => (await rows()).filter((r) => r === 'tab-completed').length === 2);
    const ins = await inputs();
    check(ins.includes('1b5b41') || ins.includes('1b4f41'), `no Up arrow sent: ${JSON.stringify(ins)}`);
  });

  await t.step('Left arrow moves the cursor (ESC [ D or ESC O D)', async () => {
    await focus();
    await t.page.keyboard.type('echo ab');
    await t.button('Left arrow').click();
    await t.page.keyboard.type('X');
    await t.page.keyboard.press('Enter');
    await until('the output "aXb"', async () => (await rows()).includes('aXb'));
    const ins = await inputs();
    check(ins.includes('1b5b44') || ins.includes('1b4f44'), `no Left arrow sent: ${JSON.stringify(ins)}`);
  });

  await t.step('Esc sends ESC; Ctrl is sticky for the next key (Ctrl, c → 03)', async () => {
    const before = (await inputs()).length;
    await t.button('Escape').click();
    await until('an INPUT 1b', async () => (await inputs()).slice(before).includes('1b'));
    const ctrl = t.button('Control');
    await focus();
    await t.page.keyboard.type('sleep 30');
    await t.page.keyboard.press('Enter');
    await sleep(300);
    await ctrl.click();
    check((await ctrl.getAttribute('aria-pressed')) === 'true', 'Ctrl is shown pressed');
    await focus();
    await t.page.keyboard.type('c');
    await until('INPUT 03 (Ctrl-C)', async () => (await inputs()).slice(before).includes('03'));
    check((await ctrl.getAttribute('aria-pressed')) === 'false', 'Ctrl is released after one key');
    await until('the prompt back after ^C', async () => {
      const r = (await rows()).filter((x) => x);
      return r.some((x) => x.includes('^C')) && /[#$] ?$/.test(r[r.length - 1] || '');
    });
    // Only the key right after Ctrl is changed.
    await t.page.keyboard.type('echo after-ctrl');
    await t.page.keyboard.press('Enter');
    await until('the output "after-ctrl"', async () => (await rows()).includes('after-ctrl'));
  });

  await t.step('a RESIZE frame when the viewport changes', async () => {
    const before = await sent(0x11);
    const last = before[before.length - 1].hex;
    await t.page.setViewportSize({ width: 844, height: 390 });
    const resized = await until('a RESIZE frame with another size', async () => {
      const frames = await sent(0x11);
      const f = frames[frames.length - 1];
      return frames.length > before.length && f.hex !== last && f;
    });
    const cols = parseInt(resized.hex.slice(0, 4), 16);
    const rowsN = parseInt(resized.hex.slice(4, 8), 16);
    check(cols > parseInt(last.slice(0, 4), 16), `landscape has more columns: ${cols} after ${parseInt(last.slice(0, 4), 16)}`);
    await until('the daemon to record the size', async () => {
      const b = await t.apiOk('GET', `/api/v1/terminals/bindings/${shell}`);
      return b.size && b.size.cols === cols && b.size.rows === rowsN;
    });
    await t.page.setViewportSize({ width: 390, height: 844 });
    await until('a RESIZE back to the phone', async () => {
      const frames = await sent(0x11);
      return frames[frames.length - 1].hex === last;
    });
  });

  await t.step('a 40 KB paste goes in INPUT frames of at most 16 KiB, every byte', async () => {
    await focus();
    await t.page.keyboard.type('wc -c');
    await t.page.keyboard.press('Enter');
    await sleep(300);
    const before = (await inputs()).length;
    const text = ('x'.repeat(99) + '\n').repeat(400);
    await t.page.evaluate((data) => {
      const area = document.querySelector('[data-testid="terminal"] textarea');
      const clip = new DataTransfer();
      clip.setData('text/plain', data);
      area.dispatchEvent(new ClipboardEvent('paste', { clipboardData: clip, bubbles: true, cancelable: true }));
    }, text);
    await until('the paste sent', async () => (await inputs()).slice(before).reduce((n, h) => n + h.length / 2, 0) >= text.length);
    const sizes = (await inputs()).slice(before).map((h) => h.length / 2);
    t.report.info.paste_frames = sizes;
    check(sizes.length >= 3 && Math.max(...sizes) <= 16 * 1024, `INPUT frames of ${JSON.stringify(sizes)} bytes`);
    // The text, inside bracketed-paste marks (ESC [200~ … ESC [201~) when the shell asked for them.
    const total = sizes.reduce((a, b) => a + b, 0);
    check(total === text.length || total === text.length + 12, `the frames carry ${total} bytes for ${text.length}`);
    await t.page.keyboard.press('Control+d');
    await until(`wc to count the ${total} bytes sent`, async () => (await rows()).includes(String(total)), 30_000);
  });

  await t.step('a clipboard write to the terminal (OSC 52 in a CLIPBOARD frame) lands on the browser clipboard', async () => {
    await t.context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: t.url });
    await focus();
    const text = 'from the daemon ✓\nsecond line';
    const done = await t.apiOk('POST', '/api/v1/terminals/clipboard', { text, binding_id: shell });
    check(done.via === 'osc52' && done.screens >= 1, `the write: ${JSON.stringify(done)}`);
    const note = t.page.locator('[data-testid="terminal-clipboard"]');
    await until('the page to say it copied', async () => (await note.getAttribute('data-state').catch(() => null)) === 'copied');
    const got = await t.page.evaluate(() => navigator.clipboard.readText());
    check(got === text, `the clipboard holds ${JSON.stringify(got)}`);
    const clip = (await t.terminalSockets()).flatMap((s) => s.got.filter((f) => f.type === 0x04));
    check(clip.length >= 1, 'a CLIPBOARD frame came');
    const echoed = (await rows()).join('\n');
    check(!echoed.includes('52;c;'), 'the sequence never reached the screen');
  });

  await t.step('`exit 3`: the state says "exited 3"', async () => {
    await focus();
    await t.page.keyboard.type('exit 3');
    await t.page.keyboard.press('Enter');
    await until('the state "exited 3"', async () => (await stateText()) === 'exited 3');
    const b = await t.apiOk('GET', `/api/v1/terminals/bindings/${shell}`);
    check(b.state === 'exited' && b.exit && b.exit.code === 3, `the binding: ${JSON.stringify(b)}`);
    const exit = (await t.terminalSockets()).flatMap((s) => s.got).find((f) => f.type === 0x03);
    check(exit && exit.json.exit.code === 3, `an EXIT frame: ${JSON.stringify(exit)}`);
    check(await t.button('Close').isDisabled(), 'Close is disabled once it has ended');
  });

  await t.step('Close hangs up a running terminal', async () => {
    await t.page.getByRole('link', { name: 'Terminal', exact: true }).click();
    await t.button('New terminal').click();
    const id = await until('a second terminal', async () => {
      const m = t.page.url().match(/\/t\/(b_[0-9a-f]+)$/);
      return m && m[1] !== shell && m[1];
    });
    await until('it is open', async () => (await stateText()) === 'open');
    await t.button('Close').click();
    await until('the state "closed"', async () => (await stateText()).startsWith('closed'));
    const b = await t.apiOk('GET', `/api/v1/terminals/bindings/${id}`);
    check(b.state === 'closed', `the binding: ${JSON.stringify(b)}`);
  });

  let slow;
  await t.step('a terminal printing numbered lines slowly, opened from the list', async () => {
    const script = `i=1; while [ $i -le ${LINES} ]; do echo "line $i"; i=$((i+1)); sleep 0.004; done`;
    // A command in a plan-only session waits for a person: approved here
    // through the approvals API, it starts.
    const held = await t.apiOk('POST', '/api/v1/terminals/bindings', { terminal: 'pty', session_id: session.id, command: ['sh', '-c', script], cols: 40, rows: 20 }, 202);
    check(held.outcome === 'awaiting_approval' && held.approval.action.kind === 'terminal', `held: ${JSON.stringify(held)}`);
    await t.apiOk('POST', `/api/v1/approvals/${held.approval.id}`, { decision: 'accept' });
    slow = await until('the approved terminal', async () => {
      const list = await t.apiOk('GET', `/api/v1/terminals/bindings?session_id=${session.id}`);
      return list.bindings.find((b) => b.command.length > 0);
    });
    t.report.info.slow = slow.binding_id;
    await t.page.getByRole('link', { name: 'Terminal', exact: true }).click();
    const link = t.page.locator(`li[data-binding="${slow.binding_id}"] a`);
    await until('the terminal in the list, by its event', async () => (await link.count()) === 1);
    await link.click();
    await until('line 100 on screen', async () => (await rows()).some((r) => /^line (\d+)$/.test(r) && Number(r.slice(5)) >= 100));
  });

  await t.step('a dropped socket resumes from the offset rendered', async () => {
    await t.dropConnection();
    await until('a second terminal socket', async () => (await t.terminalSockets()).filter((s) => s.url.includes(slow.binding_id)).length === 2);
    const [a, b] = (await t.terminalSockets()).filter((s) => s.url.includes(slow.binding_id));
    const got = a.got.filter((f) => f.type === 1);
    const end = got.length ? got[got.length - 1].offset + got[got.length - 1].len : 0;
    const from = Number(new URL(b.url).searchParams.get('from'));
    check(from === end && from > 0, `the second socket resumes from ${from}; the first one's bytes ended at ${end}`);
  });

  await t.step('offline, then online: the socket comes back within 5 s, from the offset rendered', async () => {
    const mine = async () => (await t.terminalSockets()).filter((s) => s.url.includes(slow.binding_id));
    const n = (await mine()).length;
    await t.context.setOffline(true);
    await t.dropConnection(); // Chromium's offline emulation leaves open sockets open
    await sleep(1500);
    await t.context.setOffline(false);
    const back = await until('a socket that opens after "online"', async () => {
      const all = await mine();
      const s = all.slice(n).find((x) => x.got.length > 0);
      return s && { s, before: all[all.indexOf(s) - 1] };
    }, 5000);
    const got = back.before.got.filter((f) => f.type === 1);
    const end = got.length ? got[got.length - 1].offset + got[got.length - 1].len : Number(new URL(back.before.url).searchParams.get('from'));
    const from = Number(new URL(back.s.url).searchParams.get('from'));
    check(from === end, `after "online" the socket resumes from ${from}; the bytes before ended at ${end}`);
  });

  let savedFrom;
  await t.step('reload mid-stream', async () => {
    await until('line 400 on screen', async () => (await rows()).some((r) => /^line (\d+)$/.test(r) && Number(r.slice(5)) >= 400));
    await t.page.reload();
    const b = await t.apiOk('GET', `/api/v1/terminals/bindings/${slow.binding_id}`);
    check(b.state === 'open', 'the terminal had ended before the reload: this checks nothing mid-stream');
    const socket = await until('a terminal socket after the reload', async () => (await t.terminalSockets())[0]);
    savedFrom = Number(new URL(socket.url).searchParams.get('from'));
    check(savedFrom > 0, `after the reload the socket resumes from ${socket.url}, not from 0`);
    t.report.info.resumed_from = savedFrom;
  });

  await t.step('the rest comes once, from that offset, and the exit shows', async () => {
    await until('the state "exited 0"', async () => (await stateText()) === 'exited 0', 60_000);
    const [s] = await t.terminalSockets();
    const hello = s.got[0];
    check(hello.type === 2 && hello.json.from === savedFrom, `HELLO from ${JSON.stringify(hello)}`);
    const out = s.got.filter((f) => f.type === 1);
    check(out.length > 0 && out[0].offset === savedFrom, `the first OUTPUT after the reload starts at ${out[0] && out[0].offset}`);
    for (let i = 1; i < out.length; i++) check(out[i].offset === out[i - 1].offset + out[i - 1].len, `OUTPUT ${i} is not contiguous`);
    const exit = s.got.find((f) => f.type === 3);
    const end = out[out.length - 1].offset + out[out.length - 1].len;
    check(exit && exit.json.end === end, `EXIT end ${exit && exit.json.end}, bytes to ${end}`);
    await until('an ACK of the end (after xterm rendered it)', async () => {
      const acks = (await sent(0x12)).map((f) => parseInt(f.hex, 16));
      return acks.length && acks[acks.length - 1] === end;
    }, 5000).catch(async () => {
      // The socket closes right after EXIT: an ACK may not make it. Then at least the ones before it.
      const acks = (await sent(0x12)).map((f) => parseInt(f.hex, 16));
      check(acks.length > 0 && acks.every((a, i) => i === 0 || a > acks[i - 1]), `ACKs: ${JSON.stringify(acks)}`);
    });
  });

  await t.step('xterm rendered every line once, in order', async () => {
    await focus();
    // Up to the top of the scrollback, a page at a time.
    let top = null;
    for (let i = 0; i < 400; i++) {
      await t.page.keyboard.press('Shift+PageUp');
      await sleep(30);
      const r = (await rows())[0];
      if (r === top) break;
      top = r;
    }
    const pages = [];
    let last = null;
    for (let i = 0; i < 400; i++) {
      const r = await rows();
      const text = r.join('\n');
      if (text === last) break;
      pages.push(r);
      last = text;
      await t.page.keyboard.press('Shift+PageDown');
      await sleep(30);
    }
    const seen = new Set();
    let prevPageLast = null;
    for (const [p, page] of pages.entries()) {
      const nums = [];
      for (const r of page) {
        if (r === '') continue;
        const m = r.match(/^line (\d+)$/);
        check(m, `page ${p}: a row that is not a line: ${JSON.stringify(r)} in ${JSON.stringify(page)}`);
        nums.push(Number(m[1]));
      }
      for (let i = 1; i < nums.length; i++) {
        check(nums[i] === nums[i - 1] + 1, `page ${p}: line ${nums[i]} after line ${nums[i - 1]}: ${JSON.stringify(page)}`);
      }
      // Pages overlap, so every pair of neighbouring lines was on one of them.
      if (prevPageLast !== null && nums.length) check(nums[0] <= prevPageLast, `page ${p} starts at ${nums[0]} after ${prevPageLast}: a pair unseen`);
      if (nums.length) prevPageLast = nums[nums.length - 1];
      for (const n of nums) seen.add(n);
    }
    t.report.info.pages_read = pages.length;
    check(pages.length > 5, `only ${pages.length} pages of scrollback read`);
    check(pages[0].find((r) => r) === 'line 1', `the scrollback starts with ${JSON.stringify(pages[0].find((r) => r))}`);
    check(seen.size === LINES && Math.max(...seen) === LINES, `${seen.size} distinct lines rendered, the last ${Math.max(...seen)}`);
  });

  await t.step('no Content-Security-Policy violation', async () => {
    const v = await t.page.evaluate(() => window.__cspViolations);
    check(v.length === 0, `CSP violations: ${JSON.stringify(v)}`);
    const csp = t.report.console.filter((c) => /Content Security Policy/i.test(c));
    check(csp.length === 0, `CSP errors on the console: ${JSON.stringify(csp)}`);
    await t.screenshot('terminal.png');
  });
});
