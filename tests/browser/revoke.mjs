// Scenario 6: with `[auth] require = "always"`, a paired page whose device is
// revoked (`bosun devices revoke`) while its WebSocket is open shows "Pair this
// device" within seconds (the daemon's `unauthorized` frame and 4401 close),
// not at the app's 30 s check, and forgets the dead token.
// A second code then pairs it again and it goes live.
// tests/pwa.rs gives BOSUN_PAIRING_CODE(_AGAIN), BOSUN_BIN and BOSUN_DATA_DIR.
import { run, check, until } from './lib.mjs';
import { execFileSync } from 'node:child_process';

const code = process.env.BOSUN_PAIRING_CODE;
const again = process.env.BOSUN_PAIRING_CODE_AGAIN;
const bin = process.env.BOSUN_BIN;
const dataDir = process.env.BOSUN_DATA_DIR;

run('revoke', async (t) => {
  check(code && bin && dataDir, 'BOSUN_PAIRING_CODE, BOSUN_BIN and BOSUN_DATA_DIR must be set');
  const bosun = (...args) => execFileSync(bin, [...args, '--data-dir', dataDir, '--server', t.url], { encoding: 'utf8' });
  await t.step('pair the page and go live', async () => {
    await t.page.goto(t.url + '/');
    await t.page.getByLabel('Pairing code', { exact: true }).first().fill(code, { timeout: 20000 });
    await t.button('Pair').click({ timeout: 20000 });
    await t.button('New session').waitFor({ timeout: 20000 });
    await t.waitLive();
  });
  let device;
  await t.step('`bosun devices ls --json` lists the page', async () => {
    const { devices } = JSON.parse(bosun('devices', 'ls', '--json'));
    t.report.info.devices = devices;
    check(devices.length === 1, `wanted the one paired device, got ${JSON.stringify(devices)}`);
    device = devices[0].id;
  });
  await t.step('`bosun devices revoke` shows "Pair this device" within 5 s', async () => {
    const started = Date.now();
    bosun('devices', 'revoke', device);
    await until('the heading "Pair this device"', async () =>
      t.page.getByRole('heading', { name: 'Pair this device' }).first().isVisible(), 5000, 50);
    t.report.info.pairing_after_ms = Date.now() - started;
    await until('bosun.token to leave localStorage', async () =>
      !(await t.page.evaluate(() => localStorage.getItem('bosun.token'))), 2000, 50);
    const text = await t.connectionText();
    check(!text.includes('live'), `the indicator still says ${JSON.stringify(text)} after the revocation`);
  });
  if (again) {
    await t.step('a new code pairs the page again and it goes live', async () => {
      await t.page.getByLabel('Pairing code', { exact: true }).first().fill(again);
      await t.button('Pair').click({ timeout: 20000 });
      await t.button('New session').waitFor({ timeout: 20000 });
      await t.waitLive();
      check(await t.page.evaluate(() => localStorage.getItem('bosun.token')), 'no bosun.token after pairing again');
    });
  }
});
