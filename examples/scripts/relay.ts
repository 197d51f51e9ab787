// Relay a task through several Bosun agents, one session each.
//
// The first agent (default "writer") gets the prompt; each next one (default
// "reviewer") gets the previous agent's output in its prompt. Each turn's
// result is read over the WebSocket: subscribe to `session:<id>` from the
// log's head (read from `GET /health` before the turn starts), collect the
// turn's `stream:chunk` text until its `turn:completed`, and resubscribe from
// the last seq seen whenever the socket drops (a daemon restart included).
//
// Typed with the declarations generated from Bosun's published contract
// (src/front/pwa/types/, made by tests/browser/gen-types.mjs from the OpenAPI
// document and the event schema): every call is named by its operation
// (`'POST /api/v1/sessions'`), so its body and answer have the document's
// types, and events are the `BosunEvent` union, narrowed on `type`.
//
// Node 20 (fetch is global; WebSocket behind a flag), no npm dependency:
//
//   tests/browser/node_modules/.bin/tsc -p examples/scripts --outDir /tmp/relay
//   node --experimental-websocket /tmp/relay/relay.js "Write a haiku about a harbour"

import type {
  ApiOperations,
  CreateSessionRequest,
  ErrorBody,
  ErrorDetail,
  SessionView,
} from '../../src/front/pwa/types/api.d.ts';
import type { BosunEvent, TurnStatus, Usage } from '../../src/front/pwa/types/events.d.ts';

// The little of Node's globals this script uses (no @types/node needed).
declare const process: {
  argv: string[];
  env: Record<string, string | undefined>;
  exitCode: number | undefined;
  stdout: { write(text: string): boolean };
  stderr: { write(text: string): boolean };
  cwd(): string;
};

const CLIENT = 'bosun-relay.ts';
const DEFAULT_HANDOFF = 'The {previous} wrote:\n\n{output}\n\nYou are the {agent}: carry on from there.';

// ---- The WebSocket's control frames. They are not in the published schemas
// (docs/PROTOCOL.md, "WebSocket": proto/src/ws.rs `ClientOp` and `Control`),
// so they are written out here; the events they carry are the generated types.

type ClientOp = { op: 'subscribe'; topics: string[]; since: number };

type Control =
  | { op: 'subscribed'; topics: string[]; since: number; head: number }
  | { op: 'unsubscribed'; topics: string[] }
  | { op: 'pong'; nonce: number | null }
  | { op: 'authenticated' }
  | { op: 'error'; error: ErrorDetail };

/** A frame from the server: a control frame (it has `op`) or an event envelope. */
type ServerFrame = Control | BosunEvent;

// ---- What the script reports with --json (relay.py writes the same shape).

interface AgentRun {
  agent: string;
  session_id: string;
  turn_id: string;
  prompt: string;
  output: string;
  status: TurnStatus;
  reason: string | null;
  usage: Usage;
  /** How often the WebSocket was reopened while waiting for this turn. */
  reconnects: number;
}

interface RelaySummary {
  url: string;
  provider: string;
  agents: AgentRun[];
  /** The last agent's output. */
  output: string;
}

class RelayError extends Error {}

type Operation = keyof ApiOperations;
type Request<K extends Operation> = ApiOperations[K]['request'];
type Response<K extends Operation> = ApiOperations[K]['response'];

/** The few HTTP calls the relay makes, by the OpenAPI document's operation names. */
class Bosun {
  readonly url: string;
  constructor(
    url: string,
    readonly token: string | undefined,
  ) {
    this.url = url.replace(/\/+$/, '');
  }

