"""Bash sessions through the SDK's CommandsAdapter: `create_session` (`POST /session`),
`run_in_session` (`POST /session/{id}/run`, streamed), `delete_session` (`DELETE /session/{id}`)."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import timedelta

import pytest

from opensandbox.adapters.command_adapter import CommandsAdapter
from opensandbox.exceptions import SandboxApiException
from opensandbox.models.execd import ExecutionHandlers
from opensandbox.models.execd_sync import ExecutionHandlersSync

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
DEADLINE_S = 20


def line(text: str) -> str:
    """`text` without its one line ending: output events keep theirs (issue #24)."""
    for end in ("\r\n", "\n", "\r"):
        if text.endswith(end):
            return text[: -len(end)]
    return text


def texts(messages) -> list[str]:
    """The lines of the events, endings removed (most tests compare lines)."""
    return [line(m.text) for m in messages]


@pytest.fixture
async def session(commands: CommandsAdapter):
    sid = await commands.create_session()
    yield sid
    try:
        await commands.delete_session(sid)
    except SandboxApiException:
        pass


async def test_c70_create_session_returns_uuid(commands: CommandsAdapter):
    sid = await commands.create_session()
    assert UUID.match(sid), sid
    other = await commands.create_session()
    assert other != sid
    await commands.delete_session(sid)
    await commands.delete_session(other)


async def test_c71_working_directory_is_created_and_used(commands: CommandsAdapter, work):
    target = work / "newdir" / "nested"
    sid = await commands.create_session(working_directory=str(target))
    assert target.is_dir()
    inits = []

    async def on_init(e):
        inits.append(e.id)

    ex = await commands.run_in_session(sid, "pwd", handlers=ExecutionHandlers(on_init=on_init))
    assert texts(ex.logs.stdout) == [str(target)]
    assert ex.id == sid and inits == [sid]  # init text is the session id
    assert ex.exit_code == 0 and ex.complete is not None
    await commands.delete_session(sid)


async def test_c72_exported_variable_persists(commands: CommandsAdapter, session):
    first = await commands.run_in_session(session, "export SDK_SESSION_FOO=hello")
    assert first.exit_code == 0
    ex = await commands.run_in_session(session, "echo $SDK_SESSION_FOO")
    assert texts(ex.logs.stdout) == ["hello"]


async def test_c73_cd_persists(commands: CommandsAdapter, session, work):
    await commands.run_in_session(session, f"cd {work}")
    ex = await commands.run_in_session(session, "pwd")
    assert texts(ex.logs.stdout) == [str(work)]


async def test_c74_cwd_override_persists(commands: CommandsAdapter, session, work):
    a = work / "a"
    b = work / "b"
    a.mkdir()
    b.mkdir()
    ex = await commands.run_in_session(session, "pwd", working_directory=str(a))
    assert texts(ex.logs.stdout) == [str(a)]
    ex = await commands.run_in_session(session, "pwd")
    assert texts(ex.logs.stdout) == [str(a)]
    ex = await commands.run_in_session(session, "pwd", working_directory=str(b))
    assert texts(ex.logs.stdout) == [str(b)]


async def test_c75_exit_code_and_session_survives(commands: CommandsAdapter, session):
    ex = await commands.run_in_session(session, "echo before; exit 7")
    assert texts(ex.logs.stdout) == ["before"]
    assert ex.error is not None
    assert ex.error.name == "CommandExecError" and ex.error.value == "7"
    assert ex.exit_code == 7 and ex.complete is None
    again = await commands.run_in_session(session, "echo still-here")
    assert texts(again.logs.stdout) == ["still-here"] and again.exit_code == 0


async def test_c76_stderr_arrives_as_stdout(commands: CommandsAdapter, session):
    ex = await commands.run_in_session(session, "echo e 1>&2")
    assert texts(ex.logs.stdout) == ["e"]
    assert ex.logs.stderr == []


async def test_c78_no_marker_leaks(commands: CommandsAdapter, session):
    ex = await commands.run_in_session(session, "printf '{\"foo\":1}'")
    assert texts(ex.logs.stdout) == ['{"foo":1}']


async def test_sdk24_output_session_text_keeps_blank_lines(commands: CommandsAdapter, session):
    """Session runs frame output as `/command` does (issue #24; replaces C77's dropped blanks)."""
    ex = await commands.run_in_session(session, "printf 'a\\n\\nb\\n'")
    assert [m.text for m in ex.logs.stdout] == ["a\n", "\n", "b\n"]
    assert ex.text == "a\n\nb"
    ex = await commands.run_in_session(session, "printf 'x\\r\\ny\\rz'")
    assert "".join(m.text for m in ex.logs.stdout) == "x\r\ny\rz"


async def test_d20_unexported_state_and_functions_persist(commands: CommandsAdapter, session):
    await commands.run_in_session(session, "plain=v1; f() { echo \"fn:$1\"; }")
    ex = await commands.run_in_session(session, "echo $plain; f x")
    assert texts(ex.logs.stdout) == ["v1", "fn:x"]


async def test_c80_delete_ends_running_run(commands: CommandsAdapter):
    sid = await commands.create_session()
    seen_init = asyncio.Event()

    async def on_init(_):
        seen_init.set()

    task = asyncio.create_task(
        commands.run_in_session(sid, "sleep 30", handlers=ExecutionHandlers(on_init=on_init))
    )
    await asyncio.wait_for(seen_init.wait(), DEADLINE_S)
    started = time.monotonic()
    await commands.delete_session(sid)
    ex = await asyncio.wait_for(task, DEADLINE_S)
    assert time.monotonic() - started < 5
    assert ex.complete is None
    with pytest.raises(SandboxApiException) as ei:
        await commands.delete_session(sid)
    assert ei.value.status_code == 404
    assert ei.value.error.code == "CONTEXT_NOT_FOUND"


async def test_c81_run_in_deleted_session_fails(commands: CommandsAdapter):
    sid = await commands.create_session()
    await commands.delete_session(sid)
    with pytest.raises(SandboxApiException) as ei:
        await commands.run_in_session(sid, "echo x")
    assert ei.value.status_code == 500
    assert ei.value.error.code == "RUNTIME_ERROR"


async def test_c82_run_timeout_ends_promptly(commands: CommandsAdapter, session):
    started = time.monotonic()
    ex = await commands.run_in_session(session, "sleep 5", timeout=timedelta(milliseconds=300))
    assert time.monotonic() - started < 4.5
    assert ex.complete is None
    assert ex.error is not None  # D4: a proper error event
    after = await commands.run_in_session(session, "echo ok")
    assert texts(after.logs.stdout) == ["ok"]


async def test_c183_background_child_does_not_hang_run(commands: CommandsAdapter, session):
    started = time.monotonic()
    ex = await commands.run_in_session(session, "sleep 100 & echo started")
    assert time.monotonic() - started < 10
    assert texts(ex.logs.stdout) == ["started"] and ex.exit_code == 0


def test_sync_session_round_trip(sync_commands, work):
    sid = sync_commands.create_session(working_directory=str(work))
    inits = []
    ex = sync_commands.run_in_session(
        sid, "export SYNC_S=1; pwd", handlers=ExecutionHandlersSync(on_init=lambda e: inits.append(e.id))
    )
    assert texts(ex.logs.stdout) == [str(work)] and inits == [sid]
    ex = sync_commands.run_in_session(sid, "echo $SYNC_S; exit 2")
    assert texts(ex.logs.stdout) == ["1"] and ex.exit_code == 2
    sync_commands.delete_session(sid)
    with pytest.raises(SandboxApiException) as ei:
        sync_commands.delete_session(sid)
    assert ei.value.status_code == 404
