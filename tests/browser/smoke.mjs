// Smoke: the app loads at `/` in a phone-sized Chromium, links its manifest
// and registers its service worker.
import { run, check, until } from './lib.mjs';

run('smoke', async (t) => {
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
  await t.step('window.bosun is exposed', async () => {
    const shape = await until('window.bosun', () =>
      t.page.evaluate(() => window.bosun && { lastSeq: typeof window.bosun.lastSeq, drop: typeof window.bosun.dropConnection }));
    check(shape.lastSeq === 'number', `window.bosun.lastSeq is a ${shape.lastSeq}`);
    check(shape.drop === 'function', `window.bosun.dropConnection is a ${shape.drop}`);
  });
});
