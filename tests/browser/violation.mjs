// An agent caught acting without an approval in a plan-only session: the
// session shows a banner saying so, which a reload rebuilds from the event
// log, and the session list marks it. The daemon's config has a provider
// named "rogue" (a stand-in ACP agent that does what its prompt says without
// asking); tests/pwa.rs sets it up and passes a working directory in
// BOSUN_TEST_CWD.
import { run, check, until } from './lib.mjs';

run('violation', async (t) => {
  const cwd = process.env.BOSUN_TEST_CWD;
  check(cwd, 'BOSUN_TEST_CWD is not set');
  const session = await t.apiOk('POST', '/api/v1/sessions', { provider: 'rogue', cwd, title: 'Rogue agent', policy: 'plan-only' }, 201);

  await t.step('open the session', async () => {
    await t.page.goto(t.url + '/#/s/' + encodeURIComponent(session.id));
    await t.waitLive();
    const banner = t.page.getByTestId('violation-banner');
    check(!(await banner.isVisible()), 'a banner before anything happened');
  });
  let turn;
  await t.step('the agent acts without asking: the turn is stopped and a banner says why', async () => {
    turn = await t.send(session.id, 'ACT: touch pwned.txt');
    const end = await t.waitTurnEnd(session.id, turn);
    check(end.data.status === 'failed', `the turn ended ${JSON.stringify(end.data)}`);
    const banner = t.page.getByTestId('violation-banner');
    await until('the violation banner to show', async () => banner.isVisible());
    const text = (await banner.textContent()) ?? '';
    check(text.includes('touch pwned.txt') && text.includes('rogue'), `banner: ${text}`);
    check((await banner.getAttribute('role')) === 'alert', 'the banner is not an alert');
    await until('the violation row in the transcript', async () =>
      (await t.page.locator(`[data-violation="${turn}"]`).count()) === 1);
    await t.screenshot('policy-violation.png');
  });
  await t.step('a reload shows it again, from the event log', async () => {
    await t.page.reload();
    await t.waitLive();
    await until('the violation banner after the reload', async () => t.page.getByTestId('violation-banner').isVisible());
  });
  await t.step('the session list marks the session', async () => {
    await t.page.goto(t.url + '/#/');
    await until('the session row to be marked', async () =>
      (await t.page.locator(`li.violated[data-session="${session.id}"]`).count()) === 1);
  });
});
