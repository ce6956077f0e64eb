"""Isolated sessions (`/v1/isolated/*`, ISOLATED.md) through the official SDK's own isolation
service (`Sandbox.isolation` is this adapter), direct and through /proxy/<port> like the rest of
the suite. Diff and commit have no SDK method: they are called as the generated client does, with
raw HTTP on the same endpoint. Needs root (namespaces, overlayfs); skipped when execd says
isolation is unavailable here (a failure under CI=true)."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import httpx
import pytest

from opensandbox.adapters.factory import AdapterFactory
from opensandbox.exceptions import SandboxApiException
from opensandbox.api.execd.api.isolated_execution import isolated_session_commit, isolated_session_diff
from opensandbox.api.execd.client import Client
from opensandbox.models.execd import ExecutionHandlers
from opensandbox.models.filesystem import (
    ContentReplaceEntry,
    DirectoryListEntry,
    MoveEntry,
    SearchEntry,
    SetPermissionEntry,
    WriteEntry,
)
from opensandbox.models.isolated import (
    CreateIsolatedSessionRequest,
    EnvPassthroughSpec,
    IsolatedOverlaySpec,
    IsolatedRunOpts,
    IsolatedWorkspaceSpec,
)


@pytest.fixture
async def isolation(config, endpoint):
    service = AdapterFactory(config).create_isolated_session_service(endpoint)
    caps = await service.capabilities()
    if not caps.available:
        if os.environ.get("CI") == "true":
            pytest.fail(f"isolation unavailable under CI=true: {caps.message}")
        pytest.skip(f"isolation unavailable here: {caps.message}")
    return service


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "keep.txt").write_text("keep")
    return ws


def raw(endpoint) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://{endpoint.endpoint}", headers=endpoint.headers, timeout=60)


async def test_i26_capabilities_shape(isolation):
    caps = await isolation.capabilities()
    assert caps.available is True
    assert caps.diff_supported is True and caps.commit_supported is True


async def test_i2_i11_i12_create_attach_get_list_delete(isolation, workspace):
    session = await isolation.create(
        CreateIsolatedSessionRequest(workspace=IsolatedWorkspaceSpec(path=str(workspace), mode="rw"), profile="balanced")
    )
    sid = session.session_id
    assert str(uuid.UUID(sid)) == sid
    assert session.info.created_at is not None
    again = await isolation.attach(sid)
    assert again.info.workspace.path == str(workspace) and again.info.workspace.mode == "rw"
    assert again.info.profile == "balanced"
    state = await session.get()
    assert state.status == "active"
    assert sid in [s.session_id for s in await isolation.list()]
    await session.delete()
    assert sid not in [s.session_id for s in await isolation.list()]
    with pytest.raises(SandboxApiException) as e:
        await session.delete()
    assert e.value.status_code == 404
    with pytest.raises(SandboxApiException):
        await isolation.attach(str(uuid.UUID(int=0)))


async def test_i14_i17_run_streams_and_keeps_state(isolation, workspace):
    async with isolation.session(CreateIsolatedSessionRequest(workspace=IsolatedWorkspaceSpec(path=str(workspace)))) as s:
        ex = await s.run("echo a; echo b >&2")
        assert [m.text for m in ex.logs.stdout] == ["a", "b"]
        assert ex.exit_code == 0 and ex.error is None
        ex = await s.run("sh -c 'exit 3'")
        assert ex.exit_code == 3 and ex.error.value == "3"
        await s.run("export X=1; cd /tmp")
        ex = await s.run("echo $X; pwd")
        assert ex.text == "1\n/tmp"
        ex = await s.run("echo $Y", opts=IsolatedRunOpts(envs={"Y": "v"}))
        assert ex.text == "v"
        assert (await s.run("echo ${Y:-unset}")).text == "unset"
        ex = await s.run("echo $$; hostname")
        assert ex.text == "1\nsandbox"


async def test_i16_timeout_keeps_session(isolation, workspace):
    async with isolation.session(CreateIsolatedSessionRequest(workspace=IsolatedWorkspaceSpec(path=str(workspace)))) as s:
        start = time.monotonic()
        ex = await s.run("sleep 30", opts=IsolatedRunOpts(timeout_seconds=1))
        assert time.monotonic() - start < 10
        assert ex.error is not None
        assert (await s.run("echo ok")).text == "ok"


async def test_i18_i19_i20_background_status_logs(isolation, workspace):
    async with isolation.session(CreateIsolatedSessionRequest(workspace=IsolatedWorkspaceSpec(path=str(workspace)))) as s:
        bg = await s.run_background("echo start; sleep 1; echo done; exit 7")
        assert bg.session_id == s.session_id
        deadline = time.monotonic() + 20
        while (st := await s.run_status(bg.run_id)).running and time.monotonic() < deadline:
            time.sleep(0.1)
        assert st.running is False and st.exit_code == 7 and st.error is None and st.finished_at is not None
        logs = await s.run_logs(bg.run_id)
        assert logs.text == "start\ndone\n"
        assert logs.cursor == len(logs.text.encode())
        assert (await s.run_logs(bg.run_id, cursor=logs.cursor)).text == ""
        with pytest.raises(SandboxApiException) as e:
            await s.run_status("no-such-run")
        assert e.value.status_code == 404


async def test_i22_i23_files_roundtrip_in_overlay(isolation, workspace):
    async with isolation.session(CreateIsolatedSessionRequest(workspace=IsolatedWorkspaceSpec(path=str(workspace)))) as s:
        a, b, c = (str(workspace / n) for n in ("a.txt", "b.txt", "c.log"))
        await s.files.write_files([WriteEntry(path=p, data="x" * 3, mode=644) for p in (a, b, c)])
        assert not (workspace / "a.txt").exists(), "overlay writes stay off the host"
        assert await s.files.read_file(a) == "xxx"
        assert (await s.run(f"cat {a}")).text == "xxx"
        info = await s.files.get_file_info([a])
        assert info[a].size == 3 and info[a].mode == 644
        found = await s.files.search(SearchEntry(path=str(workspace), pattern="*.txt"))
        assert sorted(Path(f.path).name for f in found) == ["a.txt", "b.txt", "keep.txt"]
        await s.files.delete_files([str(workspace / "keep.txt")])
        assert (workspace / "keep.txt").exists()
        with pytest.raises(SandboxApiException):
            await s.files.read_file(str(workspace / "keep.txt"))


async def test_i24_i25_diff_and_commit(isolation, workspace, endpoint):
    req = CreateIsolatedSessionRequest(overlays=[IsolatedOverlaySpec(path=str(workspace))])
    async with isolation.session(req) as s:
        await s.run(f"echo new > {workspace}/new.txt")
        await s.files.write_files([WriteEntry(path=str(workspace / "api.txt"), data="api")])
        async with raw(endpoint) as http:
            r = await http.get(f"/v1/isolated/session/{s.session_id}/diff")
            assert r.status_code == 200
            paths = sorted(Path(c["path"]).name for c in r.json()["changes"])
            assert paths == ["api.txt", "new.txt"]
            r = await http.post(f"/v1/isolated/session/{s.session_id}/commit")
            assert r.status_code == 200 and r.json()["conflicts"] == []
        assert (workspace / "new.txt").read_text() == "new\n"
        assert (workspace / "api.txt").read_text() == "api"
        await s.run(f"echo later > {workspace}/later.txt")
        assert not (workspace / "later.txt").exists()


async def test_i36_delete_kills_escaped_processes(isolation, workspace):
    s = await isolation.create(CreateIsolatedSessionRequest(workspace=IsolatedWorkspaceSpec(path=str(workspace))))
    marker = f"sleep {300 + os.getpid() % 97}"
    await s.run(f"setsid nohup {marker} >/dev/null 2>&1 &")
    await s.delete()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        alive = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline(p) == marker]
        if not alive:
            break
        time.sleep(0.05)
    assert not alive


def _cmdline(p: Path) -> str:
    try:
        return (p / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


async def _ids(isolation) -> set[str]:
    return {s.session_id for s in await isolation.list()}


async def test_i38_run_once_and_session_context_clean_up(isolation, workspace):
    before = await _ids(isolation)
    ex = await isolation.run_once("echo hi; cat keep.txt", workspace=str(workspace), workspace_mode="rw")
    assert ex.text == "hi\nkeep" and ex.exit_code == 0
    assert await _ids(isolation) == before, "run_once deletes its session"
    async with isolation.session(CreateIsolatedSessionRequest(workspace=IsolatedWorkspaceSpec(path=str(workspace)))) as s:
        assert s.session_id in await _ids(isolation)
    assert await _ids(isolation) == before, "the context manager deletes on exit"


async def test_i39_create_and_attach_echo(isolation, workspace):
    req = CreateIsolatedSessionRequest(
        overlays=[IsolatedOverlaySpec(path=str(workspace), mode="overlay", persist=True)],
        env_passthrough=EnvPassthroughSpec(mode="deny", keys=["HOME"]),
        idle_timeout_seconds=0,
    )
    async with isolation.session(req) as s:
        assert str(uuid.UUID(s.session_id)) == s.session_id
        assert s.info.created_at is not None
        info = (await isolation.attach(s.session_id)).info
        assert info.profile == "strict" and info.uid_mode == "setpriv"
        assert [(o.path, o.mode, o.persist) for o in info.overlays] == [(str(workspace), "overlay", True)]
        assert info.workspace.path == str(workspace)
        assert info.env_passthrough.mode == "deny" and info.env_passthrough.keys == ["HOME"]
        assert info.idle_timeout_seconds == 0
    with pytest.raises(Exception):
        await isolation.attach("  ")


async def test_i40_run_dispatches_handlers_and_survives_exit(isolation, workspace):
    seen: list[str] = []

    async def on_init(m):
        seen.append("init")

    async def on_stdout(m):
        seen.append(f"out:{m.text}")

    async def on_complete(m):
        seen.append("complete")

    async def on_error(m):
        seen.append(f"error:{m.value}")

    handlers = ExecutionHandlers(
        on_init=on_init, on_stdout=on_stdout, on_execution_complete=on_complete, on_error=on_error
    )
    async with isolation.session(CreateIsolatedSessionRequest(workspace=IsolatedWorkspaceSpec(path=str(workspace)))) as s:
        ex = await s.run("echo x; echo y >&2", handlers=handlers)
        assert seen == ["init", "out:x", "out:y", "complete"]
        assert ex.id and ex.complete is not None and ex.text == "x\ny"
        seen.clear()
        ex = await s.run("export K=v; echo before; exit 3", handlers=handlers)
        assert seen == ["init", "out:before", "error:3"] and ex.exit_code == 3
        assert (await s.run("echo $K")).text == "v", "the session survives `exit`"
        assert (await s.get()).status == "active"


async def test_i41_background_logs_cursor_while_running(isolation, workspace):
    async with isolation.session(CreateIsolatedSessionRequest(workspace=IsolatedWorkspaceSpec(path=str(workspace)))) as s:
        bg = await s.run_background("for i in 1 2 3; do echo $i; sleep 0.3; done", opts=IsolatedRunOpts(envs={"A": "1"}))
        assert str(uuid.UUID(bg.run_id)) == bg.run_id and bg.started_at is not None
        text, cursor = "", 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            running = (await s.run_status(bg.run_id)).running
            logs = await s.run_logs(bg.run_id, cursor=cursor)
            text += logs.text
            cursor = logs.cursor
            if not running and logs.text == "":
                break
            time.sleep(0.1)
        assert text == "1\n2\n3\n" and cursor == len(text)
        with pytest.raises(Exception):
            await s.run_logs(bg.run_id, cursor=-1)


async def test_i42_files_full_surface(isolation, workspace):
    async with isolation.session(CreateIsolatedSessionRequest(workspace=IsolatedWorkspaceSpec(path=str(workspace)))) as s:
        ws = str(workspace)
        await s.files.create_directories([WriteEntry(path=f"{ws}/d/e", mode=700)])
        await s.files.write_files([WriteEntry(path=f"{ws}/d/a.txt", data="hello world")])
        assert await s.files.read_bytes(f"{ws}/d/a.txt") == b"hello world"
        chunks = [c async for c in await s.files.read_bytes_stream(f"{ws}/d/a.txt")]
        assert b"".join(chunks) == b"hello world"
        await s.files.replace_contents([ContentReplaceEntry(path=f"{ws}/d/a.txt", old_content="world", new_content="there")])
        assert await s.files.read_file(f"{ws}/d/a.txt") == "hello there"
        await s.files.move_files([MoveEntry(src=f"{ws}/d/a.txt", dest=f"{ws}/d/b.txt")])
        await s.files.set_permissions([SetPermissionEntry(path=f"{ws}/d/b.txt", mode=600)])
        info = await s.files.get_file_info([f"{ws}/d/b.txt"])
        assert info[f"{ws}/d/b.txt"].mode == 600 and info[f"{ws}/d/b.txt"].size == 11
        names = [Path(e.path).name for e in await s.files.list_directory(DirectoryListEntry(path=f"{ws}/d", depth=1))]
        assert names == ["b.txt", "e"]
        assert (await s.run(f"stat -c %a {ws}/d/e; cat {ws}/d/b.txt")).text == "700\nhello there"
        await s.files.delete_directories([f"{ws}/d"])
        with pytest.raises(SandboxApiException):
            await s.files.get_file_info([f"{ws}/d/b.txt"])
        assert not (workspace / "d").exists(), "overlay: nothing reached the host"


async def test_i43_get_list_delete_capabilities(isolation, workspace):
    s = await isolation.create(
        CreateIsolatedSessionRequest(workspace=IsolatedWorkspaceSpec(path=str(workspace)), idle_timeout_seconds=600)
    )
    state = await s.get()
    assert state.status == "active" and state.created_at is not None and state.last_run_at is not None
    assert 0 < state.idle_remaining_seconds <= 600
    summary = [x for x in await isolation.list() if x.session_id == s.session_id]
    assert len(summary) == 1 and summary[0].status == "active"
    caps = await isolation.capabilities()
    assert isinstance(caps.setpriv_available, bool) and isinstance(caps.userns_available, bool)
    await s.delete()
    with pytest.raises(SandboxApiException) as e:
        await s.get()
    assert e.value.status_code == 404


async def test_i44_generated_diff_and_commit_functions(isolation, workspace, endpoint):
    async with isolation.session(CreateIsolatedSessionRequest(workspace=IsolatedWorkspaceSpec(path=str(workspace)))) as s:
        await s.run(f"echo n > {workspace}/n.txt")
        client = Client(base_url=f"http://{endpoint.endpoint}", headers=endpoint.headers)
        r = await isolated_session_diff.asyncio_detailed(session_id=uuid.UUID(s.session_id), client=client)
        assert r.status_code == 200 and r.parsed is None
        assert [c["kind"] for c in json.loads(r.content)["changes"]] == ["created"]
        r = await isolated_session_commit.asyncio_detailed(session_id=uuid.UUID(s.session_id), client=client)
        assert r.status_code == 200 and r.parsed is None
        assert (workspace / "n.txt").read_text() == "n\n"
        r = await isolated_session_diff.asyncio_detailed(session_id=uuid.UUID(int=0), client=client)
        assert r.status_code == 404
