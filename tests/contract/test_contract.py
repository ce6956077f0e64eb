"""OpenAPI contract check (EXTENSIONS X1): schemathesis generates requests from execd's own
OpenAPI document as the live binary serves it (`GET /openapi.json`, kept in docs/openapi.json):
the document's examples, the coverage phase, then positive and negative fuzzing, all sent to that
binary. The document is first checked to be valid OpenAPI 3.1 (openapi-spec-validator).

Not fuzzed, with the reason (EXCLUDED below): `/metrics/watch` streams forever (fixed-input test
below); `/pty/{id}/ws` needs a WebSocket (tests/integration/pty.rs); `/proxy/{port}...` forwards to whatever
listens on a local port (tests/integration/proxy.rs and the SDK suite's pass through the proxy). The
`/v1/filesystem/{uid}/{gid}/...` operations are skipped only while the binary does not route them.

Isolated sessions (`/v1/isolated/*`): each create builds namespaces and a shell, so `POST
/v1/isolated/session` gets few examples and no coverage phase (ISOLATED_CREATE_EXAMPLES), its body
is rebuilt from safe keys with mounts in the scratch tree, and every session it creates is deleted
at once (test_zz checks none is left). Half the `{sid}` values are a real session (overlay over the
scratch tree), never for DELETE of the session; runs are `echo x`. The file routes share the rules
of the routes without the prefix.

Every response must hold:
  * a request without the right token gets a JSON 401 (negative mode drops the header);
  * a method the path does not have gets a JSON 404 (no 405, §2.6); a spec route is never answered
    by the router's fallback 404 (that means "route not served");
  * no 5xx, except a `RUNTIME_ERROR` 500 where the reference documents one (REFERENCE_EXCEPTIONS);
    never a panic, never a 502/503/504;
  * the status is one the spec documents for the operation (or listed in REFERENCE_EXCEPTIONS;
    400 is always accepted for negative cases);
  * every error response is JSON `{code: str, message: str}`;
  * every 2xx JSON response matches the spec's schema; an empty 200 has `Content-Length: 0`;
    downloads carry Content-Length/Content-Range/Content-Disposition; logs carry the cursor;
  * every event stream is bare `{json}\\n\\n` frames matching `ServerStreamEvent`, with one
    terminal event;
and afterwards the daemon still answers `/ping`. `/metrics/watch` and `/files/upload` (whose valid
multipart layout fuzzing cannot produce) also get fixed-input tests.

SAFETY: execd runs as root and does what it is told. Every request is rewritten before it is sent
(`make_safe`): each path in a query or body is mapped into the scratch tree, bodies are rebuilt
from known keys only (Go-style case-insensitive keys could otherwise smuggle a second value), and
every command/code/session body runs `echo x`.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings

import contract_server
from contract_stats import STATS

REPO_ROOT = Path(__file__).resolve().parents[2]
REPO_DOCUMENT = REPO_ROOT / "docs" / "openapi.json"
MAX_EXAMPLES = int(os.environ.get("CONTRACT_MAX_EXAMPLES", "60"))
REQUEST_TIMEOUT_S = 30
PANIC_TEXT = "panicked"

# ---------------------------------------------------------------------------------------------
# Statuses the reference (or a decision) produces that the document does not list for the
# operation, and the operations where the reference documents a RUNTIME_ERROR 500. Operations of
# `/v1/filesystem/{uid}/{gid}/...` use the entries of the route without the prefix (`base_op`).
# ONE list: (operation, kind, value, section, note).
#   kind "status": a status the reference (or a decision) produces that the YAML does not list;
#   kind "500":    a RUNTIME_ERROR 500 the reference documents for this operation;
#   kind "schema": a 2xx body that differs from the YAML schema;
#   kind "note":   a documented disagreement this check does not need to special-case.
# ---------------------------------------------------------------------------------------------
REFERENCE_EXCEPTIONS: list[tuple[str, str, object, str, str]] = [
    ("(any)", "status", 404, "§2.6", "a method the path does not have -> 404 (no 405)"),
    ("POST /files/replace", "status", 404, "§7.7, C130", "missing file -> 404 FILE_NOT_FOUND"),
    ("POST /files/replace", "schema", "empty-200", "§7.7, §2.4", "non-verbose 200 has an empty body"),
    ("POST /directories", "status", 404, "§7.11", "'does not exist' errors -> 404"),
    ("DELETE /directories", "status", 400, "DECISIONS D32", "a path resolving to / is refused"),
    ("DELETE /files", "status", 400, "DECISIONS D32", "a path resolving to / is refused"),
    ("GET /files/info", "status", 400, "§2.9, C120", "unresolvable path expansion is a non-2xx"),
    ("POST /files/upload", "status", 507, "DECISIONS D33", "ENOSPC/EDQUOT -> 507"),
    ("POST /session/{sessionId}/run", "status", 409, "DECISIONS D21", "serialised runs waited too long"),
    ("GET /code/contexts/{context_id}", "status", 400, "§17.15", "handler 400 branches"),
    ("DELETE /files", "500", None, "§7.3, C121", "a directory path -> 500"),
    ("GET /files/info", "500", None, "§7.2", "errors other than 'missing' -> 500"),
    ("POST /files/permissions", "500", None, "§7.4, C122", "missing path or non-octal mode -> 500"),
    ("POST /files/mv", "500", None, "§7.5, C125", "dest exists / EXDEV -> 500"),
    ("GET /files/search", "500", None, "§7.6", "invalid pattern or walk error -> 500"),
    ("POST /files/replace", "500", None, "§7.7", "non-file or unreadable path -> 500"),
    ("POST /files/upload", "500", None, "§7.8", "write/chmod/chown failure -> 500"),
    ("PUT /files/content", "500", None, "X34", "mkdir/write/rename failure -> 500, as the multipart upload"),
    ("POST /files/tus", "500", None, "X33", "mkdir/create failure -> 500, as the multipart upload"),
    ("GET /files/download", "500", None, "§7.9", "open errors other than 'missing' -> 500"),
    ("GET /directories/list", "500", None, "§7.10", "read error -> 500"),
    ("POST /directories", "500", None, "§7.11", "existing file at the path -> 500"),
    ("DELETE /directories", "500", None, "§7.12", "removal failure -> 500"),
    ("DELETE /command", "500", None, "§4.10, C45", "unknown or finished id -> 500"),
    ("DELETE /code", "500", None, "§4.10, C45", "same handler as DELETE /command"),
    ("POST /session", "500", None, "§5.1", "cwd expansion or mkdir error -> 500"),
    ("POST /session/{sessionId}/run", "500", None, "§5.2, C81", "unknown session -> 500"),
    ("POST /code", "500", None, "§6, C91, C92", "no Jupyter / unknown language -> 500"),
    ("POST /code/context", "500", None, "§6.3, C93, D50", "no Jupyter -> bounded 500"),
    ("GET /code/contexts", "500", None, "§6.3, C102", "language=command or no Jupyter -> 500"),
    ("DELETE /code/contexts", "500", None, "§6.3", "no Jupyter -> 500"),
    ("GET /code/contexts/{context_id}", "500", None, "§6.3", "no Jupyter -> 500"),
    ("DELETE /code/contexts/{context_id}", "500", None, "§6.3", "no Jupyter -> 500"),
    ("GET /metrics", "500", None, "§8.1", "collection error -> 500"),
    ("POST /pty", "500", None, "§11.1", "cwd expansion or mkdir error -> 500"),
    ("GET /command/{id}/events", "500", None, "DECISIONS D11", "journal read error -> 500"),
    ("GET /command/{id}/logs", "note", None, "§17.2, §17.3", "cursor/header are byte offsets; unknown id -> 400"),
    ("GET /command/status/{id}", "note", None, "§17.4", "unknown id -> 404 with code INVALID_REQUEST_BODY"),
    ("POST /files/mv", "note", None, "§17.5", "destination parents are created"),
    ("POST /files/permissions", "note", None, "§17.6", "mode 0/absent means no chmod"),
    ("GET /metrics/watch", "note", None, "§17.8, D40", "bare JSON lines, not SSE; tested in test_metrics_watch"),
    ("GET /code/contexts", "note", None, "§17.1", "language is optional"),
    ("(security)", "note", None, "§17.11", "the token is optional; this run configures one"),
]


IDENTITY_PREFIX = "/v1/filesystem/{uid}/{gid}"
ISOLATED_PREFIX = "/v1/isolated/session/{sid}"
ISOLATED_FILE_RE = re.compile(r"^/v1/isolated/session/\{sid\}(/files|/directories)")
ISOLATED_CREATE = "POST /v1/isolated/session"
ISOLATED_CREATE_EXAMPLES = 4


def base_op(op: str) -> str:
    """`GET /v1/filesystem/{uid}/{gid}/files/info` -> `GET /files/info`: the per-identity routes
    behave as the route without the prefix (plus 403), so they share its rules here; likewise the
    file routes of an isolated session (plus 403/404/409/503)."""
    method, _, path = op.partition(" ")
    if path.startswith(IDENTITY_PREFIX + "/"):
        return f"{method} {path[len(IDENTITY_PREFIX):]}"
    if ISOLATED_FILE_RE.match(path):
        return f"{method} {path[len(ISOLATED_PREFIX):]}"
    return op


def _exceptions(op: str, kind: str) -> list:
    op = base_op(op)
    return [v for (o, k, v, _s, _n) in REFERENCE_EXCEPTIONS if o == op and k == kind]


# ---------------------------------------------------------------------------------------------
# Schema and generation config
# ---------------------------------------------------------------------------------------------
CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {
            "mode": "all",
            "max-examples": MAX_EXAMPLES,
            "database": "none",
            "deterministic": True,
        },
        "phases": {
            "examples": {"enabled": True},
            "coverage": {"enabled": os.environ.get("CONTRACT_COVERAGE", "1") != "0"},
            "fuzzing": {"enabled": True},
            "stateful": {"enabled": False},
        },
        "request-timeout": REQUEST_TIMEOUT_S,
        # Each create starts namespaces and a shell: a handful, no coverage phase.
        "operations": [
            {
                "include-operation-id": "createIsolatedSession",  # one filter: includes are OR-ed
                "generation": {"max-examples": ISOLATED_CREATE_EXAMPLES},
                "phases": {"coverage": {"enabled": False}},
            }
        ],
    }
)
# (path regex, reason): operations not fuzzed.
EXCLUDED = [
    (r"^/metrics/watch$", "streams until the client goes away; test_metrics_watch checks it"),
    (r"^/pty/\{id\}/ws$", "a WebSocket; tests/integration/pty.rs drives it"),
    (r"^/proxy/\{port\}", "forwards to whatever listens on a local port; tests/integration/proxy.rs and the SDK suite's proxy pass"),
]


# tus chunks (X33) are raw bytes under their own media type.
schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")

# The document as the live binary serves it (schemathesis needs it while pytest collects).
SERVER = contract_server.running()
schema = schemathesis.openapi.from_url(SERVER.base_url + "/openapi.json", config=CONFIG, headers=SERVER.headers())
for _pattern, _reason in EXCLUDED:
    schema = schema.exclude(path_regex=_pattern)
RAW_SPEC = schema.raw_schema


@pytest.fixture(scope="session")
def raw_document() -> dict:
    return RAW_SPEC


# ---------------------------------------------------------------------------------------------
# Making requests safe: everything lands in the scratch tree, every command is `echo x`
# ---------------------------------------------------------------------------------------------
class Scratch:
    """The only place fuzzed requests may touch: fixed fixtures plus names derived from input."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._turn = itertools.count()

    def reset(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "dir" / "sub").mkdir(parents=True, exist_ok=True)
        for p, text in [
            (self.root / "a.txt", "foo bar foo\n"),
            (self.root / "dir" / "b.txt", "hello\n"),
            (self.root / "dir" / "sub" / "c.log", "log\n"),
        ]:
            if not p.is_file():
                p.write_text(text)

    def path(self, value: object) -> str:
        """Maps any generated value to a path strictly inside the scratch root."""
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        bucket = next(self._turn) % 4  # round robin: fixtures and derived names alike
        if bucket == 0:
            return str(self.root / "a.txt")
        if bucket == 1:
            return str(self.root / "dir")
        name = re.sub(r"[^A-Za-z0-9_-]", "_", text)[:40]
        # "f_" prefix: never empty, never "." or "..", never one of the fixtures above.
        return str(self.root / f"f_{name}" / ("g" if bucket == 3 else ""))


