// Smoke: the app loads at `/` in a phone-sized Chromium, links its manifest,
// registers its service worker, loads its ES modules (which the service
// worker keeps for offline use) and connects; the page carries no test hook.
import { run, check, until } from './lib.mjs';

run('smoke', async (t) => {
  const scripts = new Map();
  t.page.on('response', (resp) => {
    const url = new URL(resp.url());
    if (url.origin === new URL(t.url).origin && url.pathname.endsWith('.js') && url.pathname !== '/sw.js') {
      scripts.set(url.pathname, { status: resp.status(), type: resp.headers()['content-type'] ?? '' });
    }
  });
  await t.step('open /', async () => {
    const resp = await t.page.goto(t.url + '/', { waitUntil: 'load' });
    check(resp && resp.status() === 200, `GET / answered ${resp && resp.status()}`);
    t.report.info.title = await t.page.title();
  });
  await t.step('screenshot', async () => t.screenshot('smoke.png'));
  await t.step('manifest is linked and served', async () => {
    const href = await t.page.evaluate(() => document.querySelector('link[rel="manifest"]')?.href ?? null);
    check(href, 'no <link rel="manifest"> in the page');
    const resp = await fetch(href);
    check(resp.status === 200, `${href} answered ${resp.status}`);
    const manifest = JSON.parse(await resp.text());
    check(manifest.name || manifest.short_name, `the manifest has no name: ${JSON.stringify(manifest)}`);
    t.report.info.manifest = { href, name: manifest.name, start_url: manifest.start_url, display: manifest.display };
  });
  await t.step('service worker registers', async () => {
    const scope = await t.page.evaluate(() =>
      Promise.race([
        navigator.serviceWorker.ready.then((r) => r.active?.scriptURL ?? r.scope),
        new Promise((r) => setTimeout(() => r(null), 15000)),
      ]));
    check(scope, 'navigator.serviceWorker.ready did not resolve within 15 s');
    t.report.info.service_worker = scope;
  });
  await t.step('the app connects (indicator "live")', async () => t.waitLive());
  await t.step('the app runs as ES modules from /main.js', async () => {
    const module = await t.page.evaluate(() => document.querySelector('script[type="module"]')?.getAttribute('src') ?? null);
    check(module === '/main.js', `the page's module script is ${JSON.stringify(module)}`);
    t.report.info.modules = Object.fromEntries(scripts);
    check(scripts.has('/main.js'), `/main.js was not loaded: ${JSON.stringify([...scripts.keys()])}`);
    check(scripts.size >= 7, `only ${scripts.size} modules were loaded: ${JSON.stringify([...scripts.keys()])}`);
    for (const [path, { status, type }] of scripts) {
      check(status === 200 && type.startsWith('text/javascript'), `${path} answered ${status} (${type})`);
    }
    const errors = t.report.console.filter((line) => line.startsWith('pageerror') || line.startsWith('error'));
    check(errors.length === 0, `the page reported errors: ${JSON.stringify(errors)}`);
  });
  await t.step('the service worker keeps every module for offline use', async () => {
    const missing = await t.page.evaluate(async (paths) => {
      const out = [];
      for (const p of paths) if (!(await caches.match(p))) out.push(p);
      return out;
    }, [...scripts.keys()]);
    check(missing.length === 0, `not in the service worker's cache: ${JSON.stringify(missing)}`);
  });
  await t.step('offline, a reload still runs the app from the cache', async () => {
    await t.context.setOffline(true);
    try {
      await t.page.reload({ waitUntil: 'load' });
      const text = await until('the app to say it cannot reach the daemon', async () => {
        const shown = (await t.page.locator('#no-sessions').textContent({ timeout: 1000 })) ?? '';
        return shown.includes('Cannot reach the daemon') && shown;
      });
      t.report.info.offline_text = text;
    } finally {
      await t.context.setOffline(false);
    }
    await t.waitLive('the indicator to say "live" once the network is back');
  });
  await t.step('no test hook in the page', async () => {
    const hooks = await t.page.evaluate(() => ['bosun', '__bosunStates', '__wsAttempts', '__wsBlocked'].filter((k) => k in window));
    check(hooks.length === 0, `the app exposes ${JSON.stringify(hooks)} on window`);
  });
});
