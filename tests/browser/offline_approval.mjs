// Approve while the phone is offline: the decision is kept and reaches the
// daemon once when the network is back; the command runs once.
import { run, check, until, sleep } from './lib.mjs';
import { tmpdir } from 'node:os';

run('offline_approval', async (t) => {
  const session = await t.apiOk('POST', '/api/v1/sessions', { provider: 'demo', cwd: tmpdir(), title: 'Offline approval', policy: 'plan-only' }, 201);
  t.report.info.session = session.id;
  await t.step('open the session', async () => {
    await t.page.goto(t.url + '/');
    await t.waitLive();
    await t.page.getByRole('link', { name: 'Offline approval' }).or(t.page.getByRole('button', { name: 'Offline approval' }))
      .first().click({ timeout: 20000 });
  });
  let turn;
  const dialog = () => t.page.getByRole('dialog', { name: /Approval/i }).first();
  await t.step('"RUN: echo decided-offline" opens the approval dialog', async () => {
    turn = await t.send(session.id, 'RUN: echo decided-offline');
    await dialog().waitFor({ timeout: 20000 });
  });
  await t.step('go offline and "Approve"', async () => {
    // Chromium's offline emulation leaves open WebSockets alone (playwright
    // issue 4910); a real network loss takes the socket too.
    await t.context.setOffline(true);
    await t.dropConnection();
    await until('the indicator to leave "live"', async () => !(await t.connectionText()).includes('live'), 10000);
    await dialog().getByRole('button', { name: 'Approve', exact: true }).click({ timeout: 20000 });
    await sleep(1500);
    const { approvals } = await t.apiOk('GET', `/api/v1/approvals?session=${session.id}`);
    t.report.info.status_while_offline = approvals.map((a) => a.status);
    check(approvals.length === 1 && approvals[0].status === 'pending',
      `the decision reached the daemon while the browser was offline: ${JSON.stringify(approvals)}`);
  });
  await t.step('back online: the decision arrives once', async () => {
    await t.context.setOffline(false);
    await t.waitLive();
    const end = await t.waitTurnEnd(session.id, turn, 30000);
    check(end.data.status === 'completed', `the turn ended ${end.data.status}`);
    const { approvals } = await t.apiOk('GET', `/api/v1/approvals?session=${session.id}`);
    check(approvals.length === 1 && approvals[0].status === 'accepted', `approvals: ${JSON.stringify(approvals)}`);
    const events = await t.events(session.id);
    const resolved = events.filter((e) => e.type === 'approval:resolved');
    check(resolved.length === 1, `${resolved.length} approval:resolved events`);
    const outputs = events.filter((e) => e.type === 'stream:chunk' && e.data.turn_id === turn && e.data.kind === 'command_output');
    check(outputs.length === 1 && outputs[0].data.text.includes('decided-offline'), `command output: ${JSON.stringify(outputs)}`);
    await until('the command output in the transcript', async () =>
      ((await t.page.locator(`[data-chunk="${turn}:${outputs[0].data.index}"]`).count()) === 1));
    await until('the dialog to be gone', async () => (await t.page.getByRole('dialog', { name: /Approval/i }).count()) === 0);
  });
});