SAFE_COMMAND = "echo x"
SAFE_ARGV = ["echo", "x"]


def _only(d: dict, keys: tuple[str, ...]) -> dict:
    return {k: d[k] for k in keys if k in d}


def _isolated_safe(case, scratch: Scratch, real_isolated: str) -> None:
    """Isolated routes: a real session for half the `{sid}` values (never to delete it), safe
    create and run bodies."""
    op = case.operation.label
    pp = case.path_parameters if isinstance(case.path_parameters, dict) else {}
    sid = pp.get("sid")
    if isinstance(sid, str) and len(sid) % 2 == 0 and op != "DELETE /v1/isolated/session/{sid}":
        pp["sid"] = real_isolated
    body = case.body
    if op == ISOLATED_CREATE and isinstance(body, dict):
        new = _only(body, ("profile", "share_net", "uid_mode", "idle_timeout_seconds"))
        for key in ("workspace",):
            if isinstance(body.get(key), dict):
                w = _only(body[key], ("mode",))
                w["path"] = str(scratch.root)  # a directory that exists; mode as generated
                new[key] = w
            elif key in body:
                new[key] = body[key]
        if isinstance(body.get("overlays"), list):
            new["overlays"] = [
                {**_only(o, ("mode", "persist")), "path": str(scratch.root)} if isinstance(o, dict) else o
                for o in body["overlays"][:2]
            ]
        elif "overlays" in body:
            new["overlays"] = body["overlays"]
        if isinstance(body.get("env_passthrough"), dict):
            new["env_passthrough"] = _only(body["env_passthrough"], ("mode",))
        elif "env_passthrough" in body:
            new["env_passthrough"] = body["env_passthrough"]
        # extra_writable / binds: scratch paths (outside the allowlist -> 400), wrong types kept.
        for key in ("extra_writable", "binds"):
            if isinstance(body.get(key), list):
                new[key] = [str(scratch.root)] if key == "extra_writable" else [{"source": str(scratch.root), "readonly": True}]
            elif key in body:
                new[key] = body[key]
        case.body = new
    elif op == "POST /v1/isolated/session/{sid}/run" and isinstance(body, dict):
        new = {"code": SAFE_COMMAND}
        for key in ("timeout_seconds", "background"):
            if key in body:
                new[key] = body[key]
        if "envs" in body:
            envs = body["envs"]
            new["envs"] = (
                {f"FUZZ_{i}": v for i, v in enumerate(list(envs.values())[:3])} if isinstance(envs, dict) else envs
            )
        case.body = new


