"""Starting llama.cpp safely: the CPU checked against the build, AMX proved before use,
OpenMP told not to spin. A SIGILL would kill the test process, so probes run in children."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from autonomic.errors import ConfigError
from autonomic.models import _cpu

pytest.importorskip("xllamacpp", reason='needs pip install "autonomic[local]"')

from autonomic.models import _llamacpp

SRC = str(Path(__file__).parents[2] / "src")


def test_build_features_are_read_from_the_system_info() -> None:
    info = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | AVX512 = 0 | AMX_INT8 = 1 | OPENMP = 1 |"
    assert _cpu.build_features(info) == {"SSE3", "AVX", "AVX2", "AMX_INT8"}


def test_missing_instruction_sets_are_named() -> None:
    features = frozenset({"AVX", "AVX2", "FMA", "AMX_INT8"})
    assert _cpu.missing_features(features, frozenset({"avx", "fma"})) == ["AVX2"]
    assert _cpu.missing_features(features, None) == []


def test_this_build_runs_on_this_cpu() -> None:
    features = _cpu.build_features(_llamacpp.system_info())
    assert "AVX2" in features  # the prebuilt wheel: portable AVX2, no -march=native
    assert _cpu.missing_features(features, _cpu.cpu_flags()) == []


def test_a_child_killed_by_a_signal_does_not_count_as_running() -> None:
    assert _cpu.runs_in_child("pass")
    assert not _cpu.runs_in_child("import os, signal; os.kill(os.getpid(), signal.SIGILL)")


def test_the_amx_probe_faults_in_a_child_never_here() -> None:
    # Without Linux's permission AMX faults on every CPU: the child dies, this process lives.
    assert not _cpu.runs_in_child(_cpu._RUN_AMX)
    proved = _cpu.runs_in_child(_cpu._REQUEST_AMX + _cpu._RUN_AMX)
    if "amx_int8" in (_cpu.cpu_flags() or ()):
        assert _cpu.amx_runs() is proved
    else:
        assert not proved and not _cpu.amx_runs()


def test_a_build_this_cpu_cannot_run_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_llamacpp, "system_info", lambda: "CPU : AVX = 1 | AVX512 = 1 |")
    monkeypatch.setattr(_cpu, "cpu_flags", lambda: frozenset({"avx"}))
    with pytest.raises(ConfigError, match="needs AVX512, which this CPU lacks") as raised:
        _llamacpp.extra_buffers_allowed()
    assert "\n" not in str(raised.value)


def test_a_build_without_amx_keeps_its_extra_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_llamacpp, "system_info", lambda: "CPU : AVX2 = 1 | REPACK = 1 |")
    monkeypatch.setattr(_cpu, "amx_runs", lambda: pytest.fail("no AMX probe needed"))
    assert _llamacpp.extra_buffers_allowed()


@pytest.mark.parametrize(("runs", "use"), [(True, True), (False, False)])
def test_an_amx_build_uses_amx_only_where_it_runs(
    monkeypatch: pytest.MonkeyPatch, runs: bool, use: bool
) -> None:
    monkeypatch.setattr(_llamacpp, "system_info", lambda: "CPU : AVX2 = 1 | AMX_INT8 = 1 |")
    monkeypatch.setattr(_cpu, "cpu_flags", lambda: frozenset({"avx2", "amx_int8"}))
    monkeypatch.setattr(_cpu, "amx_runs", lambda: runs)
    assert _llamacpp.extra_buffers_allowed() is use


@pytest.mark.parametrize(("given", "seen"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_openmp_waits_passively_unless_told_otherwise(given: str | None, seen: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    code = "import os, autonomic.models._llamacpp; print(os.environ['OMP_WAIT_POLICY'])"
    done = subprocess.run(
        [sys.executable, "-c", code], env={**env, "PYTHONPATH": SRC}, capture_output=True, text=True
    )
    assert done.stdout.strip() == seen, done.stderr
