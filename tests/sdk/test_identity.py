"""Per-identity filesystem routes (issue #24 part 4) through the SDK's own public method,
`Sandbox.files_with_identity(uid, gid)` (async and sync), which sends every file call to
`/v1/filesystem/{uid}/{gid}/...`. The sandbox objects are built around this suite's adapters
(no lifecycle server). The test users 4242/4343 have no passwd entry; execd runs as root here."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from opensandbox.adapters.filesystem_adapter import FilesystemAdapter
from opensandbox.exceptions import InvalidArgumentException, SandboxApiException
from opensandbox.models.filesystem import (
    ContentReplaceEntry,
    DirectoryListEntry,
    MoveEntry,
    SearchEntry,
    SetPermissionEntry,
    WriteEntry,
)
from opensandbox.sandbox import Sandbox
from opensandbox.sync.sandbox import SandboxSync

A = 4242
B = 4343

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="acting as other uids needs root")


@pytest.fixture
def sandbox(fs: FilesystemAdapter, config) -> Sandbox:
    """A Sandbox around this suite's filesystem adapter (what Sandbox.connect would build)."""
    return Sandbox(
        sandbox_id="local-execd",
        sandbox_service=None,
        filesystem_service=fs,
        command_service=None,
        health_service=None,
        metrics_service=None,
        egress_service=None,
        connection_config=config,
    )


@pytest.fixture
def sync_sandbox(sync_fs, sync_config) -> SandboxSync:
    return SandboxSync(
        sandbox_id="local-execd",
        sandbox_service=None,
        filesystem_service=sync_fs,
        command_service=None,
        health_service=None,
        metrics_service=None,
        egress_service=None,
        connection_config=sync_config,
    )


@pytest.fixture
def shared(work: Path, execd) -> Path:
    """`work`, writable by everybody, with every directory above it searchable."""
    work.chmod(0o777)
    p = work.parent
    while p != p.parent:
        p.chmod(p.stat().st_mode | 0o011)
        p = p.parent
    return work


async def test_sdk24_identity_write_is_owned_by_uid_and_gid(sandbox: Sandbox, shared: Path):
    files = sandbox.files_with_identity(A, B)
    target = shared / "sub" / "mine.txt"
    await files.write_file(str(target), "mine\n", mode=640)
    st = target.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (A, B, 0o640)
    assert (target.parent.stat().st_uid, target.parent.stat().st_gid) == (A, B)
    assert await files.read_file(str(target)) == "mine\n"
    info = (await files.get_file_info([str(target)]))[str(target)]
    assert info.mode == 640 and info.size == 5
    # The default client is unchanged: execd's own identity.
    root_file = shared / "root.txt"
    await sandbox.files.write_file(str(root_file), "r")
    assert root_file.stat().st_uid == 0


async def test_sdk24_identity_permission_denied_is_403(sandbox: Sandbox, shared: Path):
    private = shared / "private"
    private.mkdir(mode=0o700)
    (private / "secret.txt").write_bytes(b"root only")
    files = sandbox.files_with_identity(A, A)
    with pytest.raises(SandboxApiException) as ei:
        await files.write_file(str(private / "x.txt"), b"x" * (1 << 20))
    assert ei.value.status_code == 403 and ei.value.error.code == "PERMISSION_DENIED", ei.value
    assert not (private / "x.txt").exists()
    with pytest.raises(SandboxApiException) as ei:
        await files.read_bytes(str(private / "secret.txt"))
    assert ei.value.status_code == 403
    with pytest.raises(SandboxApiException) as ei:
        await files.list_directory(DirectoryListEntry(path=str(private)))
    assert ei.value.status_code == 403
    with pytest.raises(SandboxApiException) as ei:
        await files.delete_files([str(private / "secret.txt")])
    assert ei.value.status_code == 403
    assert (private / "secret.txt").read_bytes() == b"root only"