def make_safe(case, scratch: Scratch, real_session: str, real_isolated: str = "") -> None:
    if case.operation.path.startswith("/v1/isolated/"):
        _isolated_safe(case, scratch, real_isolated)
    op = base_op(case.operation.label)
    q = case.query if isinstance(case.query, dict) else {}

    # Path-bearing query parameters of the filesystem routes.
    if "path" in q and (
        op.startswith("GET /files") or op.startswith("DELETE /files") or op == "PUT /files/content" or "/directories" in op
    ):
        v = q["path"]
        q["path"] = [scratch.path(x) for x in v] if isinstance(v, list) else scratch.path(v)
    elif op in {"GET /files/info", "DELETE /files", "DELETE /directories", "GET /files/search",
                "GET /files/download", "GET /directories/list"}:
        q.pop("path", None)

    # tus creation (X33): the target is the base64 `path` of Upload-Metadata.
    h = case.headers if isinstance(case.headers, dict) else {}
    if op == "POST /files/tus" and "Upload-Metadata" in h:
        target = scratch.path(h["Upload-Metadata"]).encode()
        h["Upload-Metadata"] = "path " + base64.b64encode(target).decode()

    body = case.body
    if op in {"POST /files/permissions", "POST /directories"} and isinstance(body, dict):
        case.body = {
            scratch.path(k): (_only(v, ("owner", "group", "mode")) if isinstance(v, dict) else v)
            for k, v in body.items()
        }
    elif op == "POST /files/replace" and isinstance(body, dict):
        case.body = {
            scratch.path(k): (_only(v, ("old", "new")) if isinstance(v, dict) else v) for k, v in body.items()
        }
    elif op == "POST /files/mv" and isinstance(body, dict):
        case.body = {"not": "a list"}  # negative: keep it a wrong type, drop any src/dest keys
    elif op == "POST /files/mv" and isinstance(body, list):
        items = []
        for item in body:
            if isinstance(item, dict):
                item = {k: scratch.path(item[k]) for k in ("src", "dest") if k in item}
            items.append(item)
        case.body = items
    elif op == "POST /files/upload" and isinstance(body, dict):
        new = {k: body[k] for k in ("file",) if k in body}
        if "metadata" in body:
            meta = body["metadata"]
            if isinstance(meta, (bytes, bytearray)):
                meta = meta.decode("utf-8", "replace")
            parsed = meta
            if isinstance(meta, str):
                try:
                    parsed = json.loads(meta)
                except ValueError:
                    parsed = None  # not JSON: sent as generated, the server rejects it
            if isinstance(parsed, dict):
                parsed = _only(parsed, ("path", "owner", "group", "mode"))
                if "path" in parsed:
                    parsed["path"] = scratch.path(parsed["path"])
                meta = json.dumps(parsed)
            elif parsed is not None:
                meta = "{}"
            new["metadata"] = meta
        case.body = new
    elif op == "POST /command" and isinstance(body, dict):
        new = _only(body, ("background", "timeout", "uid", "gid"))
        # One of the two forms, as generated (both or neither is a 400 before anything runs).
        if "argv" in body:
            new["argv"] = SAFE_ARGV if isinstance(body["argv"], list) and body["argv"] else body["argv"]
        if "command" in body or "argv" not in body:
            new["command"] = SAFE_COMMAND if isinstance(body.get("command", ""), str) else body["command"]
        if "cwd" in body:
            new["cwd"] = scratch.path(body["cwd"]) if isinstance(body["cwd"], str) else body["cwd"]
        if "envs" in body:
            envs = body["envs"]
            # Fixed harmless names: a fuzzed BASH_ENV / LD_PRELOAD could make bash load a file.
            new["envs"] = (
                {f"FUZZ_{i}": v for i, v in enumerate(list(envs.values())[:3])} if isinstance(envs, dict) else envs
            )
        case.body = new
    elif op == "POST /session" and isinstance(body, dict):
        new = {}
        if "cwd" in body:  # POST /session creates its cwd (mkdir -p, §5.1)
            new["cwd"] = scratch.path(body["cwd"]) if isinstance(body["cwd"], str) else body["cwd"]
        case.body = new
    elif op == "POST /session/{sessionId}/run":
        if isinstance(body, dict):
            new = _only(body, ("timeout",))
            new["command"] = SAFE_COMMAND
            if isinstance(body.get("cwd"), str):
                new["cwd"] = scratch.path(body["cwd"])
            case.body = new
        sid = case.path_parameters.get("sessionId") if case.path_parameters else None
        if isinstance(sid, str) and len(sid) % 2 == 0:
            case.path_parameters["sessionId"] = real_session
    elif op == "POST /code" and isinstance(body, dict):
        new = {"code": SAFE_COMMAND}
        if isinstance(body.get("context"), dict):
            new["context"] = _only(body["context"], ("id", "language"))
        elif "context" in body:
            new["context"] = body["context"]
        case.body = new
    elif op == "POST /code/context" and isinstance(body, dict):
        case.body = _only(body, ("language",))
    elif op == "POST /pty" and isinstance(body, dict):
        new = {}
        if "cwd" in body:  # POST /pty creates its cwd (mkdir -p, §11.1)
            new["cwd"] = scratch.path(body["cwd"]) if isinstance(body["cwd"], str) else body["cwd"]
        if "command" in body:  # runs only once a WebSocket attaches, which never happens here
            new["command"] = SAFE_COMMAND if isinstance(body["command"], str) else body["command"]
        case.body = new
    # Any other body shape (a list where an object is expected, a string, ...) is a wrong type that
    # the server rejects before doing anything.


