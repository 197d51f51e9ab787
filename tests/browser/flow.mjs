// Scenario 1: a new session from the phone, a prompt with a streamed reply,
// then a command that needs approval, approved from the dialog. Writes the
// phone-size screenshots docs/screenshots/ shows, light and dark.
import { run, check, until, checkSameChunks } from './lib.mjs';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// The demo agent's reply quotes the prompt (adapters/src/demo.rs):
// `Demo agent here. Your prompt has 2 words. It opens with: "hello there". Working through it now.`
const REPLY = 'It opens with: "hello there".';
const CLOSING = 'That is all for this turn.';

run('flow', async (t) => {
  const cwd = mkdtempSync(join(tmpdir(), 'bosun-pwa-flow-'));
  // One session already there, so the list screenshot shows what a list looks like.
  await t.apiOk('POST', '/api/v1/sessions', { provider: 'demo', cwd: tmpdir(), title: 'Tidy the release notes', policy: 'plan-only' }, 201);

  await t.step('open / and go live', async () => {
    const resp = await t.page.goto(t.url + '/');
    check(resp && resp.status() === 200, `GET / answered ${resp && resp.status()}`);
    await t.waitLive();
  });
  await t.step('the session list shows the existing session by its title', async () => {
    await until('a link or button named "Tidy the release notes"', async () => {
      const link = await t.page.getByRole('link', { name: 'Tidy the release notes' }).count();
      const button = await t.page.getByRole('button', { name: 'Tidy the release notes' }).count();
      return link + button > 0;
    });
    await t.screenshotLightAndDark('session-list.png');
  });
  await t.step('"New session" opens the form', async () => {
    await t.button('New session').click({ timeout: 20000 });
    await t.setField('Provider', 'demo');
    await t.setField('Policy', 'plan-only');
    await t.setField('Working directory', cwd);
    await t.screenshotLightAndDark('new-session.png');
  });
  let session;
  await t.step('"Create" makes the session', async () => {
    await t.button('Create').click({ timeout: 20000 });
    session = await t.sessionByCwd(cwd);
    check(session.provider === 'demo', `the session's provider is ${session.provider}`);
    check(session.policy === 'plan-only', `the session's policy is ${session.policy}`);
    t.report.info.session = session.id;
  });
  let hello;
  await t.step('"hello there" gets a streamed reply', async () => {
    hello = await t.send(session.id, 'hello there');
    await t.waitText('the demo reply', REPLY);
    await t.waitTurnEnd(session.id, hello);
    await t.waitText('the closing chunk', CLOSING);
  });
  await t.step('the rendered chunks are the stored ones', async () => {
    const stored = await t.storedChunks(session.id, hello);
    const { chunks } = await until('every stored chunk to be rendered', async () => {
      const state = await t.renderedState(hello);
      return state.chunks.length >= stored.length && state;
    });
    checkSameChunks(chunks, stored, 'the hello turn');
    await t.screenshotLightAndDark('session-streamed-reply.png');
  });
  let run1;
  await t.step('"RUN: echo from-the-browser" asks for approval in a dialog', async () => {
    run1 = await t.send(session.id, 'RUN: echo from-the-browser');
    const dialog = t.page.getByRole('dialog', { name: /Approval/i });
    await dialog.first().waitFor({ timeout: 20000 }).catch(() => {
      throw new Error('no dialog with an accessible name containing "Approval" appeared');
    });
    const text = await dialog.first().textContent();
    check(text.includes('echo from-the-browser'), `the approval dialog does not show the command: ${JSON.stringify(text)}`);
    await t.screenshotLightAndDark('approval-dialog.png');
  });
  await t.step('"Approve" runs the command and the turn ends', async () => {
    const dialog = t.page.getByRole('dialog', { name: /Approval/i }).first();
    await dialog.getByRole('button', { name: 'Approve', exact: true }).click({ timeout: 20000 });
    await until('the approval dialog to close', async () => (await t.page.getByRole('dialog', { name: /Approval/i }).count()) === 0);
    const end = await t.waitTurnEnd(session.id, run1);
    check(end.data.status === 'completed', `the RUN turn ended ${end.data.status}: ${JSON.stringify(end.data)}`);
    const { approvals } = await t.apiOk('GET', `/api/v1/approvals?session=${session.id}`);
    check(approvals.length === 1 && approvals[0].status === 'accepted',
      `wanted one accepted approval, got ${JSON.stringify(approvals)}`);
    const output = (await t.events(session.id)).find((e) =>
      e.type === 'stream:chunk' && e.data.turn_id === run1 && e.data.kind === 'command_output');
    check(output && output.data.text.includes('from-the-browser'), `no stored command output: ${JSON.stringify(output)}`);
    const id = `${run1}:${output.data.index}`;
    await until(`the command output rendered as [data-chunk="${id}"] holding "from-the-browser"`, async () =>
      ((await t.page.locator(`[data-chunk="${id}"]`).first().textContent({ timeout: 1000 })) ?? '').includes('from-the-browser'));
    await t.waitText('the command notice', 'command finished');
    await until('the closing chunk of the RUN turn', async () =>
      (await t.transcriptText()).split(CLOSING).length - 1 >= 2);
    await until("the app's lastSeq to reach turn:completed", async () => (await t.lastSeq()) >= end.seq);
    const stored = await t.storedChunks(session.id, run1);
    const { chunks } = await t.renderedState(run1);
    checkSameChunks(chunks, stored, 'the RUN turn');
  });
});
