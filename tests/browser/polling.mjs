// Scenario 5: the WebSocket cannot open (a proxy that refuses upgrades). The
// app falls back to polling GET /api/v1/events, streams the reply anyway and
// does not claim "live"; once the socket opens again it is "live" and the
// transcript still holds each stored chunk exactly once.
import { run, check, until, checkSameChunks } from './lib.mjs';
import { tmpdir } from 'node:os';

// The demo agent's reply quotes the prompt (adapters/src/demo.rs).
const REPLY = 'It opens with: "hello there".';

run('polling', async (t) => {
  // Every /ws socket fails to open, like a refused upgrade, until allowWebSocket().
  await t.refuseWebSocket();
  const session = await t.apiOk('POST', '/api/v1/sessions', { provider: 'demo', cwd: tmpdir(), title: 'Polling test', policy: 'plan-only' }, 201);
  t.report.info.session = session.id;
  const mode = () => t.connection().first().getAttribute('data-mode', { timeout: 2000 });

  await t.step('open the app with the WebSocket refused: it polls and does not say "live"', async () => {
    await t.page.goto(t.url + '/');
    await t.recordConnection();
    await until('data-mode="polling" on the indicator', async () => (await mode()) === 'polling');
    const text = await t.connectionText();
    check(!text.includes('live'), `the indicator says ${JSON.stringify(text)} while only polling works`);
    t.report.info.ws_attempts = await t.wsAttempts();
    await t.page.getByRole('link', { name: 'Polling test' }).or(t.page.getByRole('button', { name: 'Polling test' }))
      .first().click({ timeout: 20000 });
  });
  let hello;
  await t.step('"hello there" streams its reply over polling', async () => {
    hello = await t.send(session.id, 'hello there');
    await t.waitText('the demo reply', REPLY);
    const end = await t.waitTurnEnd(session.id, hello);
    await until("the app's lastSeq to reach turn:completed", async () => (await t.lastSeq()) >= end.seq);
    const { chunks } = await t.renderedState(hello);
    checkSameChunks(chunks, await t.storedChunks(session.id, hello), 'the hello turn over polling');
  });
  let slow;
  await t.step('"SLOW" ticks arrive over polling', async () => {
    slow = await t.send(session.id, 'SLOW');
    await t.waitText('the first ticks', 'tick 5/600');
    const states = await t.connectionStates();
    t.report.info.states_polling = states;
    check(!states.some((s) => s && s.includes('live')), `the indicator said "live" while polling: ${JSON.stringify(states)}`);
    check((await mode()) === 'polling', `data-mode is ${await mode()} during the polled stream`);
  });
  await t.step('the WebSocket is let through: "live" again, polling stops, no duplicate', async () => {
    await t.allowWebSocket();
    // The app backs off up to 15 s between attempts once the socket kept failing.
    await t.waitLive('the indicator to say "live" once the WebSocket opens', 40_000);
    check((await mode()) === 'websocket', `data-mode is ${await mode()} when live`);
    const before = (await t.renderedState(slow)).chunks.length;
    await until('new ticks over the WebSocket', async () => (await t.renderedState(slow)).chunks.length > before + 5);
    const { lastSeq, chunks } = await t.renderedState(slow);
    checkSameChunks(chunks, await t.storedChunks(session.id, slow, lastSeq), `after the switch to the WebSocket (lastSeq ${lastSeq})`);
  });
  await t.step('"Stop"; every stored chunk of both turns is rendered once, in order', async () => {
    await t.button('Stop').click({ timeout: 20000 });
    const end = await t.waitTurnEnd(session.id, slow, 20000);
    await until("the app's lastSeq to reach turn:completed", async () => (await t.lastSeq()) >= end.seq);
    checkSameChunks((await t.renderedState(slow)).chunks, await t.storedChunks(session.id, slow), 'the SLOW turn');
    checkSameChunks((await t.renderedState(hello)).chunks, await t.storedChunks(session.id, hello), 'the hello turn');
    t.report.info.chunks = (await t.renderedState(slow)).chunks.length;
  });
});