# ---------------------------------------------------------------------------------------------
# Response checks
# ---------------------------------------------------------------------------------------------
TERMINAL = {"execution_complete", "error"}
# Paths routed with axum's `any` (every method): the proxy without a port.
ANY_METHOD_PATHS = {"/proxy/"}
STREAM_OPS = {"POST /command", "POST /session/{sessionId}/run", "POST /code", "POST /v1/isolated/session/{sid}/run"}


def hdr(resp, name: str) -> str:
    """A response header (schemathesis keeps header values as lists)."""
    for k, v in resp.headers.items():
        if k.lower() == name.lower():
            return v[0] if isinstance(v, list) else v
    return ""


def _error_shape(op: str, resp) -> None:
    ctype = hdr(resp, "content-type")
    assert ctype.startswith("application/json"), f"{op}: error {resp.status_code} is not JSON ({ctype!r}): {resp.text[:300]!r}"
    body = resp.json()
    assert isinstance(body, dict), f"{op}: error body is not an object: {body!r}"
    assert isinstance(body.get("code"), str) and body["code"], f"{op}: error body without code: {body!r}"
    assert isinstance(body.get("message"), str), f"{op}: error body without message: {body!r}"


def _check_stream(op: str, resp) -> None:
    assert hdr(resp, "content-type").split(";")[0] == "text/event-stream", resp.headers
    raw = resp.content.decode("utf-8")
    frames = [f for f in raw.split("\n\n") if f.strip()]
    assert frames, f"{op}: empty event stream"
    events = []
    for f in frames:
        assert "\n" not in f.strip(), f"{op}: an event spans lines: {f!r}"
        line = f.strip()
        if line.startswith("data:"):
            line = line[5:].strip()
        ev = json.loads(line)
        assert isinstance(ev, dict), ev
        assert isinstance(ev.get("type"), str), f"{op}: event without type: {ev!r}"
        assert isinstance(ev.get("timestamp"), int), f"{op}: event without integer timestamp: {ev!r}"
        events.append(ev)
    validator = _stream_validator()
    for ev in events:
        errors = list(validator.iter_errors(ev))
        assert not errors, f"{op}: event {ev!r} violates ServerStreamEvent: {errors[0]}"
    kinds = [e["type"] for e in events if e["type"] != "ping"]
    assert kinds and kinds[0] == "init", f"{op}: first event is not init: {kinds}"
    assert kinds[-1] in TERMINAL, f"{op}: stream does not end with a terminal event: {kinds}"
    if op != "POST /code":  # §3.4: Jupyter may send both error and complete
        assert sum(k in TERMINAL for k in kinds) == 1, f"{op}: not exactly one terminal event: {kinds}"


