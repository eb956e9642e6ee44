"""llama.cpp in this process (``xllamacpp``), started so that it cannot kill the process.

``xllamacpp`` ships prebuilt, portable wheels (AVX2, no ``-march=native``), so installing it
compiles nothing and pip never reuses a build made for another CPU. Before llama.cpp starts:
- ``OMP_WAIT_POLICY=PASSIVE`` (unless set): OpenMP threads that spin at barriers made
  generation 5-13x slower on a shared 2-core host;
- every instruction set the build was compiled for is checked against the CPU, and the
  AMX buffer type (the only way llama.cpp reaches AMX) is turned off unless AMX is proved
  to run here. A failure is a one-line error that says what to do, never a signal.

Its engine is llama.cpp's own server; it listens on a socket in a private directory, never
on a TCP port, and is called in-process.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, cast

from autonomic.errors import ConfigError, MissingExtra, ModelError
from autonomic.models import _cpu

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read by OpenMP when llama.cpp loads

try:
    import xllamacpp
except ModuleNotFoundError as e:
    raise MissingExtra("local", "the embedded local model") from e
except ImportError as e:  # the package is there but its library cannot be loaded
    raise ConfigError(
        f"llama.cpp (xllamacpp) cannot be loaded here ({e}); reinstall it with "
        'pip install --force-reinstall "autonomic[local]", or run a model on a server '
        "(--model openai:...@URL)"
    ) from None

__all__ = ["Engine", "engine", "extra_buffers_allowed", "system_info"]

_GGUF_MAGIC = b"GGUF"


def system_info() -> str:
    """What this llama.cpp build was compiled with (``AVX2 = 1 | ...``)."""
    return str(xllamacpp.get_system_info())


def extra_buffers_allowed() -> bool:
    """Refuse a build this CPU cannot run; whether llama.cpp's extra buffer types may be
    used: not when the build has AMX and AMX does not run here (they are its only way in)."""
    features = _cpu.build_features(system_info())
    missing = _cpu.missing_features(features, _cpu.cpu_flags())
    if missing:
        raise ConfigError(
            f"this llama.cpp build needs {', '.join(missing)}, which this CPU lacks; "
            "reinstall it for this machine (pip install --force-reinstall --no-binary xllamacpp "
            "xllamacpp) or run a model on a server (--model openai:...@URL)"
        )
    return "AMX_INT8" not in features or _cpu.amx_runs()


def _check_file(path: Path) -> None:
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise ConfigError(f"cannot read the model file {path}: {e.strerror}") from None
    if magic != _GGUF_MAGIC:
        raise ConfigError(f"{path} is not a GGUF model file")


class Engine:
    """One loaded model file; safe to call from any thread (llama.cpp queues the calls)."""

    def __init__(self, path: Path, n_ctx: int, n_threads: int | None) -> None:
        _check_file(path)
        extra_buffers = extra_buffers_allowed()
        self.path = path
        self.tool_role = True  # until its chat template refuses tool messages
        self._dir = tempfile.mkdtemp(prefix="autonomic-llama-")
        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_ctx = n_ctx
        params.n_parallel = 1
        params.verbosity = -1
        params.warmup = False
        params.no_extra_bufts = not extra_buffers
        params.hostnames = [os.path.join(self._dir, "llama.sock")]
        if n_threads is not None:
            params.cpuparams.n_threads = params.cpuparams_batch.n_threads = n_threads
        try:
            self._server: Any = xllamacpp.Server(params)
        except RuntimeError:
            self.close()
            raise ModelError(
                f"llama.cpp could not load {path} (an architecture this build does not know, "
                "a damaged file, or not enough memory): check the file, or upgrade llama.cpp "
                "with pip install -U xllamacpp"
            ) from None

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """One OpenAI-style chat completion (blocks; llama.cpp releases the GIL)."""
        try:
            result = self._server.handle_chat_completions(body)
        except ValueError as e:
            raise ModelError(f"llama.cpp refused the request: {e}") from None
        if isinstance(result, dict) and "error" in result:
            raise ModelError(f"llama.cpp failed: {result['error']!r:.300}")
        return cast(dict[str, Any], result)

    def close(self) -> None:
        self._server = None
        shutil.rmtree(self._dir, ignore_errors=True)


_engines: dict[tuple[Path, int, int | None], Engine] = {}
_engines_lock = threading.Lock()


def engine(path: Path, n_ctx: int, n_threads: int | None) -> Engine:
    """The process-wide engine of a model file and settings, loaded on first use."""
    key = (path, n_ctx, n_threads)
    with _engines_lock:
        if key not in _engines:
            if not _engines:
                atexit.register(_close_engines)
            _engines[key] = Engine(path, n_ctx, n_threads)
        return _engines[key]


def _close_engines() -> None:
    """Stop llama.cpp before the interpreter shuts down, and remove the sockets' directories."""
    with _engines_lock:
        for loaded in _engines.values():
            loaded.close()
        _engines.clear()
