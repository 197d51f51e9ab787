// Scenario 2: reload in the middle of a stream. What the page renders after
// the reload must be the stored stream up to the app's lastSeq, one for
// one and in order: no duplicate, no gap.
import { run, check, until, sleep, checkSameChunks } from './lib.mjs';
import { tmpdir } from 'node:os';

run('reload', async (t) => {
  const session = await t.apiOk('POST', '/api/v1/sessions', { provider: 'demo', cwd: tmpdir(), title: 'Reload test', policy: 'plan-only' }, 201);
  t.report.info.session = session.id;

  await t.step('open the session', async () => {
    await t.page.goto(t.url + '/');
    await t.waitLive();
    await t.page.getByRole('link', { name: 'Reload test' }).or(t.page.getByRole('button', { name: 'Reload test' }))
      .first().click({ timeout: 20000 });
  });
  let turn;
  await t.step('"SLOW" streams ticks', async () => {
    turn = await t.send(session.id, 'SLOW');
    await t.waitText('the first ticks', 'tick 10/600');
  });
  await t.step('reload mid-stream', async () => {
    await t.page.reload();
    await t.waitLive('the indicator to say "live" after the reload');
    await until('the session view with its transcript after the reload', async () => (await t.transcript().count()) > 0, 5000)
      .catch(async () => {
        // The app may come back to the list rather than the open session.
        await t.page.getByRole('link', { name: 'Reload test' }).or(t.page.getByRole('button', { name: 'Reload test' }))
          .first().click({ timeout: 20000 });
      });
    await until('chunks of the SLOW turn to render after the reload', async () => (await t.renderedState(turn)).chunks.length > 0);
    await sleep(1500);
  });
  await t.step('rendered chunks = stored chunks up to lastSeq (mid-stream)', async () => {
    const { lastSeq, chunks } = await t.renderedState(turn);
    check(typeof lastSeq === 'number' && lastSeq > 0, `the app's lastSeq (sessionStorage bosun.lastSeq) is ${lastSeq}`);
    const stored = await t.storedChunks(session.id, turn, lastSeq);
    const end = (await t.events(session.id)).find((e) => e.type === 'turn:completed' && e.data.turn_id === turn);
    check(!end || end.seq > lastSeq, 'the turn had already ended: this checks nothing mid-stream');
    t.report.info.mid_stream = { lastSeq, rendered: chunks.length, stored: stored.length };
    checkSameChunks(chunks, stored, `after the reload (lastSeq ${lastSeq})`);
  });
  await t.step('a second check a moment later', async () => {
    await sleep(1000);
    const { lastSeq, chunks } = await t.renderedState(turn);
    const stored = await t.storedChunks(session.id, turn, lastSeq);
    checkSameChunks(chunks, stored, `a second later (lastSeq ${lastSeq})`);
  });
  await t.step('stop the turn; the whole stream is rendered once', async () => {
    await t.button('Stop').click({ timeout: 20000 });
    const end = await t.waitTurnEnd(session.id, turn, 20000);
    check(end.data.status === 'interrupted', `the turn ended ${end.data.status} after "Stop"`);
    await until("the app's lastSeq to reach turn:completed", async () => (await t.lastSeq()) >= end.seq);
    const stored = await t.storedChunks(session.id, turn);
    const { chunks } = await t.renderedState(turn);
    checkSameChunks(chunks, stored, 'at the end of the turn');
  });
});