_VALIDATOR = None


def _with_components(sub: dict) -> dict:
    """A component schema with the document's components beside it, so that its
    `#/components/schemas/...` references (e.g. `Usage`) resolve."""
    return {**sub, "components": RAW_SPEC["components"]}


def _stream_validator():
    global _VALIDATOR
    if _VALIDATOR is None:
        import jsonschema_rs

        _VALIDATOR = jsonschema_rs.validator_for(_with_components(RAW_SPEC["components"]["schemas"]["ServerStreamEvent"]))
    return _VALIDATOR


def check_response(case, resp, token: str) -> None:
    op = base_op(case.operation.label)
    status = resp.status_code
    sent = {k.lower(): v for k, v in resp.request.headers.items()}.get("x-execd-access-token")
    if resp.request.method.upper() == "HEAD":
        # No body to check: the status, and errors are still declared as JSON.
        documented = {int(s) for s in case.operation.definition.raw["responses"] if s.isdigit()}
        want = {401} if sent != token else documented | {400, 404}
        runtime = status == 500 and sent == token and _exceptions(op, "500")
        assert status in want and status < 500 or runtime, f"{op}: HEAD answered {status}"
        if status >= 400:
            assert hdr(resp, "content-type").startswith("application/json"), resp.headers
        return
    if sent != token:
        # Negative mode drops or alters the security header: §2.2 / D5 / D60, nothing is exempt.
        assert status == 401, f"{op}: {status} without a valid token (sent {sent!r}): {resp.text[:200]!r}"
        _error_shape(op, resp)
        return
    documented = {int(s) for s in case.operation.definition.raw["responses"] if s.isdigit()}
    meta = case.meta
    negative = meta is not None and any(meta.is_negative_at(loc) for loc in meta.components)

    # 1. No 5xx, except a documented RUNTIME_ERROR 500 (or a listed status such as 507, D33).
    if status >= 500:
        assert status == 500 or status in _exceptions(op, "status"), f"{op}: {status} {resp.text[:300]!r}"
        _error_shape(op, resp)
        body = resp.json()
        assert PANIC_TEXT not in body["message"], f"{op}: handler panicked: {body!r}"
        if status == 500:
            assert _exceptions(op, "500"), f"{op}: 500 where the reference documents none: {body!r}"
            assert body["code"] == "RUNTIME_ERROR", f"{op}: 500 with code {body['code']!r}"

    if resp.request.method.upper() != case.operation.method.upper() and case.operation.path in ANY_METHOD_PATHS:
        # Routed for every method, also those OpenAPI cannot name (QUERY, CONNECT): same answer.
        assert status in documented, f"{op}: {resp.request.method} answered {status}: {resp.text[:200]!r}"
        _error_shape(op, resp)
        return
    if resp.request.method.upper() != case.operation.method.upper():
        # Coverage phase: a method the path does not have. No 405 upstream (§2.6): a JSON 404.
        assert status == 404, f"{op}: {resp.request.method} answered {status}: {resp.text[:200]!r}"
        _error_shape(op, resp)
        return
    if status == 404 and "json" in hdr(resp, "content-type"):
        assert resp.json().get("code") != "NOT_FOUND", (
            f"{op}: route not served (router fallback 404): {resp.request.method} {resp.request.url}"
        )

    # 2. The status is documented (or excepted); 400 is fine for negative input.
    if status not in documented and status not in _exceptions(op, "status"):
        assert status == 400 and negative, f"{op}: undocumented status {status}: {resp.text[:300]!r}"
    assert status != 401, f"{op}: 401 although the token was sent"

    # 3. Every error response is {code, message}.
    if status >= 400:
        _error_shape(op, resp)
        return

    # 4. 2xx bodies.
    if op in STREAM_OPS and status == 200:
        _check_stream(op, resp)
        return
    if op == "GET /files/download" and hdr(resp, "content-type").startswith("text/plain"):
        # A line range (`offset`/`limit`, upstream 1.0.19): streamed text, no attachment headers.
        assert status == 200 and hdr(resp, "content-type") == "text/plain; charset=utf-8", resp.headers
        assert not hdr(resp, "content-disposition"), resp.headers
        return
    if op == "GET /files/download":
        assert hdr(resp, "content-length") == str(len(resp.content)), f"{op}: Content-Length mismatch"
        assert hdr(resp, "content-type") == "application/octet-stream", resp.headers
        if status == 206:
            assert re.fullmatch(r"bytes \d+-\d+/\d+", hdr(resp, "content-range")), resp.headers
        else:
            assert hdr(resp, "content-disposition").startswith("attachment; filename="), resp.headers
        return
    if op == "GET /command/{id}/logs":
        assert hdr(resp, "execd-commands-tail-cursor").isdigit(), resp.headers  # §4.9, §14.4.10
        return
    if op == "GET /v1/isolated/session/{sid}/runs/{rid}/logs":
        assert hdr(resp, "execd-isolated-tail-cursor").isdigit(), resp.headers  # ISOLATED.md I20
        return
    content = (case.operation.definition.raw["responses"].get(str(status)) or {}).get("content")
    if not resp.content:
        # A 204 (tus, X33) has no Content-Length at all (RFC 9110 §8.6).
        assert status == 204 or hdr(resp, "content-length") == "0", f"{op}: empty {status} without Content-Length: 0"
        assert not content or _exceptions(op, "schema"), f"{op}: empty body where the spec defines one"
        return
    if content and any("json" in media for media in content):
        case.operation.validate_response(resp, case=case)


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------
ROOT_BEFORE = set(os.listdir("/"))


