"""Filesystem through the SDK's FilesystemAdapter: upload (`write_file(s)`), download
(`read_file`, `read_bytes`, `read_bytes_stream`, ranged), `get_file_info`, `delete_files`,
`move_files`, `set_permissions`, `search`, `replace_contents(_detailed)`, `create_directories`,
`list_directory`, `delete_directories`; plus a 64 MiB binary round trip, hashed on both sides."""

from __future__ import annotations

import hashlib
import os
import pwd
import grp
import time
from datetime import timedelta
from pathlib import Path

import pytest

from opensandbox.adapters.filesystem_adapter import FilesystemAdapter
from opensandbox.config import ConnectionConfig
from opensandbox.exceptions import SandboxApiException
from opensandbox.transport import RetryPolicy
from opensandbox.models.filesystem import (
    ContentReplaceEntry,
    DirectoryListEntry,
    MoveEntry,
    SearchEntry,
    SetPermissionEntry,
    WriteEntry,
)

LARGE_SIZE = 64 * 1024 * 1024
CHUNK = 1024 * 1024


def has_nobody() -> bool:
    try:
        pwd.getpwnam("nobody")
        grp.getgrnam("nogroup")
    except KeyError:
        return False
    return os.geteuid() == 0


def pattern_chunk(i: int) -> bytes:
    """Deterministic, non-repeating-per-chunk binary data (every byte value occurs)."""
    seed = hashlib.sha256(i.to_bytes(8, "little")).digest()
    return (seed * (CHUNK // len(seed)))[:CHUNK]


@pytest.fixture(scope="module")
def large_local_file(tmp_path_factory) -> tuple[Path, str]:
    """A 64 MiB local file and its sha256, written chunk by chunk (never held in memory)."""
    path = tmp_path_factory.mktemp("large") / "blob.bin"
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for i in range(LARGE_SIZE // CHUNK):
            c = pattern_chunk(i)
            h.update(c)
            f.write(c)
    return path, h.hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


# ---- upload / download ----


async def test_c110_write_read_creates_parents(fs: FilesystemAdapter, work):
    target = work / "x" / "y" / "hello.txt"
    await fs.write_file(str(target), "hello execd\n")
    assert await fs.read_file(str(target)) == "hello execd\n"
    assert await fs.read_bytes(str(target)) == b"hello execd\n"
    assert target.read_bytes() == b"hello execd\n"


async def test_c111_write_files_modes_and_owner(fs: FilesystemAdapter, work):
    entries = [
        WriteEntry(path=str(work / "a.txt"), data="text data", mode=644),
        WriteEntry(path=str(work / "b.bin"), data=b"\x00\x01\xffbinary", mode=755),
    ]
    with_owner = has_nobody()
    if with_owner:
        entries.append(
            WriteEntry(path=str(work / "c.txt"), data=b"owned", mode=600, owner="nobody", group="nogroup")
        )
    await fs.write_files(entries)
    info = await fs.get_file_info([e.path for e in entries])
    assert set(info) == {e.path for e in entries}
    assert info[str(work / "a.txt")].mode == 644
    assert info[str(work / "a.txt")].size == len("text data")
    assert info[str(work / "b.bin")].mode == 755
    assert await fs.read_bytes(str(work / "b.bin")) == b"\x00\x01\xffbinary"
    if with_owner:
        c = info[str(work / "c.txt")]
        assert (c.mode, c.owner, c.group) == (600, "nobody", "nogroup")


async def test_write_file_from_binary_stream(fs: FilesystemAdapter, work, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(bytes(range(256)) * 1000)
    with open(src, "rb") as f:
        await fs.write_file(str(work / "streamed.bin"), f)
    assert await fs.read_bytes(str(work / "streamed.bin")) == src.read_bytes()


async def test_write_files_with_content_length(endpoint, work, tmp_path):
    """`use_server_proxy=True` makes the SDK send a Content-Length multipart body (httpx `files=`)
    instead of the chunked one: both encodings must be accepted."""
    cfg = ConnectionConfig(
        protocol="http", use_server_proxy=True, retry_policy=RetryPolicy.disabled(), api_key=""
    ).with_transport_if_missing()
    try:
        fs2 = FilesystemAdapter(cfg, endpoint)
        src = tmp_path / "s.bin"
        src.write_bytes(os.urandom(200_000))
        with open(src, "rb") as f:
            await fs2.write_files(
                [
                    WriteEntry(path=str(work / "cl" / "one.txt"), data="one", mode=644),
                    WriteEntry(path=str(work / "cl" / "two.bin"), data=f, mode=600),
                ]
            )
        assert (work / "cl" / "one.txt").read_text() == "one"
        assert (work / "cl" / "two.bin").read_bytes() == src.read_bytes()
        info = await fs2.get_file_info([str(work / "cl" / "two.bin")])
        assert info[str(work / "cl" / "two.bin")].mode == 600
    finally:
        await cfg.close_transport_if_owned()


async def test_write_overwrites_existing_file(fs: FilesystemAdapter, work):
    p = str(work / "over.txt")
    await fs.write_file(p, "first version, longer")
    await fs.write_file(p, "second")
    assert await fs.read_file(p) == "second"


async def test_unicode_file_name_round_trip(fs: FilesystemAdapter, work):
    p = str(work / "测试 文件.txt")
    await fs.write_file(p, "ünïcödé ✓")
    assert await fs.read_file(p) == "ünïcödé ✓"
    info = await fs.get_file_info([p])
    assert info[p].path == p


async def test_c115_ranged_reads(fs: FilesystemAdapter, work):
    p = str(work / "range.txt")
    data = b"0123456789abcdefghij"
    await fs.write_file(p, data)
    assert await fs.read_bytes(p, range_header="bytes=0-9") == data[:10]
    assert await fs.read_bytes(p, range_header="bytes=-5") == data[-5:]
    assert await fs.read_bytes(p, range_header="bytes=5-") == data[5:]
    assert await fs.read_bytes(p, range_header="bytes=3-3") == data[3:4]
    assert await fs.read_file(p, range_header="bytes=10-14") == "abcde"


async def test_c114_read_missing_file_raises_404(fs: FilesystemAdapter, work):
    with pytest.raises(SandboxApiException) as ei:
        await fs.read_bytes(str(work / "missing.txt"))
    assert ei.value.status_code == 404


async def test_read_bytes_stream_chunks(fs: FilesystemAdapter, work):
    p = work / "chunks.bin"
    p.write_bytes(os.urandom(300_000))
    chunks = [c async for c in await fs.read_bytes_stream(str(p), chunk_size=64 * 1024)]
    assert b"".join(chunks) == p.read_bytes()
    assert all(len(c) <= 64 * 1024 for c in chunks)


# ---- line ranges (issue #24 part 3; upstream 1.0.19: lines joined by "\n", endings dropped) ----


async def test_sdk24_lines_read_file_and_read_bytes(fs: FilesystemAdapter, work):
    p = str(work / "lines.txt")
    await fs.write_file(p, "line1\nline2\nline3\nline4\nline5")
    assert await fs.read_file(p, offset=2, limit=2) == "line2\nline3"
    assert await fs.read_file(p, offset=4) == "line4\nline5"
    assert await fs.read_file(p, limit=2) == "line1\nline2"
    assert await fs.read_file(p, offset=2, limit=100) == "line2\nline3\nline4\nline5"
    assert await fs.read_bytes(p, offset=3, limit=1) == b"line3"
    assert await fs.read_bytes(p, offset=6) == b""


async def test_sdk24_lines_crlf_and_unterminated_last_line(fs: FilesystemAdapter, work):
    p = work / "crlf.txt"
    p.write_bytes(b"a\r\nb\r\n\r\nd\r\nlast")
    assert await fs.read_bytes(str(p), offset=1) == b"a\nb\n\nd\nlast"
    assert await fs.read_file(str(p), offset=3, limit=2) == "\nd"
    assert await fs.read_file(str(p), offset=5, limit=9) == "last"


async def test_sdk24_lines_read_bytes_stream(fs: FilesystemAdapter, work):
    p = work / "many.txt"
    p.write_bytes(b"".join(b"row %d\n" % i for i in range(1, 100_001)))
    chunks = [c async for c in await fs.read_bytes_stream(str(p), offset=99_998, limit=5, chunk_size=4)]
    assert b"".join(chunks) == b"row 99998\nrow 99999\nrow 100000"
    assert all(len(c) <= 4 for c in chunks)
    whole = [c async for c in await fs.read_bytes_stream(str(p), offset=2, chunk_size=64 * 1024)]
    assert b"".join(whole) == b"\n".join(b"row %d" % i for i in range(2, 100_001))


async def test_sdk24_lines_errors_raise_400(fs: FilesystemAdapter, work):
    p = str(work / "one.txt")
    await fs.write_file(p, "line1\n")
    for kwargs in ({"offset": 0}, {"offset": -1}, {"limit": 0}, {"offset": 1, "range_header": "bytes=0-2"}):
        with pytest.raises(SandboxApiException) as ei:
            await fs.read_bytes(p, **kwargs)
        assert ei.value.status_code == 400, kwargs
    with pytest.raises(SandboxApiException) as ei:
        await fs.read_file(str(work / "missing.txt"), offset=1, limit=1)
    assert ei.value.status_code == 404


def test_sdk24_lines_sync_adapter(sync_fs, work):
    p = work / "sync-lines.txt"
    p.write_bytes(b"x\ny\r\nz")
    assert sync_fs.read_file(str(p), offset=2, limit=1) == "y"
    assert sync_fs.read_bytes(str(p), offset=2) == b"y\nz"
    assert b"".join(sync_fs.read_bytes_stream(str(p), limit=2)) == b"x\ny"


async def test_large_binary_round_trip_64mib(fs: FilesystemAdapter, work, large_local_file):
    local, digest = large_local_file
    remote = work / "large" / "blob.bin"
    started = time.monotonic()
    with open(local, "rb") as f:
        await fs.write_file(str(remote), f)  # chunked multipart, streamed from disk
    upload_s = time.monotonic() - started
    assert sha256_file(remote) == digest
    info = await fs.get_file_info([str(remote)])
    assert info[str(remote)].size == LARGE_SIZE
    # Download streamed through the SDK, hashed incrementally (never buffered whole).
    h = hashlib.sha256()
    n = 0
    async for c in await fs.read_bytes_stream(str(remote), chunk_size=CHUNK):
        h.update(c)
        n += len(c)
    assert n == LARGE_SIZE
    assert h.hexdigest() == digest
    # Ranged reads inside the large file, crossing chunk boundaries.
    with open(local, "rb") as f:
        for start, length in [(0, 10), (CHUNK - 5, 10), (33 * CHUNK + 12345, 200_000)]:
            f.seek(start)
            expect = f.read(length)
            got = await fs.read_bytes(str(remote), range_header=f"bytes={start}-{start + length - 1}")
            assert got == expect
        f.seek(LARGE_SIZE - 7)
        assert await fs.read_bytes(str(remote), range_header="bytes=-7") == f.read()
    print(f"64 MiB upload {upload_s:.2f}s")


# ---- info ----


async def test_c118_info_fields(fs: FilesystemAdapter, work):
    a, b = str(work / "A.txt"), str(work / "B.txt")
    await fs.write_files([WriteEntry(path=a, data="aaa", mode=644), WriteEntry(path=b, data="bb", mode=600)])
    info = await fs.get_file_info([a, b])
    assert set(info) == {a, b}
    ia = info[a]
    assert ia.path == a and ia.entry_type == "file" and ia.size == 3 and ia.mode == 644
    assert ia.owner and ia.group
    # C137: a fresh file's ctime and mtime are within 2 s.
    assert abs((ia.modified_at - ia.created_at).total_seconds()) <= 2
    assert abs(ia.modified_at.timestamp() - time.time()) < 120
    d = await fs.get_file_info([str(work)])
    assert d[str(work)].entry_type == "directory"


async def test_c119_symlink_and_missing(fs: FilesystemAdapter, work):
    (work / "target.txt").write_text("t")
    os.symlink(work / "target.txt", work / "link")
    info = await fs.get_file_info([str(work / "link")])
    assert info[str(work / "link")].entry_type == "symlink"
    with pytest.raises(SandboxApiException) as ei:
        await fs.get_file_info([str(work / "nope")])
    assert ei.value.status_code == 404 and ei.value.error.code == "FILE_NOT_FOUND"


async def test_c120_home_expansion(fs: FilesystemAdapter, execd):
    await fs.write_file("~/sdk-home.txt", "home")
    assert (execd.home / "sdk-home.txt").read_text() == "home"
    info = await fs.get_file_info(["~/sdk-home.txt"])
    assert info["~/sdk-home.txt"].path == str(execd.home / "sdk-home.txt")
    assert await fs.read_file("$HOME/sdk-home.txt") == "home"


async def test_c137_rewrite_moves_mtime_forward(fs: FilesystemAdapter, work):
    p = str(work / "m.txt")
    await fs.write_file(p, "one")
    first = (await fs.get_file_info([p]))[p].modified_at
    os.utime(p, (time.time() - 100, time.time() - 100))
    await fs.write_file(p, "two")
    second = (await fs.get_file_info([p]))[p].modified_at
    assert second > first - timedelta(seconds=1)
    assert second.timestamp() > time.time() - 60


# ---- delete / move / permissions ----


async def test_c121_delete_files(fs: FilesystemAdapter, work):
    p = work / "del.txt"
    p.write_text("x")
    await fs.delete_files([str(p)])
    assert not p.exists()
    await fs.delete_files([str(work / "never-existed.txt")])  # missing: success
    (work / "adir").mkdir()
    with pytest.raises(SandboxApiException) as ei:
        await fs.delete_files([str(work / "adir")])
    assert ei.value.status_code == 500
    assert (work / "adir").is_dir()


async def test_c124_move_creates_parents(fs: FilesystemAdapter, work):
    src = work / "src.txt"
    src.write_text("moving")
    dest = work / "new" / "dir" / "dest.txt"
    await fs.move_files([MoveEntry(src=str(src), dest=str(dest))])
    assert not src.exists()
    assert await fs.read_file(str(dest)) == "moving"
    with pytest.raises(SandboxApiException):
        await fs.read_file(str(src))


async def test_c125_move_errors(fs: FilesystemAdapter, work):
    with pytest.raises(SandboxApiException) as ei:
        await fs.move_files([MoveEntry(src=str(work / "missing"), dest=str(work / "d"))])
    assert ei.value.status_code == 404 and ei.value.error.code == "FILE_NOT_FOUND"
    (work / "s").write_text("s")
    (work / "d").write_text("d")
    with pytest.raises(SandboxApiException) as ei:
        await fs.move_files([MoveEntry(src=str(work / "s"), dest=str(work / "d"))])
    assert ei.value.status_code == 500
    assert (work / "s").read_text() == "s" and (work / "d").read_text() == "d"


async def test_c122_set_permissions(fs: FilesystemAdapter, work):
    p = str(work / "perm.txt")
    await fs.write_file(p, "p", mode=644)
    await fs.set_permissions([SetPermissionEntry(path=p, mode=600)])
    assert (await fs.get_file_info([p]))[p].mode == 600
    if has_nobody():
        await fs.set_permissions([SetPermissionEntry(path=p, mode=755, owner="nobody", group="nogroup")])
        i = (await fs.get_file_info([p]))[p]
        assert (i.mode, i.owner, i.group) == (755, "nobody", "nogroup")
        # D30: a mode-only chmod leaves ownership as it is.
        await fs.set_permissions([SetPermissionEntry(path=p, mode=700)])
        i = (await fs.get_file_info([p]))[p]
        assert (i.mode, i.owner, i.group) == (700, "nobody", "nogroup")
    with pytest.raises(SandboxApiException) as ei:
        await fs.set_permissions([SetPermissionEntry(path=p, mode=789)])
    assert ei.value.status_code == 500


# ---- search / replace ----


async def test_c126_search(fs: FilesystemAdapter, work):
    (work / "sub" / "deep").mkdir(parents=True)
    for rel in ["a.txt", "sub/b.txt", "sub/deep/c.txt", "sub/d.log", ".hidden.txt"]:
        (work / rel).write_text(rel)
    found = await fs.search(SearchEntry(path=str(work), pattern="*.txt"))
    assert sorted(e.path for e in found) == sorted(
        str(work / r) for r in ["a.txt", "sub/b.txt", "sub/deep/c.txt", ".hidden.txt"]
    )
    assert all(e.entry_type == "file" for e in found)
    everything = await fs.search(SearchEntry(path=str(work), pattern="*"))
    assert len(everything) == 5  # files only, directories are not returned
    assert await fs.search(SearchEntry(path=str(work), pattern="*.nomatch")) == []
    with pytest.raises(SandboxApiException) as ei:
        await fs.search(SearchEntry(path=str(work / "missing"), pattern="*"))
    assert ei.value.status_code == 404


async def test_c129_replace_contents(fs: FilesystemAdapter, work):
    p = str(work / "r.txt")
    q = str(work / "q.txt")
    await fs.write_files([WriteEntry(path=p, data="foo bar foo baz foo"), WriteEntry(path=q, data="nothing")])
    results = await fs.replace_contents_detailed(
        [
            ContentReplaceEntry(path=p, old_content="foo", new_content="qux"),
            ContentReplaceEntry(path=q, old_content="foo", new_content="qux"),
        ]
    )
    counts = {r.path: r.replaced_count for r in results}
    assert counts == {p: 3, q: 0}
    assert await fs.read_file(p) == "qux bar qux baz qux"
    # Non-verbose: empty 200 body, tolerated by the SDK.
    await fs.replace_contents([ContentReplaceEntry(path=p, old_content="bar", new_content="BAR")])
    assert await fs.read_file(p) == "qux BAR qux baz qux"
    with pytest.raises(SandboxApiException) as ei:
        await fs.replace_contents([ContentReplaceEntry(path=str(work / "nope"), old_content="a", new_content="b")])
    assert ei.value.status_code == 404


# ---- directories ----


async def test_c134_create_directories_with_modes(fs: FilesystemAdapter, work):
    d1, d2 = work / "d1" / "nested", work / "d2"
    await fs.create_directories([WriteEntry(path=str(d1), mode=755), WriteEntry(path=str(d2), mode=644)])
    assert d1.is_dir() and d2.is_dir()
    info = await fs.get_file_info([str(d1), str(d2)])
    assert info[str(d1)].mode == 755 and info[str(d1)].entry_type == "directory"
    assert info[str(d2)].mode == 644
    # Existing directory: fine.
    await fs.create_directories([WriteEntry(path=str(d1), mode=755)])


async def test_c131_c132_list_directory(fs: FilesystemAdapter, work):
    (work / "alpha").mkdir()
    (work / "alpha" / "x.txt").write_text("x")
    (work / "alpha" / "y.txt").write_text("y")
    (work / "bravo.txt").write_text("b")
    (work / "charlie.txt").write_text("c")
    one = await fs.list_directory(DirectoryListEntry(path=str(work)))
    assert [e.path for e in one] == [str(work / n) for n in ["alpha", "bravo.txt", "charlie.txt"]]
    assert one[0].entry_type == "directory" and one[1].entry_type == "file"
    two = await fs.list_directory(DirectoryListEntry(path=str(work), depth=2))
    assert [e.path for e in two] == [
        str(work / n) for n in ["alpha", "alpha/x.txt", "alpha/y.txt", "bravo.txt", "charlie.txt"]
    ]
    assert await fs.list_directory(DirectoryListEntry(path=str(work), depth=0)) == []


async def test_c133_list_directory_errors(fs: FilesystemAdapter, work):
    (work / "f.txt").write_text("f")
    with pytest.raises(SandboxApiException) as ei:
        await fs.list_directory(DirectoryListEntry(path=str(work / "f.txt")))
    assert ei.value.status_code == 400
    with pytest.raises(SandboxApiException) as ei:
        await fs.list_directory(DirectoryListEntry(path=str(work / "missing")))
    assert ei.value.status_code == 404


async def test_c136_delete_directories(fs: FilesystemAdapter, work):
    d = work / "tree"
    (d / "a" / "b").mkdir(parents=True)
    (d / "a" / "b" / "f.txt").write_text("f")
    await fs.delete_directories([str(d)])
    assert not d.exists()
    await fs.delete_directories([str(work / "missing-dir")])  # missing: success
    with pytest.raises(SandboxApiException) as ei:
        await fs.get_file_info([str(d)])
    assert ei.value.status_code == 404


# ---- sync adapter ----


def test_sync_filesystem_round_trip(sync_fs, work):
    p = str(work / "sync" / "f.txt")
    sync_fs.write_file(p, "sync data", mode=644)
    assert sync_fs.read_file(p) == "sync data"
    assert sync_fs.read_bytes(p, range_header="bytes=0-3") == b"sync"
    info = sync_fs.get_file_info([p])
    assert info[p].size == 9 and info[p].mode == 644
    listing = sync_fs.list_directory(DirectoryListEntry(path=str(work / "sync")))
    assert [e.path for e in listing] == [p]
    sync_fs.move_files([MoveEntry(src=p, dest=p + ".moved")])
    assert [e.path for e in sync_fs.search(SearchEntry(path=str(work), pattern="*.moved"))] == [p + ".moved"]
    sync_fs.delete_directories([str(work / "sync")])
    assert not (work / "sync").exists()
