#!/usr/bin/env python3
"""Relay a task through several Bosun agents, one session each.

The first agent (default "writer") gets the prompt; each next one (default
"reviewer") gets the previous agent's output in its prompt. Each turn's
result is read over the WebSocket: subscribe to `session:<id>` from the log's
head (read from `GET /health` before the turn starts), collect the turn's
`stream:chunk` text until its `turn:completed`, and resubscribe from the last
seq seen whenever the socket drops (a daemon restart included).

Every body and event is a model generated from Bosun's published contract
(bosun_models/, made by gen_models.py from docs/api/*.json): responses and
events are parsed into them, never read by string keys.

    tests/.venv/bin/python examples/scripts/relay.py "Write a haiku about a harbour"
    tests/.venv/bin/python examples/scripts/relay.py --json --agents writer,critic,editor "..."

Needs pydantic 2 and websockets (both pinned in tests/run).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import connect

from bosun_models import api, events

CLIENT = "bosun-relay.py"
DEFAULT_HANDOFF = "The {previous} wrote:\n\n{output}\n\nYou are the {agent}: carry on from there."

# ---- The WebSocket's control frames. They are not in the published schemas
# (docs/PROTOCOL.md, "WebSocket": proto/src/ws.rs `ClientOp` and `Control`),
# so they are written out here; the events they carry are the generated models.


class Subscribe(BaseModel):
    op: Literal["subscribe"] = "subscribe"
    topics: list[str]
    since: int


class Subscribed(BaseModel):
    op: Literal["subscribed"]
    topics: list[str]
    since: int
    head: int


class Unsubscribed(BaseModel):
    op: Literal["unsubscribed"]
    topics: list[str]


class Pong(BaseModel):
    op: Literal["pong"]
    nonce: int | None = None


class Authenticated(BaseModel):
    op: Literal["authenticated"]


class ErrorFrame(BaseModel):
    op: Literal["error"]
    error: api.ErrorDetail


Control = Annotated[Subscribed | Unsubscribed | Pong | Authenticated | ErrorFrame, Field(discriminator="op")]
CONTROL: TypeAdapter[Control] = TypeAdapter(Control)

# ---- What the script reports with --json (relay.ts writes the same shape).


class AgentRun(BaseModel):
    agent: str
    session_id: str
    turn_id: str
    prompt: str
    output: str
    status: events.TurnStatus
    reason: str | None
    usage: events.Usage
    reconnects: int = Field(description="How often the WebSocket was reopened while waiting for this turn.")


class RelaySummary(BaseModel):
    url: str
    provider: str
    agents: list[AgentRun]
    output: str = Field(description="The last agent's output.")


class RelayError(Exception):
    pass


M = TypeVar("M", bound=BaseModel)


class Bosun:
    """The few HTTP calls the relay makes, typed with the generated models."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def _call(self, method: str, path: str, body: BaseModel | None, answer: type[M]) -> M:
        headers = {"X-Bosun-Client": CLIENT, "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = body.model_dump_json(exclude_unset=True).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                text = response.read()
        except urllib.error.HTTPError as e:
            raise self._error(method, path, e.code, e.read()) from None
        except urllib.error.URLError as e:
            raise RelayError(f"{method} {path}: cannot reach {self.url}: {e.reason}") from None
        try:
            return answer.model_validate_json(text)
        except ValidationError as e:
            raise RelayError(
                f"{method} {path}: the answer does not match the models generated from the schemas "
                f"(regenerate them with gen_models.py?): {e}"
            ) from None

    @staticmethod
    def _error(method: str, path: str, status: int, text: bytes) -> RelayError:
        try:
            err = api.ErrorBody.model_validate_json(text).error
        except ValidationError:
            return RelayError(f"{method} {path}: HTTP {status}: {text[:200]!r}")
        return RelayError(f"{method} {path}: {status} {err.code}: {err.message}")

    def health(self) -> api.Health:
        return self._call("GET", "/health", None, api.Health)

    def create_session(self, request: api.CreateSessionRequest) -> api.SessionView:
        return self._call("POST", "/api/v1/sessions", request, api.SessionView)

    def start_turn(self, session_id: str, text: str) -> api.StartTurnResponse:
        path = f"/api/v1/sessions/{urllib.parse.quote(session_id)}/turns"
        return self._call("POST", path, api.StartTurnRequest(text=text), api.StartTurnResponse)

    def ws_url(self) -> str:
        parts = urllib.parse.urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        query = urllib.parse.urlencode({"token": self.token}) if self.token else ""
        return urllib.parse.urlunsplit((scheme, parts.netloc, parts.path + "/ws", query, ""))


class Follower:
    """The events of one topic after `since`, each once and in order, across
    dropped sockets: it resubscribes from the last seq it handed out, and
    skips anything at or below it."""

    def __init__(self, url: str, topic: str, since: int, reconnect_timeout: float, log: Log) -> None:
        self.url = url
        self.topic = topic
        self.last_seq = since
        self.reconnect_timeout = reconnect_timeout
        self.log = log
        self.connections = 0

    def follow(self) -> Iterator[events.BosunEvent]:
        down_since: float | None = None
        delay = 0.1
        while True:
            why = "the daemon closed it"
            try:
                with connect(self.url, open_timeout=10, user_agent_header=CLIENT) as ws:
                    self.connections += 1
                    ws.send(Subscribe(topics=[self.topic], since=self.last_seq).model_dump_json())
                    for text in ws:
                        frame = self.parse(text)
                        if isinstance(frame, ErrorFrame):
                            raise RelayError(f"the daemon refused: {frame.error.code}: {frame.error.message}")
                        if isinstance(frame, Subscribed):
                            down_since, delay = None, 0.1
                        elif isinstance(frame, events.BosunEvent) and frame.root.seq > self.last_seq:
                            self.last_seq = frame.root.seq
                            yield frame
            except InvalidStatus as e:
                if e.response.status_code in (401, 403):
                    raise RelayError(f"the daemon refused the WebSocket: HTTP {e.response.status_code}") from None
                why = str(e)
            except (OSError, TimeoutError, ConnectionClosed, InvalidHandshake) as e:
                why = f"{type(e).__name__}: {e}"
            now = time.monotonic()
            down_since = down_since or now
            if now - down_since > self.reconnect_timeout:
                raise RelayError(f"the WebSocket stayed down for {self.reconnect_timeout:.0f} s ({why})")
            self.log(f"WebSocket down ({why}); resuming after seq {self.last_seq}")
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def parse(self, text: str | bytes) -> Control | events.BosunEvent | None:
        """A frame as its model: a control frame, or an event read by its `type`
        into the generated models; None for a frame these models do not know."""
        try:
            return CONTROL.validate_json(text)
        except ValidationError:
            pass  # not a control frame: an event
        try:
            return events.BosunEvent.model_validate_json(text)
        except ValidationError as e:
            kinds = {error["type"] for error in e.errors()}
            if kinds == {"union_tag_not_found"}:
                self.log(f"ignoring a frame that is neither a control frame nor an event: {text[:200]!r}")
                return None
            if kinds != {"union_tag_invalid"}:
                raise RelayError(
                    f"an event does not match the models generated from the schemas (regenerate them with "
                    f"gen_models.py?): {e}\nframe: {text[:500]!r}"
                ) from None
        # An event of a type newer than these models: keep its seq, skip it.
        unknown = api.Envelope.model_validate_json(text)
        self.log(f"skipping an event of a type these models lack: {unknown.type} (seq {unknown.seq})")
        self.last_seq = max(self.last_seq, unknown.seq)
        return None


class Log:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def __call__(self, line: str) -> None:
        if not self.quiet:
            print(f"relay: {line}", file=sys.stderr, flush=True)

    def stream(self, text: str) -> None:
        if not self.quiet:
            sys.stderr.write(text)
            sys.stderr.flush()


def run_turn(
    bosun: Bosun, session: api.SessionView, agent: str, prompt: str, args: argparse.Namespace, log: Log
) -> AgentRun:
    """Starts a turn and follows it over the WebSocket to its end."""
    head = bosun.health().head_seq
    turn = bosun.start_turn(session.id, prompt)
    log(f"{agent}: turn {turn.turn_id} started in session {session.id}")
    follower = Follower(bosun.ws_url(), f"session:{session.id}", head, args.reconnect_timeout, log)
    text: list[str] = []
    for frame in follower.follow():
        match frame.root:
            case events.BosunEventStreamChunk(data=chunk) if chunk.turn_id == turn.turn_id:
                if chunk.kind is events.ChunkKind.text:
                    text.append(chunk.text)
                    log.stream(chunk.text)
            case events.BosunEventApprovalRequested(data=asked) if asked.approval.turn_id == turn.turn_id:
                log(
                    f"{agent}: waiting for approval {asked.approval.id} "
                    f"(decide it in the web app, or POST /api/v1/approvals/{asked.approval.id})"
                )
            case events.BosunEventTurnCompleted(data=done) if done.turn_id == turn.turn_id:
                output = "".join(text)
                log(f"{agent}: turn {turn.turn_id} {done.status.value}" + (f" ({done.reason})" if done.reason else ""))
                return AgentRun(
                    agent=agent,
                    session_id=session.id,
                    turn_id=turn.turn_id,
                    prompt=prompt,
                    output=output,
                    status=done.status,
                    reason=done.reason,
                    usage=done.usage,
                    reconnects=follower.connections - 1,
                )
            case _:
                pass
    raise RelayError("the event stream ended")  # Follower.follow never ends by itself


def handoff(template: str, previous: str, agent: str, output: str) -> str:
    """The next agent's prompt: `{previous}`, `{agent}` and `{output}` replaced in one pass."""
    values = {"previous": previous, "agent": agent, "output": output.strip()}
    return re.sub(r"\{(previous|agent|output)\}", lambda m: values[m.group(1)], template)


def main() -> int:
    parser = argparse.ArgumentParser(description="Relay a prompt through Bosun agents, one session each.")
    parser.add_argument("prompt", nargs="?", default="Write a short poem about a harbour at dawn.")
    parser.add_argument(
        "--url",
        default=os.environ.get("BOSUN_URL", "http://127.0.0.1:7878"),
        help="the daemon (default $BOSUN_URL or http://127.0.0.1:7878)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("BOSUN_TOKEN"),
        help="a device token, where the daemon asks for one (default $BOSUN_TOKEN)",
    )
    parser.add_argument(
        "--provider", default="demo", help="the provider of every session (default: demo, the built-in scripted agent)"
    )
    parser.add_argument(
        "--agents",
        default="writer,reviewer",
        help="comma-separated agent names, one session each, in relay order (default: writer,reviewer)",
    )
    parser.add_argument("--cwd", help="the sessions' working directory (default: the daemon's)")
    parser.add_argument(
        "--policy",
        choices=[p.value for p in api.Policy],
        help="the sessions' policy (default: the daemon's, plan-only)",
    )
    parser.add_argument(
        "--handoff", default=DEFAULT_HANDOFF, help="the next agent's prompt, with {previous}, {agent} and {output}"
    )
    parser.add_argument(
        "--reconnect-timeout",
        type=float,
        default=60.0,
        help="seconds to keep retrying a dropped WebSocket (default 60)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary instead of the last output")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args()

    agents = [name.strip() for name in args.agents.split(",") if name.strip()]
    if len(agents) < 2:
        parser.error("--agents needs at least two names")
    log = Log(args.quiet)
    bosun = Bosun(args.url, args.token)
    try:
        health = bosun.health()
        log(f"daemon {health.version} at {bosun.url}, head seq {health.head_seq}")
        sessions: list[api.SessionView] = []
        for agent in agents:
            request = api.CreateSessionRequest(provider=args.provider, title=f"relay: {agent}")
            if args.cwd:
                request.cwd = os.path.abspath(args.cwd)
            if args.policy:
                request.policy = api.Policy(args.policy)
            session = bosun.create_session(request)
            log(f"{agent}: session {session.id} ({session.provider}, {session.policy.value})")
            sessions.append(session)

        runs: list[AgentRun] = []
        prompt = args.prompt
        for i, (agent, session) in enumerate(zip(agents, sessions)):
            if i > 0:
                prompt = handoff(args.handoff, agents[i - 1], agent, runs[-1].output)
            run = run_turn(bosun, session, agent, prompt, args, log)
            if run.status is not events.TurnStatus.completed:
                raise RelayError(
                    f"{agent}'s turn {run.turn_id} ended {run.status.value}: {run.reason or 'no reason given'}"
                )
            runs.append(run)
    except RelayError as e:
        print(f"relay: {e}", file=sys.stderr)
        return 1

    summary = RelaySummary(url=bosun.url, provider=args.provider, agents=runs, output=runs[-1].output)
    if args.json:
        print(summary.model_dump_json(indent=2))
    else:
        sys.stdout.write(summary.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