@pytest.fixture(scope="module")
def scratch(execd) -> Scratch:
    s = Scratch(execd.scratch / "fuzz")
    s.reset()
    return s


@pytest.fixture(scope="module")
def http(execd):
    with requests.Session() as sess:
        sess.headers.update(execd.headers())
        yield sess


@pytest.fixture(scope="module")
def real_session(execd, http) -> str:
    r = http.post(execd.base_url + "/session", json={}, timeout=REQUEST_TIMEOUT_S)
    if r.status_code != 200:
        return "00000000-0000-4000-8000-000000000000"
    return r.json()["session_id"]


@pytest.fixture(scope="module")
def real_isolated(execd, http, scratch) -> str:
    """An isolated session with an overlay over the scratch tree, or a made-up id where isolation
    is unavailable (every isolated route then answers 503, which the document lists)."""
    r = http.post(execd.base_url + "/v1/isolated/session",
                  json={"workspace": {"path": str(scratch.root), "mode": "overlay"}}, timeout=REQUEST_TIMEOUT_S)
    if r.status_code != 201:
        return "00000000-0000-4000-8000-000000000000"
    return r.json()["session_id"]


@pytest.fixture(scope="module")
def served_ops(execd, http) -> dict:
    """Per path prefix pending on another branch: whether this binary routes it (a request that
    the router answers with its own 404 `NOT_FOUND` means no)."""
    r = http.get(execd.base_url + "/v1/filesystem/0/0/files/info", params={"path": "/"}, timeout=REQUEST_TIMEOUT_S)
    routed = not (r.status_code == 404 and r.headers.get("content-type", "").startswith("application/json")
                  and r.json().get("code") == "NOT_FOUND")
    return {IDENTITY_PREFIX: routed}