  async call<K extends Operation>(
    operation: K,
    params: Record<string, string>,
    body: Request<K>,
  ): Promise<Response<K>> {
    const [method, template] = operation.split(' ') as [string, string];
    const path = template.replace(/\{(\w+)\}/g, (_, name: string) => encodeURIComponent(params[name] ?? ''));
    const headers: Record<string, string> = { 'X-Bosun-Client': CLIENT, Accept: 'application/json' };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let res: globalThis.Response;
    try {
      res = await fetch(this.url + path, {
        method,
        headers,
        body: body === undefined ? null : JSON.stringify(body),
      });
    } catch (e) {
      throw new RelayError(
        `${method} ${path}: cannot reach ${this.url}: ${e instanceof Error ? e.message : String(e)}`,
      );
    }
    const text = await res.text();
    if (!res.ok) {
      let detail = `HTTP ${res.status}: ${text.slice(0, 200)}`;
      try {
        const err = (JSON.parse(text) as ErrorBody).error;
        detail = `${res.status} ${err.code}: ${err.message}`;
      } catch {
        // not the API's error shape: keep the raw text
      }
      throw new RelayError(`${method} ${path}: ${detail}`);
    }
    return JSON.parse(text) as Response<K>;
  }

  wsUrl(): string {
    const url = new URL(this.url + '/ws');
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    if (this.token) url.searchParams.set('token', this.token);
    return url.toString();
  }
}

type Incoming = { kind: 'frame'; text: string } | { kind: 'down'; why: string };

/** One WebSocket connection, read as a queue: its frames, then one `down`. */
class Connection {
  private readonly queue: Incoming[] = [];
  private waiting: ((incoming: Incoming) => void) | null = null;
  private down = false;
  readonly ws: WebSocket;

  constructor(url: string, first: ClientOp) {
    this.ws = new WebSocket(url);
    this.ws.addEventListener('open', () => this.ws.send(JSON.stringify(first)));
    this.ws.addEventListener('message', (e: MessageEvent) => {
      this.push({ kind: 'frame', text: typeof e.data === 'string' ? e.data : String(e.data) });
    });
    this.ws.addEventListener('error', () => this.push({ kind: 'down', why: 'socket error' }));
    this.ws.addEventListener('close', (e: CloseEvent) => {
      this.push({ kind: 'down', why: `closed (${e.code}${e.reason ? ` ${e.reason}` : ''})` });
    });
  }

  private push(incoming: Incoming): void {
    if (this.down) return; // only the first `down` counts (an error is followed by a close)
    if (incoming.kind === 'down') this.down = true;
    const waiting = this.waiting;
    this.waiting = null;
    if (waiting) waiting(incoming);
    else this.queue.push(incoming);
  }

  next(): Promise<Incoming> {
    const incoming = this.queue.shift();
    if (incoming) return Promise.resolve(incoming);
    return new Promise((resolve) => (this.waiting = resolve));
  }

