"""Commands through the SDK's CommandsAdapter: `POST /command` (foreground and background, with
handlers), `GET /command/status/{id}`, `GET /command/{id}/logs?cursor=`, `DELETE /command?id=`,
and `set_env` (a command that appends to the `EXECD_ENVS` file)."""

from __future__ import annotations

import asyncio
import os
import re
import time
from datetime import timedelta

import pytest

from opensandbox.adapters.command_adapter import CommandsAdapter
from opensandbox.exceptions import SandboxApiException
from opensandbox.models.execd import ExecutionHandlers, RunCommandOpts

HEX32 = re.compile(r"^[0-9a-f]{32}$")
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


def raw_texts(messages) -> list[str]:
    """The exact event texts (tests of the framing itself)."""
    return [m.text for m in messages]


class Recorder:
    """ExecutionHandlers that record every callback in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.init_seen = asyncio.Event()

    def handlers(self) -> ExecutionHandlers:
        async def on_init(e):
            self.calls.append(("init", e))
            self.init_seen.set()

        async def on_stdout(m):
            self.calls.append(("stdout", m))

        async def on_stderr(m):
            self.calls.append(("stderr", m))

        async def on_complete(c):
            self.calls.append(("complete", c))

        async def on_error(e):
            self.calls.append(("error", e))

        return ExecutionHandlers(
            on_init=on_init,
            on_stdout=on_stdout,
            on_stderr=on_stderr,
            on_execution_complete=on_complete,
            on_error=on_error,
        )

    def kinds(self) -> list[str]:
        return [k for k, _ in self.calls]

    def of(self, kind: str) -> list:
        return [v for k, v in self.calls if k == kind]


async def wait_status(commands: CommandsAdapter, cid: str, pred, timeout: float = DEADLINE_S):
    deadline = time.monotonic() + timeout
    while True:
        st = await commands.get_command_status(cid)
        if pred(st):
            return st
        assert time.monotonic() < deadline, f"status never matched; last: {st!r}"
        await asyncio.sleep(0.05)


# ---- foreground ----


async def test_run_echo_with_handlers(commands: CommandsAdapter):
    rec = Recorder()
    before_ms = int(time.time() * 1000)
    ex = await commands.run("echo Hello OpenSandbox E2E", handlers=rec.handlers())
    assert ex.id and HEX32.match(ex.id)
    assert texts(ex.logs.stdout) == ["Hello OpenSandbox E2E"]
    assert ex.logs.stderr == []
    assert ex.error is None
    assert ex.complete is not None and ex.complete.execution_time_in_millis >= 0
    assert ex.exit_code == 0
    assert ex.text == "Hello OpenSandbox E2E"
    # Handlers: exactly one init (first) and one complete (last), stdout in between.
    assert rec.kinds() == ["init", "stdout", "complete"]
    assert rec.of("init")[0].id == ex.id
    assert rec.of("stdout")[0].text == "Hello OpenSandbox E2E\n"
    assert rec.of("stdout")[0].is_error is False
    now_ms = int(time.time() * 1000)
    for _, v in rec.calls:
        assert before_ms - 60_000 <= v.timestamp <= now_ms + 60_000


async def test_stderr_handler_and_is_error(commands: CommandsAdapter):
    rec = Recorder()
    ex = await commands.run("echo out; echo err 1>&2", handlers=rec.handlers())
    assert texts(ex.logs.stdout) == ["out"]
    assert texts(ex.logs.stderr) == ["err"]
    assert ex.logs.stderr[0].is_error is True
    assert [m.text for m in rec.of("stderr")] == ["err\n"]
    assert ex.exit_code == 0


async def test_nonzero_exit_gives_error_event(commands: CommandsAdapter):
    rec = Recorder()
    ex = await commands.run("echo before; exit 3", handlers=rec.handlers())
    assert texts(ex.logs.stdout) == ["before"]
    assert ex.error is not None
    assert ex.error.name == "CommandExecError"
    assert ex.error.value == "3"
    assert ex.complete is None
    assert ex.exit_code == 3
    assert rec.kinds()[0] == "init" and rec.kinds()[-1] == "error"
    assert "complete" not in rec.kinds()
    assert rec.of("error")[0].value == "3"


async def test_unknown_command_reports_127_and_stderr(commands: CommandsAdapter):
    ex = await commands.run("definitely-not-a-command-xyz")
    assert ex.error is not None and ex.error.name == "CommandExecError"
    assert ex.exit_code == int(ex.error.value) == 127
    assert ex.complete is None
    assert any("definitely-not-a-command-xyz" in m.text for m in ex.logs.stderr)


async def test_envs_are_injected(commands: CommandsAdapter):
    base = await commands.run("echo \"[${SDK_TEST_VAR:-unset}]\"")
    assert texts(base.logs.stdout) == ["[unset]"]
    ex = await commands.run(
        "echo \"[$SDK_TEST_VAR]\"",
        opts=RunCommandOpts(envs={"SDK_TEST_VAR": "hello world $x 'q'"}),
    )
    assert texts(ex.logs.stdout) == ["[hello world $x 'q']"]
    assert ex.exit_code == 0


async def test_working_directory(commands: CommandsAdapter, work):
    ex = await commands.run("pwd", opts=RunCommandOpts(working_directory=str(work)))
    assert texts(ex.logs.stdout) == [str(work)]


async def test_missing_working_directory_is_400(commands: CommandsAdapter, work):
    with pytest.raises(SandboxApiException) as ei:
        await commands.run("pwd", opts=RunCommandOpts(working_directory=str(work / "nope")))
    assert ei.value.status_code == 400
    assert ei.value.error.code == "INVALID_REQUEST_BODY"


async def test_c41_timeout_kills_with_minus_one(commands: CommandsAdapter):
    started = time.monotonic()
    ex = await commands.run("sleep 10", opts=RunCommandOpts(timeout=timedelta(milliseconds=500)))
    assert time.monotonic() - started < 8
    assert ex.error is not None and ex.error.value == "-1"
    assert ex.exit_code == -1
    assert ex.complete is None


async def test_c31_blank_lines_and_order(commands: CommandsAdapter):
    """C31 as the newer contract has it: events keep their endings, so joined they are exact."""
    ex = await commands.run("printf 'a\\n\\nb\\n\\n\\nc\\n'")
    assert raw_texts(ex.logs.stdout) == ["a\n", "\n", "b\n", "\n", "\n", "c\n"]
    assert ex.text == "a\n\nb\n\n\nc"


async def test_sdk24_output_execution_text_is_exact(commands: CommandsAdapter):
    """`Execution.text` (SDK 1.1.1) gives the output with blank lines; it normalises `\\r\\n` and
    `\\r` to `\\n` and drops trailing newlines by its own rule, so the raw events are checked too."""
    ex = await commands.run("printf 'a\\n\\nb\\n'")
    assert ex.text == "a\n\nb"
    ex = await commands.run("printf 'a\\r\\nb\\rc\\n\\n\\nd'")
    assert raw_texts(ex.logs.stdout) == ["a\r\n", "b\r", "c\n", "\n", "\n", "d"]
    assert "".join(raw_texts(ex.logs.stdout)) == "a\r\nb\rc\n\n\nd"
    assert ex.text == "a\nb\nc\n\n\nd"
    ex = await commands.run("printf '  indented\\n\\n\\ttab\\n'; printf 'e1\\n\\ne2' >&2")
    assert ex.text == "  indented\n\n\ttab"
    assert "".join(raw_texts(ex.logs.stderr)) == "e1\n\ne2"
    assert str(ex) == "  indented\n\n\ttab\n[stderr]\ne1\n\ne2"


def test_sdk24_output_sync_execution_text_is_exact(sync_commands):
    ex = sync_commands.run("printf 'x\\n\\n\\ny\\n'")
    assert ex.text == "x\n\n\ny"


async def test_many_lines_arrive_complete_in_order(commands: CommandsAdapter):
    seen: list[str] = []

    async def on_stdout(m):
        seen.append(m.text)

    ex = await commands.run(
        "seq 1 20000", handlers=ExecutionHandlers(on_stdout=on_stdout, skip_accumulation=True)
    )
    assert ex.exit_code == 0
    assert ex.logs.stdout == []  # skip_accumulation honoured
    assert seen == [f"{i}\n" for i in range(1, 20001)]


async def test_partial_last_line_is_flushed(commands: CommandsAdapter):
    ex = await commands.run("printf 'no-newline'")
    assert texts(ex.logs.stdout) == ["no-newline"]


async def test_uid_and_gid(commands: CommandsAdapter):
    if os.geteuid() != 0:
        pytest.skip("needs root to switch credentials")
    ex = await commands.run("id -u; id -g", opts=RunCommandOpts(uid=65534, gid=65534))
    assert texts(ex.logs.stdout) == ["65534", "65534"]


async def test_foreground_status_after_completion(commands: CommandsAdapter):
    ex = await commands.run("echo done")
    st = await commands.get_command_status(ex.id)
    assert st.id == ex.id
    assert st.content == "echo done"
    assert st.running is False
    assert st.exit_code == 0
    assert st.started_at is not None and st.finished_at is not None
    assert st.finished_at >= st.started_at


async def test_status_of_unknown_id_is_404(commands: CommandsAdapter):
    with pytest.raises(SandboxApiException) as ei:
        await commands.get_command_status("0" * 32)
    assert ei.value.status_code == 404
    assert ei.value.error.code == "INVALID_REQUEST_BODY"  # C56 / §17.4


async def test_interrupt_foreground(commands: CommandsAdapter):
    rec = Recorder()
    task = asyncio.create_task(commands.run("sleep 30", handlers=rec.handlers()))
    await asyncio.wait_for(rec.init_seen.wait(), DEADLINE_S)
    cid = rec.of("init")[0].id
    st = await commands.get_command_status(cid)
    assert st.running is True  # C43
    started = time.monotonic()
    await commands.interrupt(cid)
    ex = await asyncio.wait_for(task, DEADLINE_S)
    assert time.monotonic() - started < DEADLINE_S
    assert ex.id == cid
    assert ex.error is not None and ex.error.value == "-1"
    assert ex.exit_code == -1
    st = await commands.get_command_status(cid)
    assert st.running is False and st.exit_code == -1


async def test_interrupt_finished_command_is_500(commands: CommandsAdapter):
    ex = await commands.run("true")
    with pytest.raises(SandboxApiException) as ei:
        await commands.interrupt(ex.id)
    assert ei.value.status_code == 500
    assert ei.value.error.code == "RUNTIME_ERROR"


# ---- background ----


async def test_background_status_and_interrupt(commands: CommandsAdapter):
    started = time.monotonic()
    ex = await commands.run("sleep 30", opts=RunCommandOpts(background=True))
    assert time.monotonic() - started < 10
    assert ex.id and HEX32.match(ex.id)
    assert ex.exit_code is None  # no inference for background commands
    assert ex.logs.stdout == [] and ex.logs.stderr == []
    st = await wait_status(commands, ex.id, lambda s: s.running is True)
    assert st.content == "sleep 30"
    assert st.exit_code is None and st.finished_at is None
    assert st.started_at is not None
    await commands.interrupt(ex.id)
    st = await wait_status(commands, ex.id, lambda s: s.running is False)
    assert st.exit_code == -1


async def test_background_logs_with_cursor(commands: CommandsAdapter):
    ex = await commands.run(
        "echo log-line-1; echo log-line-2 1>&2; sleep 0.3; echo log-line-3",
        opts=RunCommandOpts(background=True),
    )
    collected = ""
    cursor = None
    cursors: list[int] = []
    deadline = time.monotonic() + DEADLINE_S
    while True:
        logs = await commands.get_background_command_logs(ex.id, cursor)
        assert logs.cursor is not None
        collected += logs.content
        cursors.append(logs.cursor)
        cursor = logs.cursor
        st = await commands.get_command_status(ex.id)
        if st.running is False and "log-line-3" in collected:
            break
        assert time.monotonic() < deadline, f"logs never completed: {collected!r}"
        await asyncio.sleep(0.05)
    assert cursors == sorted(cursors)
    assert collected.splitlines() == ["log-line-1", "log-line-2", "log-line-3"]
    # The cursor is a byte offset (§17.2): equal to everything read so far.
    assert cursor == len(collected.encode())
    # No new output: empty body, unchanged cursor (C53).
    again = await commands.get_background_command_logs(ex.id, cursor)
    assert again.content == "" and again.cursor == cursor
    full = await commands.get_background_command_logs(ex.id)
    assert full.content == collected and full.cursor == cursor
    assert st.exit_code == 0


async def test_background_exit_code_and_error(commands: CommandsAdapter):
    ex = await commands.run("exit 5", opts=RunCommandOpts(background=True))
    st = await wait_status(commands, ex.id, lambda s: s.running is False)
    assert st.exit_code == 5
    assert st.error == "exit status 5"
    assert st.finished_at >= st.started_at


async def test_background_timeout(commands: CommandsAdapter):
    ex = await commands.run(
        "sleep 10", opts=RunCommandOpts(background=True, timeout=timedelta(milliseconds=500))
    )
    st = await wait_status(commands, ex.id, lambda s: s.running is False, timeout=8)
    assert st.exit_code == -1


async def test_d11_logs_of_foreground_command(commands: CommandsAdapter):
    # DECISIONS D11 (wins over C55): foreground commands have a journal too, read the same way.
    ex = await commands.run("echo fg-1; echo fg-2 1>&2")
    logs = await commands.get_background_command_logs(ex.id)
    assert sorted(logs.content.splitlines()) == ["fg-1", "fg-2"]
    assert logs.cursor == len(logs.content.encode())


async def test_logs_of_unknown_id_is_400(commands: CommandsAdapter):
    with pytest.raises(SandboxApiException) as ei:
        await commands.get_background_command_logs("f" * 32)
    assert ei.value.status_code == 400  # §17.3 / C55
    assert ei.value.error.code == "INVALID_REQUEST_BODY"


# ---- set_env (EXECD_ENVS) ----


async def test_set_env_persists_for_later_commands(commands: CommandsAdapter):
    await commands.set_env("SDK_SET_ENV_A", "alpha beta")
    await commands.set_env("SDK_SET_ENV_B", "it's")
    ex = await commands.run("echo \"$SDK_SET_ENV_A|$SDK_SET_ENV_B\"")
    assert texts(ex.logs.stdout) == ["alpha beta|it's"]


# ---- sync adapter ----


def test_sync_run_status_and_background_logs(sync_commands):
    ex = sync_commands.run("echo sync-hello; echo e 1>&2")
    assert texts(ex.logs.stdout) == ["sync-hello"]
    assert texts(ex.logs.stderr) == ["e"]
    assert ex.exit_code == 0 and HEX32.match(ex.id)
    assert sync_commands.get_command_status(ex.id).exit_code == 0
    bg = sync_commands.run("echo bg-line", opts=RunCommandOpts(background=True))
    deadline = time.monotonic() + DEADLINE_S
    while sync_commands.get_command_status(bg.id).running is not False:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    logs = sync_commands.get_background_command_logs(bg.id)
    assert logs.content == "bg-line\n" and logs.cursor == len(b"bg-line\n")
    failed = sync_commands.run("exit 4")
    assert failed.exit_code == 4 and failed.error.value == "4"


async def test_c171_output_streams_incrementally(commands: CommandsAdapter):
    """Events reach the SDK while the command runs (directly and through /proxy/<port>)."""
    arrivals: dict[str, float] = {}

    async def on_stdout(m):
        arrivals[line(m.text)] = time.monotonic()

    ex = await commands.run("echo first; sleep 1; echo second", handlers=ExecutionHandlers(on_stdout=on_stdout))
    assert ex.exit_code == 0 and set(arrivals) == {"first", "second"}
    assert arrivals["second"] - arrivals["first"] >= 0.5, arrivals


async def test_d3_stream_closes_after_terminal_event(commands: CommandsAdapter):
    """DECISIONS D3: no fixed 1 s tail after the terminal event (upstream sleeps 1 s per call).
    Ten trivial commands would take at least 10 s with the tail; the bound is generous."""
    started = time.monotonic()
    for _ in range(10):
        ex = await commands.run("true")
        assert ex.exit_code == 0
    assert time.monotonic() - started < 8


async def test_c181_child_env_has_no_access_token(commands: CommandsAdapter, execd):
    ex = await commands.run("env")
    lines = texts(ex.logs.stdout)
    assert any(line.startswith("HOME=") for line in lines)
    assert not any(line.startswith("EXECD_ACCESS_TOKEN=") for line in lines)
    assert all(execd.token not in line for line in lines)


# ---- argv (issue #24 part 1): the SDK's list form of `run` sends {"argv": [...]} ----


async def test_sdk24_argv_list_runs_without_a_shell(commands: CommandsAdapter):
    ex = await commands.run(["printf", "<%s>", "", "a b", "'q' \"d\"", "$HOME", "*"])
    assert ex.exit_code == 0 and ex.error is None
    assert raw_texts(ex.logs.stdout) == ["<><a b><'q' \"d\"><$HOME><*>"]
    st = await commands.get_command_status(ex.id)
    assert st.content == '["printf","<%s>","","a b","\'q\' \\"d\\"","$HOME","*"]'


async def test_sdk24_argv_list_with_cwd_envs_and_relative_executable(commands: CommandsAdapter, work):
    tool = work / "bin" / "tool"
    tool.parent.mkdir(parents=True, exist_ok=True)
    tool.write_text('#!/bin/sh\necho "tool $1 $FOO $(pwd)"\n')
    tool.chmod(0o755)
    opts = RunCommandOpts(working_directory=str(work), envs={"FOO": "bar"})
    ex = await commands.run(["./bin/tool", "x y"], opts=opts)
    assert texts(ex.logs.stdout) == [f"tool x y bar {work}"]
    # A bare name is looked up in the child's PATH (the request's envs apply).
    opts = RunCommandOpts(envs={"PATH": f"{tool.parent}:/usr/bin:/bin"})
    ex = await commands.run(["tool", "z"], opts=opts)
    assert texts(ex.logs.stdout)[0].startswith("tool z ")


async def test_sdk24_argv_missing_executable_is_an_error(commands: CommandsAdapter):
    rec = Recorder()
    ex = await commands.run(["no-such-tool-xyz", "a"], handlers=rec.handlers())
    assert ex.error is not None and ex.error.name == "CommandExecError"
    assert ex.error.value == 'exec: "no-such-tool-xyz": executable file not found in $PATH'
    assert ex.complete is None and ex.logs.stdout == []
    assert rec.kinds() == ["init", "error"]


async def test_sdk24_argv_background_and_timeout(commands: CommandsAdapter):
    bg = await commands.run(["sh", "-c", "echo bg-$0", "x"], opts=RunCommandOpts(background=True))
    st = await wait_status(commands, bg.id, lambda s: s.running is False)
    assert st.exit_code == 0 and st.content == '["sh","-c","echo bg-$0","x"]'
    logs = await commands.get_background_command_logs(bg.id)
    assert logs.content == "bg-x\n"
    started = time.monotonic()
    ex = await commands.run(["sleep", "10"], opts=RunCommandOpts(timeout=timedelta(milliseconds=300)))
    assert time.monotonic() - started < 8
    assert ex.error is not None and ex.exit_code == -1


def test_sdk24_argv_list_sync(sync_commands):
    ex = sync_commands.run(["echo", "sync", "$X"])
    assert raw_texts(ex.logs.stdout) == ["sync $X\n"] and ex.exit_code == 0
