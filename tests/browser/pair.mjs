// Scenario 4: with `[auth] require = "always"` the app asks an unpaired
// browser to pair; a code from `bosun pair` typed in "Pairing code" + "Pair"
// gives the session list. A second code, given as the pairing URL
// `<base>/#pair=CODE`, pairs a fresh browser with no typing.
// Codes come from tests/pwa.rs in BOSUN_PAIRING_CODE and BOSUN_PAIRING_CODE_LINK.
import { run, check, until } from './lib.mjs';

const typed = process.env.BOSUN_PAIRING_CODE;
const linked = process.env.BOSUN_PAIRING_CODE_LINK;

run('pair', async (t) => {
  check(typed, 'BOSUN_PAIRING_CODE is not set');
  await t.step('the API refuses a request without a token', async () => {
    const { status, body } = await t.api('GET', '/api/v1/sessions');
    check(status === 401 && body?.error?.code === 'unauthorized', `GET /api/v1/sessions without a token: ${status} ${JSON.stringify(body)}`);
  });
  await t.step('open /: "Pair this device"', async () => {
    const resp = await t.page.goto(t.url + '/');
    check(resp && resp.status() === 200, `GET / answered ${resp && resp.status()} (app assets need no token)`);
    await until('a visible heading "Pair this device"', async () =>
      t.page.getByRole('heading', { name: 'Pair this device' }).first().isVisible());
    await t.page.getByLabel('Pairing code', { exact: true }).first().waitFor({ timeout: 20000 });
    await t.screenshot('pair-device.png');
  });
  await t.step('a wrong code is refused and the screen stays', async () => {
    await t.page.getByLabel('Pairing code', { exact: true }).first().fill('WRONG-0000');
    await t.button('Pair').click({ timeout: 20000 });
    await new Promise((r) => setTimeout(r, 1000));
    check(await t.page.getByRole('heading', { name: 'Pair this device' }).first().isVisible(),
      'the pairing screen went away after a wrong code');
    const token = await t.page.evaluate(() => localStorage.getItem('bosun.token'));
    check(!token, 'a token was stored after a wrong code');
  });
  await t.step('the code from `bosun pair` pairs and shows the session list', async () => {
    await t.page.getByLabel('Pairing code', { exact: true }).first().fill(typed);
    await t.button('Pair').click({ timeout: 20000 });
    await t.button('New session').waitFor({ timeout: 20000 });
    await t.waitLive();
    const token = await t.page.evaluate(() => localStorage.getItem('bosun.token'));
    check(token, 'no bosun.token in localStorage after pairing');
    t.token = token;
    await t.apiOk('GET', '/api/v1/sessions');
  });
  await t.step('the token survives a reload', async () => {
    await t.page.reload();
    await t.button('New session').waitFor({ timeout: 20000 });
    await t.waitLive();
  });
  if (linked) {
    await t.step('the pairing URL (#pair=) pairs a fresh browser and drops the fragment', async () => {
      await t.page.evaluate(() => localStorage.removeItem('bosun.token'));
      const page = await t.context.newPage();
      t.watch(page);
      await page.goto(`${t.url}/#pair=${encodeURIComponent(linked)}`);
      await page.getByRole('button', { name: 'New session', exact: true }).waitFor({ timeout: 20000 });
      const { hash, token } = await page.evaluate(() => ({ hash: location.hash, token: localStorage.getItem('bosun.token') }));
      check(token, 'no bosun.token after opening the pairing URL');
      check(!hash.includes('pair='), `the pairing code stays in the URL: ${hash}`);
      await page.close();
    });
  }
});