def test_x1_served_document_is_valid_openapi_and_the_repository_file(raw_document):
    from openapi_spec_validator import validate

    validate(raw_document)
    assert raw_document["openapi"].startswith("3.1")
    assert raw_document == json.loads(REPO_DOCUMENT.read_text()), "served /openapi.json differs from docs/openapi.json"


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), database=None, print_blob=True)
def test_contract(case, execd, scratch, http, real_session, real_isolated, served_ops):
    path = case.operation.path
    if path.startswith(IDENTITY_PREFIX + "/") and not served_ops[IDENTITY_PREFIX]:
        pytest.skip(f"{IDENTITY_PREFIX}/... is documented but not routed by this binary (pending branch)")
    scratch.reset()
    make_safe(case, scratch, real_session, real_isolated)
    case.headers = {**(case.headers or {}), **execd.headers()}
    resp = case.call(base_url=execd.base_url, session=http, timeout=REQUEST_TIMEOUT_S)
    if case.operation.label == ISOLATED_CREATE and resp.status_code == 201:
        # Never leave a fuzzed session behind (namespaces, a shell, an upper layer).
        sid = resp.json()["session_id"]
        gone = http.delete(f"{execd.base_url}/v1/isolated/session/{sid}", timeout=REQUEST_TIMEOUT_S)
        assert gone.status_code == 200, f"created session {sid} could not be deleted: {gone.text[:300]!r}"
    STATS[case.operation.label][resp.status_code] += 1
    check_response(case, resp, execd.token)


