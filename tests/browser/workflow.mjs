// A workflow run watched from the phone: the Workflows tab beside the session
// list, the run appearing there as it starts (over HTTP, from the test), its
// live view at #/w/<id> with the steps turning completed from the stream (a
// fan-out's items replacing its placeholder), its gate decided in the
// approval dialog ("Decide gate", then "Approve"), and the run's end,
// completed, on the page and in the API. Writes workflow-run.png.
//
// Env: BOSUN_TEST_WORKFLOW (the definition, TOML), BOSUN_TEST_REPO (its
// `repo` input). Reports the run's id as info.run.
import { run, check, until, WAIT_MS } from './lib.mjs';

const DEFINITION = process.env.BOSUN_TEST_WORKFLOW;
const REPO = process.env.BOSUN_TEST_REPO;
// The plan step says two lines, so `build` fans out into two items.
const LABELS = ['plan', 'build#0', 'build#1', 'approve', 'merge'];
// "Merge {{ steps.build.lines | length }} parts?": the count is of the builds' reply lines.
const GATE_MESSAGE = /^Merge \d+ parts\?$/;

/// Records, from outside the app, every state each step row of the run view
/// shows (`tr[data-label]`'s `data-state`), in order, as it changes.
function recordSteps() {
  const seen = {};
  const read = () => {
    for (const tr of document.querySelectorAll('#steps tr[data-label]')) {
      const label = tr.getAttribute('data-label');
      const state = tr.getAttribute('data-state');
      const list = (seen[label] ??= []);
      if (list[list.length - 1] !== state) list.push(state);
    }
  };
  window.__bosunStepStates = seen;
  read();
  new MutationObserver(read).observe(document.documentElement, {
    subtree: true,
    childList: true,
    attributes: true,
    attributeFilter: ['data-state', 'data-label'],
  });
}

