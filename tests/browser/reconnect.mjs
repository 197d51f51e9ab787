// Scenario 3: the connection drops during a stream (t.dropConnection() closes the socket,
// then the browser going offline). The indicator leaves "live" and comes back,
// and the transcript ends with every stored chunk exactly once.
import { run, check, until, sleep, checkNoDuplicates, checkSameChunks } from './lib.mjs';
import { tmpdir } from 'node:os';

run('reconnect', async (t) => {
  const session = await t.apiOk('POST', '/api/v1/sessions', { provider: 'demo', cwd: tmpdir(), title: 'Reconnect test', policy: 'plan-only' }, 201);
  t.report.info.session = session.id;

  await t.step('open the session', async () => {
    await t.page.goto(t.url + '/');
    await t.waitLive();
    await t.page.getByRole('link', { name: 'Reconnect test' }).or(t.page.getByRole('button', { name: 'Reconnect test' }))
      .first().click({ timeout: 20000 });
  });
  let turn;
  await t.step('"SLOW" streams ticks', async () => {
    turn = await t.send(session.id, 'SLOW');
    await t.waitText('the first ticks', 'tick 5/600');
    await t.recordConnection();
  });
  await t.step('dropConnection(): reconnecting, then live', async () => {
    await t.dropConnection();
    await until('the indicator to leave "live"', async () =>
      (await t.connectionStates()).some((s) => s.includes('reconnecting') || s.includes('offline')), 10000, 20);
    await t.waitLive('the indicator to come back to "live" after dropConnection()');
    t.report.info.states_after_drop = await t.connectionStates();
    const before = (await t.renderedState(turn)).chunks.length;
    await until('new ticks after the reconnection', async () => (await t.renderedState(turn)).chunks.length > before + 5);
    const { lastSeq, chunks } = await t.renderedState(turn);
    checkSameChunks(chunks, await t.storedChunks(session.id, turn, lastSeq), `after dropConnection() (lastSeq ${lastSeq})`);
  });
  await t.step('offline for 2 s (setOffline + dropConnection): offline, then live', async () => {
    await t.recordConnection();
    // Chromium's offline emulation leaves open WebSockets alone (playwright
    // issue 4910), while a real phone losing its network loses the socket too.
    await t.context.setOffline(true);
    await t.dropConnection();
    await until('the indicator to leave "live" while offline', async () =>
      (await t.connectionStates()).some((s) => s.includes('reconnecting') || s.includes('offline')), 10000, 20);
    await sleep(2000);
    await t.context.setOffline(false);
    await t.waitLive('the indicator to come back to "live" when the network is back');
    const states = await t.connectionStates();
    t.report.info.states_offline = states;
    check(states.includes('offline'), `the indicator never said "offline" while the browser was offline: ${JSON.stringify(states)}`);
    const before = (await t.renderedState(turn)).chunks.length;
    await until('new ticks after coming back online', async () => (await t.renderedState(turn)).chunks.length > before + 5);
    const { lastSeq, chunks } = await t.renderedState(turn);
    checkSameChunks(chunks, await t.storedChunks(session.id, turn, lastSeq), `after being offline (lastSeq ${lastSeq})`);
  });
  await t.step('"Stop"; every stored chunk is rendered once, in order', async () => {
    await t.button('Stop').click({ timeout: 20000 });
    const end = await t.waitTurnEnd(session.id, turn, 20000);
    await until("the app's lastSeq to reach turn:completed", async () => (await t.lastSeq()) >= end.seq);
    const stored = await t.storedChunks(session.id, turn);
    const { chunks } = await t.renderedState(turn);
    checkNoDuplicates(chunks, 'the SLOW turn');
    checkSameChunks(chunks, stored, 'the SLOW turn at its end');
    t.report.info.chunks = chunks.length;
  });
});