def test_metrics_watch(execd, http, raw_document):
    """`/metrics/watch` (§8.2, §17.8, D40): 200 event stream, first frame within 5 s is a Metrics
    object; the stream is left open by the server until we close it."""
    started = time.monotonic()
    with http.get(execd.base_url + "/metrics/watch", stream=True, timeout=(5, 10)) as r:
        assert r.status_code == 200, r.text[:300]
        assert r.headers.get("content-type", "").split(";")[0] == "text/event-stream"
        line = b""
        for chunk in r.iter_lines():
            if chunk.strip():
                line = chunk
                break
            assert time.monotonic() - started < 10
        assert time.monotonic() - started < 5, "no metrics frame within 5 s"
    text = line.decode()
    if text.startswith("data:"):
        text = text[5:].strip()
    m = json.loads(text)
    import jsonschema_rs

    errors = list(jsonschema_rs.validator_for(_with_components(raw_document["components"]["schemas"]["Metrics"])).iter_errors(m))
    assert not errors, f"watch frame {m!r} violates Metrics: {errors[0]}"


def test_upload_fixed_inputs(execd, http, scratch):
    """`POST /files/upload` with fixed, safe inputs (fuzzing cannot produce a valid multipart
    layout: the metadata part must be a *file* part, §7.8): success and the C112 error codes."""
    url = execd.base_url + "/files/upload"
    target = scratch.root / "upload" / "ok.txt"
    meta = ("metadata", json.dumps({"path": str(target), "mode": 644}), "application/json")

    r = http.post(url, files=[("metadata", meta), ("file", ("ok.txt", b"hello execd\n", "text/plain"))])
    assert r.status_code == 200, r.text
    assert r.content == b"" and r.headers.get("content-length") == "0"
    assert target.read_bytes() == b"hello execd\n"

    cases = [
        # metadata as a plain field (no filename) -> invisible -> "metadata file is missing"
        ({"data": {"metadata": json.dumps({"path": str(target)})}, "files": [("file", ("f", b"x"))]},
         "INVALID_FILE_METADATA"),
        ({"files": [("metadata", meta)]}, "INVALID_FILE_CONTENT"),
        ({"files": [("metadata", meta), ("metadata", meta), ("file", ("f", b"x"))]}, "INVALID_FILE"),
        ({"data": b"not multipart", "headers": {"Content-Type": "text/plain"}}, "INVALID_FILE"),
        ({"files": [("metadata", ("metadata", json.dumps({"path": ""}), "application/json")),
                    ("file", ("f", b"x"))]}, "INVALID_FILE_METADATA"),
    ]
    for kwargs, code in cases:
        r = http.post(url, timeout=REQUEST_TIMEOUT_S, **kwargs)
        assert r.status_code == 400, (code, r.status_code, r.text)
        body = r.json()
        assert body.get("code") == code and isinstance(body.get("message"), str), (code, body)


def test_zz_daemon_survived_fuzzing(execd, scratch, http, real_isolated):
    """Runs last (file order): the daemon still answers /ping and is the same process."""
    assert execd.alive(), execd.log()[-3000:]
    assert execd.ping(timeout=5), "execd does not answer /ping after the contract run"
    # No fuzzed isolated session was left behind: at most the fixture's, which is deleted here.
    r = http.get(execd.base_url + "/v1/isolated/sessions", timeout=REQUEST_TIMEOUT_S)
    if r.status_code == 200:
        left = {s["session_id"] for s in r.json()["sessions"]}
        assert left <= {real_isolated}, f"isolated sessions left behind: {left - {real_isolated}}"
        if real_isolated in left:
            d = http.delete(f"{execd.base_url}/v1/isolated/session/{real_isolated}", timeout=REQUEST_TIMEOUT_S)
            assert d.status_code == 200, d.text[:300]
        assert http.get(execd.base_url + "/v1/isolated/sessions", timeout=REQUEST_TIMEOUT_S).json()["sessions"] == []
    # Spot checks that fuzzed paths stayed in the scratch tree: it survived, and nothing new
    # appeared at the filesystem root.
    assert scratch.root.is_dir()
    assert set(os.listdir("/")) - ROOT_BEFORE == set()
    shutil.rmtree(scratch.root, ignore_errors=True)