run('workflow', async (t) => {
  check(DEFINITION && REPO, 'BOSUN_TEST_WORKFLOW and BOSUN_TEST_REPO must be set');
  const rows = () => t.page.locator('#steps tr[data-label]');
  const row = (label) => t.page.locator(`#steps tr[data-label="${label}"]`);
  const rowState = async (label) => (await row(label).count()) ? row(label).first().getAttribute('data-state', { timeout: 2000 }) : null;

  await t.step('open / and go live', async () => {
    const resp = await t.page.goto(t.url + '/');
    check(resp && resp.status() === 200, `GET / answered ${resp && resp.status()}`);
    await t.waitLive();
  });
  await t.step('the "Workflows" tab beside the session list shows no run yet', async () => {
    const tab = t.page.getByRole('link', { name: 'Workflows', exact: true });
    check(await t.page.getByRole('link', { name: 'Sessions', exact: true }).isVisible(), 'no "Sessions" tab on the main screen');
    await tab.click({ timeout: WAIT_MS });
    await until('the URL to be #/w', async () => new URL(t.page.url()).hash === '#/w');
    check((await tab.getAttribute('aria-current')) === 'page', 'the Workflows tab is not marked as the current page');
    await t.page.getByRole('heading', { name: 'Workflow runs' }).waitFor({ timeout: WAIT_MS });
    check((await t.page.locator('#runs li').count()) === 0, 'runs are listed before any was started');
  });

  let runId;
  await t.step('a run started over HTTP appears in the list by itself', async () => {
    const started = await t.apiOk('POST', '/api/v1/workflows/runs', { definition: DEFINITION, inputs: { repo: REPO } }, 201);
    runId = started.id;
    t.report.info.run = runId;
    check(started.name === 'phone', `the run is named ${started.name}`);
    const li = t.page.locator(`#runs li[data-run="${runId}"]`);
    await li.waitFor({ timeout: WAIT_MS }).catch(() => {
      throw new Error(`run ${runId} did not appear in the list without a reload`);
    });
    const text = await li.textContent();
    check(text.includes('phone'), `the list item does not name the run: ${JSON.stringify(text)}`);
    check(/\d+\/\d+ steps?/.test(text), `the list item shows no progress like "3/6 steps": ${JSON.stringify(text)}`);
  });

  /** The page's requests for runs once the live view is open: its updates must come from the stream. */
  const runRequests = [];
  await t.step('the run opens at #/w/<id>', async () => {
    await t.page.evaluate(recordSteps);
    t.page.on('request', (req) => {
      if (new URL(req.url()).pathname.startsWith('/api/v1/workflows/runs')) runRequests.push(`${req.method()} ${req.url()}`);
    });
    await t.page.getByRole('link', { name: 'phone', exact: true }).click({ timeout: WAIT_MS });
    await until(`the URL to be #/w/${runId}`, async () => new URL(t.page.url()).hash === `#/w/${runId}`);
    await t.page.locator('[data-testid="steps"]').waitFor({ timeout: WAIT_MS });
    check(await t.button('Cancel run').isVisible(), 'no "Cancel run" button on a running run');
  });

  let view;
  await t.step('the steps turn completed live, the fan-out as two items', async () => {
    await until('plan, build#0 and build#1 completed and the gate running', async () => {
      const states = await Promise.all(LABELS.map(rowState));
      t.report.info.states_now = Object.fromEntries(LABELS.map((l, i) => [l, states[i]]));
      return states[0] === 'completed' && states[1] === 'completed' && states[2] === 'completed' && states[3] === 'running';
    }, 90_000, 200);
    const labels = await rows().evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-label')));
    check(JSON.stringify(labels) === JSON.stringify(LABELS), `the table's steps are ${JSON.stringify(labels)}, wanted ${JSON.stringify(LABELS)}`);
    check((await rowState('merge')) === 'pending', `merge is ${await rowState('merge')} before the gate is decided`);
    // Each session step links to its session, as the daemon has it.
    view = await t.apiOk('GET', `/api/v1/workflows/runs/${runId}`);
    for (const s of view.steps.filter((s) => s.session_id)) {
      const label = s.step_id + (typeof s.index === 'number' ? `#${s.index}` : '');
      const href = await row(label).locator('a').first().getAttribute('href', { timeout: 2000 });
      check(href === `#/s/${s.session_id}`, `${label} links to ${href}, wanted #/s/${s.session_id}`);
    }
    const build0 = await row('build#0').first().textContent();
    check(build0.includes('one') && build0.includes('agent'), `build#0's row lacks its item or kind: ${JSON.stringify(build0)}`);
    const tries = await row('plan').locator('td').nth(2).textContent();
    check(tries.trim() === '1', `plan shows ${JSON.stringify(tries)} attempts`);
    const budget = (await t.page.locator('[data-testid="run-budget"]').textContent()) ?? '';
    check(/Tokens [\d,]+ \(no limit\) · Cost [\d.]+ \(no limit\)/.test(budget), `the budget line says ${JSON.stringify(budget)}`);
    const gateStep = view.steps.find((s) => s.step_id === 'approve');
    check(gateStep && gateStep.approval_id, `the gate step has no approval: ${JSON.stringify(gateStep)}`);
    t.report.info.gate = gateStep.approval_id;
  });

  const dialog = () => t.page.getByRole('dialog', { name: /Approval/i });
  await t.step('the gate waits for "Decide gate"; the dialog does not open by itself', async () => {
    const decide = row('approve').locator('xpath=following-sibling::tr[1]').getByRole('button', { name: 'Decide gate' });
    await decide.waitFor({ timeout: WAIT_MS });
    check((await dialog().count()) === 0, 'the approval dialog opened without "Decide gate"');
    await t.screenshot('workflow-run.png');
    await decide.click({ timeout: WAIT_MS });
    await dialog().first().waitFor({ timeout: WAIT_MS }).catch(() => {
      throw new Error('"Decide gate" opened no dialog named "Approval…"');
    });
    const text = (await dialog().first().textContent()) ?? '';
    for (const want of ['workflow gate', 'phone', runId, 'approve']) check(text.includes(want), `the gate dialog does not say ${JSON.stringify(want)}: ${JSON.stringify(text)}`);
    const message = (await t.page.locator('[data-testid="gate-message"]').textContent()) ?? '';
    const { approvals } = await t.apiOk('GET', '/api/v1/approvals?status=pending');
    const gate = approvals.find((a) => a.id === t.report.info.gate);
    check(gate && gate.action.kind === 'gate', `the gate is not pending in GET /api/v1/approvals: ${JSON.stringify(approvals)}`);
    check(message === gate.action.message && GATE_MESSAGE.test(message),
      `the dialog shows the gate's message as ${JSON.stringify(message)}; the daemon's is ${JSON.stringify(gate.action.message)}`);
    const overflow = await t.page.locator('[data-testid="gate-message"]').evaluate((e) => getComputedStyle(e).overflowY);
    check(overflow === 'auto' || overflow === 'scroll', `the gate's message box does not scroll (overflow-y ${overflow})`);
  });

  await t.step('"Approve" decides the gate; the merge runs and the run ends completed, live', async () => {
    await dialog().first().getByRole('button', { name: 'Approve', exact: true }).click({ timeout: WAIT_MS });
    await until('the approval dialog to close', async () => (await dialog().count()) === 0);
    await until('the run view to say "completed"', async () =>
      ((await t.page.locator('[data-testid="run-state"]').textContent({ timeout: 2000 })) ?? '').trim() === 'completed', 90_000, 200);
    const states = await Promise.all(LABELS.map(rowState));
    check(states.every((s) => s === 'completed'), `steps at the end: ${JSON.stringify(states)}`);
    check((await t.page.locator('#run-progress').textContent()) === '5/5 steps', `progress: ${await t.page.locator('#run-progress').textContent()}`);
    check(!(await t.button('Cancel run').isVisible()), 'a completed run still offers "Cancel run"');
    const actions = await t.page.locator('#steps tr.step-actions').allTextContents();
    check(actions.length === 0, `a completed run still offers actions on its steps: ${JSON.stringify(actions)}`);
  });

  await t.step('the updates came from the stream, seen changing in the open view', async () => {
    const seen = await t.page.evaluate(() => window.__bosunStepStates);
    t.report.info.step_states = seen;
    t.report.info.run_requests = runRequests;
    const went = (label, ...want) => {
      const got = seen[label] ?? [];
      let at = 0;
      for (const s of got) if (s === want[at]) at++;
      check(at === want.length, `${label} was seen ${JSON.stringify(got)}, wanted ${JSON.stringify(want)} in that order`);
    };
    went('approve', 'running', 'completed');
    went('merge', 'pending', 'completed');
    check(runRequests.length === 0, `the page fetched runs while the view was open instead of following the stream: ${JSON.stringify(runRequests)}`);
  });

  await t.step('the API agrees: completed, the gate accepted by a person', async () => {
    const done = await t.apiOk('GET', `/api/v1/workflows/runs/${runId}`);
    check(done.state === 'completed', `the run is ${done.state}: ${JSON.stringify(done.pause)}`);
    check(done.steps.length === 5 && done.steps.every((s) => s.state === 'completed'), `steps: ${JSON.stringify(done.steps.map((s) => [s.step_id, s.index, s.state]))}`);
    const { approvals } = await t.apiOk('GET', '/api/v1/approvals');
    const gate = approvals.find((a) => a.id === t.report.info.gate);
    check(gate && gate.status === 'accepted' && gate.decided_by === 'user', `the gate: ${JSON.stringify(gate)}`);
    check(gate.session_id == null && gate.action.kind === 'gate', `not a gate approval: ${JSON.stringify(gate)}`);
  });

  await t.step("a step's link opens its session, and back returns to the run", async () => {
    const build0 = view.steps.find((s) => s.step_id === 'build' && s.index === 0);
    await row('build#0').getByRole('link', { name: 'build#0' }).click({ timeout: WAIT_MS });
    await until(`the URL to be #/s/${build0.session_id}`, async () => new URL(t.page.url()).hash === `#/s/${build0.session_id}`);
    await t.waitText('the build step\'s command in its transcript', "echo 'one' > part-0.txt");
    await t.page.getByRole('button', { name: 'Back to the workflow run' }).click({ timeout: WAIT_MS });
    await until(`the URL to be #/w/${runId} again`, async () => new URL(t.page.url()).hash === `#/w/${runId}`);
    await until('the run view to say completed again', async () => (await t.page.locator('[data-testid="run-state"]').textContent()) === 'completed');
  });

  await t.step('the list says completed, 5/5 steps', async () => {
    await t.page.getByRole('button', { name: 'All workflow runs' }).click({ timeout: WAIT_MS });
    const li = t.page.locator(`#runs li[data-run="${runId}"]`);
    await li.waitFor({ timeout: WAIT_MS });
    // The list drawn at the start is still in the page until the next frame
    // redraws it: wait for the redraw rather than read the old one.
    let text = '';
    try {
      await until('the list item to say completed, 5/5 steps', async () => {
        text = (await li.textContent()) ?? '';
        return text.includes('completed') && text.includes('5/5 steps');
      });
    } catch (_) {
      check(false, `the list item says ${JSON.stringify(text)}`);
    }
  });
});
