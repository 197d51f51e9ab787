// A jailed shell in a worktree of its own, made from the phone's form: the
// repository path and the bwrap sandbox go through "Workspace and sandbox",
// the session's line says where it runs, and each command's end shows its
// exit code. The repository to use comes in BOSUN_TEST_REPO (tests/pwa.rs
// makes it).
import { run, check, until } from './lib.mjs';

run('workspace', async (t) => {
  const repo = process.env.BOSUN_TEST_REPO;
  check(repo, 'BOSUN_TEST_REPO is not set');

  await t.step('open / and go live', async () => {
    await t.page.goto(t.url + '/');
    await t.waitLive();
  });
  await t.step('a working directory and a repository together are refused in the form', async () => {
    await t.button('New session').click({ timeout: 20000 });
    await t.setField('Provider', 'shell');
    await t.setField('Working directory', '/tmp');
    await t.page.getByText('Workspace and sandbox', { exact: true }).click();
    await t.setField('Git repository (optional)', repo);
    await t.button('Create').click({ timeout: 20000 });
    await until('the form to say why', async () =>
      ((await t.page.locator('#new-error').textContent()) ?? '').includes('not both'));
    const { sessions } = await t.apiOk('GET', '/api/v1/sessions');
    check(sessions.length === 0, `a session was made anyway: ${JSON.stringify(sessions)}`);
  });
  let session;
  await t.step('a shell session in a worktree, jailed, from the form', async () => {
    await t.setField('Working directory', '');
    await t.setField('Policy', 'full-access');
    await t.setField('Sandbox', 'bwrap');
    await t.button('Create').click({ timeout: 20000 });
    session = await until('a session with a workspace in GET /api/v1/sessions', async () => {
      const { sessions } = await t.apiOk('GET', '/api/v1/sessions');
      return sessions.find((s) => s.workspace);
    });
    check(session.provider === 'shell', `provider ${session.provider}`);
    check(session.sandbox === 'bwrap', `sandbox ${session.sandbox}`);
    check(session.workspace.repo === repo, `workspace ${JSON.stringify(session.workspace)}`);
    check(session.cwd === session.workspace.worktree, `cwd ${session.cwd} is not the worktree`);
  });
  await t.step('the session line names the sandbox and the branch', async () => {
    await until('the session meta to say "bwrap" and the branch', async () => {
      const meta = (await t.page.locator('#session-meta').textContent()) ?? '';
      return meta.includes('bwrap') && meta.includes('bosun/' + session.id);
    });
  });
  await t.step('a command runs in the worktree and its end shows the exit code', async () => {
    const turn = await t.send(session.id, 'cat README; exit 3');
    const end = await t.waitTurnEnd(session.id, turn);
    check(end.data.result && end.data.result.exit_code === 3, `result ${JSON.stringify(end.data)}`);
    await t.waitText('the file from the repository', 'from the repository');
    const row = t.page.locator(`[data-turn-end="${turn}"]`);
    await until('the turn end to show "exit 3"', async () =>
      ((await row.first().textContent({ timeout: 1000 })) ?? '').includes('exit 3'));
    check((await row.first().getAttribute('data-exit-code')) === '3', 'data-exit-code is not 3');
    await t.screenshot('shell-session.png');
  });
  await t.step('the jail keeps the command inside the worktree', async () => {
    const turn = await t.send(session.id, 'touch /etc/bosun-was-here');
    const end = await t.waitTurnEnd(session.id, turn);
    check(end.data.result && end.data.result.exit_code !== 0, `touch outside the worktree succeeded: ${JSON.stringify(end.data)}`);
    const row = t.page.locator(`[data-turn-end="${turn}"]`);
    await until('the failed command to show a non-zero exit', async () =>
      ((await row.first().getAttribute('data-exit-code', { timeout: 1000 })) ?? '0') !== '0');
  });
});
