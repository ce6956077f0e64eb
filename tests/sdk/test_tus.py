"""Resumable uploads (EXTENSIONS X33) with a real tus client we did not write: tuspy, the tus
project's Python client, against `/files/tus` (directly, and through `/proxy/<port>` in the
suite's proxy pass, where the relative `Location` must keep the prefix). Multi-chunk uploads
with per-chunk checksums, a resume from the server's offset by a fresh uploader, and the async
uploader. The edge cases (409, 460, expiry, restart) are in tests/integration/upload.rs."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest
from tusclient import client as tus_client

from execd_server import ExecdServer

CHUNK = 256 * 1024


def payload(n: int) -> bytes:
    return os.urandom(n)


@pytest.fixture
def tus(execd: ExecdServer, base_path: str) -> tus_client.TusClient:
    return tus_client.TusClient(f"{execd.base_url}{base_path}/files/tus", headers=execd.headers())


def leftovers(d: Path) -> list[str]:
    return [p.name for p in d.iterdir() if p.name.startswith(".execd-")]


def test_x33_tuspy_uploads_a_multi_chunk_file(tus: tus_client.TusClient, work: Path, base_path: str) -> None:
    data = payload(5 * CHUNK + 1234)
    target = work / "sub" / "tuspy.bin"
    uploader = tus.uploader(
        file_stream=io.BytesIO(data),
        chunk_size=CHUNK,
        metadata={"path": str(target), "filename": "tuspy.bin"},
        upload_checksum=True,  # sha1 Upload-Checksum on every chunk
    )
    uploader.upload()
    assert uploader.offset == len(data)
    assert f"{base_path}/files/tus/" in uploader.url, uploader.url
    assert hashlib.sha256(target.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    assert leftovers(target.parent) == []


def test_x33_tuspy_resumes_from_the_server_offset(tus: tus_client.TusClient, work: Path) -> None:
    data = payload(4 * CHUNK + 17)
    target = work / "resumed.bin"
    first = tus.uploader(file_stream=io.BytesIO(data), chunk_size=CHUNK, metadata={"path": str(target)})
    # The client "dies" after two chunks: the file is not there yet, only the hidden partial.
    first.upload(stop_at=2 * CHUNK)
    assert first.offset == 2 * CHUNK
    assert not target.exists()
    assert len(leftovers(work)) == 1

    # A new uploader for the same URL asks the server for the offset and sends the rest.
    second = tus.uploader(file_stream=io.BytesIO(data), chunk_size=CHUNK, url=first.url, upload_checksum=True)
    assert second.get_offset() == 2 * CHUNK
    second.upload()
    assert target.read_bytes() == data
    assert leftovers(work) == []


async def test_x33_tuspy_async_uploader(tus: tus_client.TusClient, work: Path) -> None:
    data = payload(3 * CHUNK)
    target = work / "async.bin"
    uploader = tus.async_uploader(
        file_stream=io.BytesIO(data), chunk_size=CHUNK, metadata={"path": str(target)}, upload_checksum=True
    )
    await uploader.upload()
    assert target.read_bytes() == data