async def test_sdk24_identity_reads_a_file_only_it_can_read(sandbox: Sandbox, shared: Path):
    own = shared / "own.txt"
    own.write_bytes(b"line1\r\nline2\nline3")
    os.chown(own, A, A)
    own.chmod(0o600)
    mine = sandbox.files_with_identity(A, A)
    assert await mine.read_bytes(str(own)) == b"line1\r\nline2\nline3"
    assert await mine.read_bytes(str(own), range_header="bytes=0-4") == b"line1"
    assert await mine.read_file(str(own), offset=2, limit=2) == "line2\nline3"
    stream = await mine.read_bytes_stream(str(own))
    chunks = [c async for c in stream]
    assert b"".join(chunks) == b"line1\r\nline2\nline3"
    with pytest.raises(SandboxApiException) as ei:
        await sandbox.files_with_identity(B, B).read_bytes(str(own))
    assert ei.value.status_code == 403 and ei.value.error.code == "PERMISSION_DENIED"


async def test_sdk24_identity_relative_paths_resolve_from_root(sandbox: Sandbox, shared: Path):
    files = sandbox.files_with_identity(A, A)
    target = shared / "rel.txt"
    rel = str(target).lstrip("/")
    await files.write_file(rel, "relative")
    assert target.read_bytes() == b"relative"
    assert target.stat().st_uid == A
    assert await files.read_file(rel) == "relative"


async def test_sdk24_identity_invalid_ids_rejected(sandbox: Sandbox, fs: FilesystemAdapter, shared: Path):
    # The SDK itself refuses ids out of range ...
    for uid, gid in [(-1, 0), (0, 4294967295)]:
        with pytest.raises(InvalidArgumentException):
            sandbox.files_with_identity(uid, gid)
    # ... and execd answers 400 JSON to a raw request that does not go through that check.
    client = await fs._get_httpx_client()
    base = fs._get_execd_base_url()
    for prefix in ["/v1/filesystem/abc/1", "/v1/filesystem/1/4294967295", "/v1/filesystem/-1/0"]:
        resp = await client.get(f"{base}{prefix}/files/info", params={"path": str(shared)})
        assert resp.status_code == 400, resp.text
        assert resp.json()["code"] == "INVALID_REQUEST_BODY"


async def test_sdk24_identity_directories_and_other_operations(sandbox: Sandbox, shared: Path):
    files = sandbox.files_with_identity(A, B)
    d = shared / "made" / "deep"
    await files.create_directories([WriteEntry(path=str(d), mode=750)])
    st = d.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (A, B, 0o750)
    listed = await files.list_directory(DirectoryListEntry(path=str(shared / "made"), depth=2))
    assert [e.path for e in listed] == [str(d)]
    f = d / "notes.txt"
    await files.write_files([WriteEntry(path=str(f), data=b"hello world\n", mode=644)])
    found = await files.search(SearchEntry(path=str(shared / "made"), pattern="*.txt"))
    assert [e.path for e in found] == [str(f)]
    results = await files.replace_contents_detailed(
        [ContentReplaceEntry(path=str(f), old_content="world", new_content="there")]
    )
    assert results[0].replaced_count == 1
    assert f.read_bytes() == b"hello there\n" and f.stat().st_uid == A
    g = d / "moved.txt"
    await files.move_files([MoveEntry(src=str(f), dest=str(g))])
    await files.set_permissions([SetPermissionEntry(path=str(g), mode=600)])
    assert stat.S_IMODE(g.stat().st_mode) == 0o600
    # Another user may not change it, nor may the owner give it away.
    with pytest.raises(SandboxApiException) as ei:
        await sandbox.files_with_identity(B, B).delete_files([str(g)])
    assert ei.value.status_code == 403
    with pytest.raises(SandboxApiException) as ei:
        await files.set_permissions([SetPermissionEntry(path=str(g), owner="root", mode=600)])
    assert ei.value.status_code == 403
    assert g.stat().st_uid == A
    await files.delete_directories([str(shared / "made")])
    assert not (shared / "made").exists()


def test_sdk24_identity_sync_client(sync_sandbox: SandboxSync, shared: Path):
    files = sync_sandbox.files_with_identity(A, B)
    target = shared / "sync.txt"
    files.write_file(str(target), "sync\n")
    assert (target.stat().st_uid, target.stat().st_gid) == (A, B)
    assert files.read_file(str(target)) == "sync\n"
    private = shared / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(SandboxApiException) as ei:
        files.write_file(str(private / "x"), "x")
    assert ei.value.status_code == 403