  close(): void {
    this.ws.close();
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * The events of one topic after `since`, each once and in order, across
 * dropped sockets: it resubscribes from the last seq it handed out, and
 * skips anything at or below it.
 */
class Follower {
  lastSeq: number;
  connections = 0;

  constructor(
    readonly url: string,
    readonly topic: string,
    since: number,
    readonly reconnectTimeoutMs: number,
    readonly log: Log,
  ) {
    this.lastSeq = since;
  }

  async *events(): AsyncGenerator<BosunEvent, never> {
    let downSince: number | null = null;
    let delay = 100;
    for (;;) {
      const conn = new Connection(this.url, { op: 'subscribe', topics: [this.topic], since: this.lastSeq });
      let why = 'closed';
      try {
        for (;;) {
          const incoming = await conn.next();
          if (incoming.kind === 'down') {
            why = incoming.why;
            break;
          }
          const frame = JSON.parse(incoming.text) as ServerFrame;
          if ('op' in frame) {
            if (frame.op === 'error') {
              throw new RelayError(`the daemon refused: ${frame.error.code}: ${frame.error.message}`);
            }
            if (frame.op === 'subscribed') {
              this.connections += 1;
              downSince = null;
              delay = 100;
            }
            continue;
          }
          if (frame.seq <= this.lastSeq) continue;
          this.lastSeq = frame.seq;
          yield frame;
        }
      } finally {
        conn.close();
      }
      const now = Date.now();
      downSince ??= now;
      if (now - downSince > this.reconnectTimeoutMs) {
        throw new RelayError(`the WebSocket stayed down for ${this.reconnectTimeoutMs / 1000} s (${why})`);
      }
      this.log.line(`WebSocket down (${why}); resuming after seq ${this.lastSeq}`);
      await sleep(delay);
      delay = Math.min(delay * 2, 2000);
    }
  }
}

class Log {
  constructor(readonly quiet: boolean) {}
  line(text: string): void {
    if (!this.quiet) process.stderr.write(`relay: ${text}\n`);
  }
  stream(text: string): void {
    if (!this.quiet) process.stderr.write(text);
  }
}

interface Args {
  prompt: string;
  url: string;
  token: string | undefined;
  provider: string;
  agents: string[];
  cwd: string | undefined;
  policy: CreateSessionRequest['policy'];
  handoff: string;
  reconnectTimeoutMs: number;
  json: boolean;
  quiet: boolean;
}

/** Starts a turn and follows it over the WebSocket to its end. */
async function runTurn(
  bosun: Bosun,
  session: SessionView,
  agent: string,
  prompt: string,
  args: Args,
  log: Log,
): Promise<AgentRun> {
  const head = (await bosun.call('GET /health', {}, undefined)).head_seq;
  const turn = await bosun.call('POST /api/v1/sessions/{id}/turns', { id: session.id }, { text: prompt });
  log.line(`${agent}: turn ${turn.turn_id} started in session ${session.id}`);
  const follower = new Follower(bosun.wsUrl(), `session:${session.id}`, head, args.reconnectTimeoutMs, log);
  const text: string[] = [];
  for await (const event of follower.events()) {
    switch (event.type) {
      case 'stream:chunk':
        if (event.data.turn_id === turn.turn_id && event.data.kind === 'text') {
          text.push(event.data.text);
          log.stream(event.data.text);
        }
        break;
      case 'approval:requested': {
        const approval = event.data.approval;
        if (approval.turn_id === turn.turn_id) {
          log.line(
            `${agent}: waiting for approval ${approval.id} (decide it in the web app, or POST /api/v1/approvals/${approval.id})`,
          );
        }
        break;
      }
      case 'turn:completed': {
        const done = event.data;
        if (done.turn_id !== turn.turn_id) break;
        log.line(`${agent}: turn ${turn.turn_id} ${done.status}${done.reason ? ` (${done.reason})` : ''}`);
        return {
          agent,
          session_id: session.id,
          turn_id: turn.turn_id,
          prompt,
          output: text.join(''),
          status: done.status,
          reason: done.reason ?? null,
          usage: done.usage,
          reconnects: follower.connections - 1,
        };
      }
      default:
        break;
    }
  }
  throw new RelayError('the event stream ended'); // Follower.events never ends by itself
}

/** The next agent's prompt: `{previous}`, `{agent}` and `{output}` replaced in one pass. */
function handoff(template: string, previous: string, agent: string, output: string): string {
  const values: Record<string, string> = { previous, agent, output: output.trim() };
  return template.replace(/\{(previous|agent|output)\}/g, (_, name: string) => values[name] ?? '');
}

const USAGE = `usage: relay.js [options] [prompt]

Relay a prompt through Bosun agents, one session each.

  --url URL                 the daemon (default $BOSUN_URL or http://127.0.0.1:7878)
  --token TOKEN             a device token, where the daemon asks for one (default $BOSUN_TOKEN)
  --provider NAME           the provider of every session (default: demo, the built-in scripted agent)
  --agents A,B[,...]        agent names, one session each, in relay order (default: writer,reviewer)
  --cwd DIR                 the sessions' working directory (default: the daemon's)
  --policy POLICY           plan-only or full-access (default: the daemon's, plan-only)
  --handoff TEMPLATE        the next agent's prompt, with {previous}, {agent} and {output}
  --reconnect-timeout SECS  seconds to keep retrying a dropped WebSocket (default 60)
  --json                    print a JSON summary instead of the last output
  --quiet                   no progress on stderr
`;

/** A bad command line: says so, with the usage, and exits 2 (as argparse does in relay.py). */
function usage(message: string): never {
  process.stderr.write(`relay: ${message}\n\n${USAGE}`);
  process.exitCode = 2;
  throw new RelayError('');
}

function parseArgs(argv: string[]): Args {
  const args: Args = {
    prompt: 'Write a short poem about a harbour at dawn.',
    url: process.env.BOSUN_URL ?? 'http://127.0.0.1:7878',
    token: process.env.BOSUN_TOKEN,
    provider: 'demo',
    agents: ['writer', 'reviewer'],
    cwd: undefined,
    policy: undefined,
    handoff: DEFAULT_HANDOFF,
    reconnectTimeoutMs: 60_000,
    json: false,
    quiet: false,
  };
  const positional: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (!arg.startsWith('--')) {
      positional.push(arg);
      continue;
    }
    const [name, inline] = arg.includes('=')
      ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)]
      : [arg, undefined];
    const value = (): string => {
      if (inline !== undefined) return inline;
      const next = argv[++i];
      if (next === undefined) usage(`${name} needs a value`);
      return next;
    };
    switch (name) {
      case '--url':
        args.url = value();
        break;
      case '--token':
        args.token = value();
        break;
      case '--provider':
        args.provider = value();
        break;
      case '--agents':
        args.agents = value()
          .split(',')
          .map((a) => a.trim())
          .filter((a) => a !== '');
        break;
      case '--cwd':
        args.cwd = value();
        break;
      case '--policy': {
        const policy = value();
        if (policy !== 'plan-only' && policy !== 'full-access')
          usage(`--policy: plan-only or full-access, not ${policy}`);
        args.policy = policy;
        break;
      }
      case '--handoff':
        args.handoff = value();
        break;
      case '--reconnect-timeout':
        args.reconnectTimeoutMs = Number(value()) * 1000;
        if (!Number.isFinite(args.reconnectTimeoutMs)) usage('--reconnect-timeout needs a number of seconds');
        break;
      case '--json':
        args.json = true;
        break;
      case '--quiet':
        args.quiet = true;
        break;
      case '--help':
        process.stdout.write(USAGE);
        process.exitCode = 0;
        throw new RelayError('');
      default:
        usage(`unknown option ${name}`);
    }
  }
  if (positional.length > 1) usage('give the prompt as one argument (quote it)');
  if (positional[0] !== undefined) args.prompt = positional[0];
  if (args.agents.length < 2) usage('--agents needs at least two names');
  return args;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const log = new Log(args.quiet);
  const bosun = new Bosun(args.url, args.token);
  const health = await bosun.call('GET /health', {}, undefined);
  log.line(`daemon ${health.version} at ${bosun.url}, head seq ${health.head_seq}`);

  const sessions: SessionView[] = [];
  for (const agent of args.agents) {
    const request: CreateSessionRequest = { provider: args.provider, title: `relay: ${agent}` };
    if (args.cwd !== undefined) request.cwd = args.cwd.startsWith('/') ? args.cwd : `${process.cwd()}/${args.cwd}`;
    if (args.policy) request.policy = args.policy;
    const session = await bosun.call('POST /api/v1/sessions', {}, request);
    log.line(`${agent}: session ${session.id} (${session.provider}, ${session.policy})`);
    sessions.push(session);
  }

  const runs: AgentRun[] = [];
  let prompt = args.prompt;
  for (const [i, agent] of args.agents.entries()) {
    const session = sessions[i] as SessionView;
    const previous = runs[runs.length - 1];
    if (previous) prompt = handoff(args.handoff, previous.agent, agent, previous.output);
    const run = await runTurn(bosun, session, agent, prompt, args, log);
    if (run.status !== 'completed') {
      throw new RelayError(`${agent}'s turn ${run.turn_id} ended ${run.status}: ${run.reason ?? 'no reason given'}`);
    }
    runs.push(run);
  }

  const summary: RelaySummary = {
    url: bosun.url,
    provider: args.provider,
    agents: runs,
    output: runs[runs.length - 1]?.output ?? '',
  };
  process.stdout.write(args.json ? `${JSON.stringify(summary, null, 2)}\n` : summary.output);
}

main().catch((e: unknown) => {
  if (e instanceof RelayError) {
    if (e.message) process.stderr.write(`relay: ${e.message}\n`);
    process.exitCode ??= 1;
  } else {
    process.stderr.write(`relay: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exitCode = 1;
  }
});
