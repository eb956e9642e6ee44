"""Which instruction sets llama.cpp may use here, checked before it starts.

An instruction the CPU or the OS refuses kills the whole process with SIGILL, which no
``try`` can catch; so a build is checked against the CPU before it is started. AMX needs
more than a CPU flag: Linux must grant it (``arch_prctl``) and the hypervisor must enable it,
and some advertise AMX that then faults. It is proved by running one AMX instruction in a
child process.
"""

from __future__ import annotations

import platform
import re
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

__all__ = ["amx_runs", "build_features", "cpu_flags", "missing_features", "runs_in_child"]

# llama.cpp's names for what a build was compiled with, and Linux's names for the CPU flags.
_FLAG_OF = {
    "SSE3": "pni",
    "SSSE3": "ssse3",
    "AVX": "avx",
    "AVX_VNNI": "avx_vnni",
    "AVX2": "avx2",
    "F16C": "f16c",
    "FMA": "fma",
    "BMI2": "bmi2",
    "AVX512": "avx512f",
    "AVX512_VBMI": "avx512vbmi",
    "AVX512_VNNI": "avx512_vnni",
    "AVX512_BF16": "avx512_bf16",
    "AMX_INT8": "amx_int8",
}

# Asks Linux for the AMX tile state (exits 3 if refused).
_REQUEST_AMX = """
import ctypes, sys
if ctypes.CDLL(None).syscall(158, 0x1023, 18) != 0:  # ARCH_REQ_XCOMP_PERM, XTILEDATA
    sys.exit(3)
"""
# Runs ldtilecfg, tilezero and tilerelease: SIGILL wherever AMX is not really enabled.
_RUN_AMX = """
import ctypes, mmap
code = bytes.fromhex("c4e2784907" "c4e27b49c0" "c4e27849c0" "c3")
page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(code)
config = (ctypes.c_uint8 * 64)()
config[0], config[16], config[48] = 1, 64, 16  # palette 1; tile 0: 64 bytes x 16 rows
run = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
run(ctypes.addressof(config))
"""


def build_features(system_info: str) -> frozenset[str]:
    """The instruction sets a llama.cpp build reports (``AVX2 = 1 | ...``)."""
    return frozenset(re.findall(r"([A-Z0-9_]+) = 1", system_info)) & _FLAG_OF.keys()


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str] | None:
    """The CPU's flags as Linux reports them, or None where they cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    match = re.search(r"^flags\s*:(.*)$", text, re.MULTILINE)
    return frozenset(match.group(1).split()) if match else None


def missing_features(features: frozenset[str], flags: frozenset[str] | None) -> list[str]:
    """Instruction sets a build needs that the CPU lacks (none known when flags are unknown).

    AMX is left out: it is only reached through an optional buffer type, which
    ``amx_runs`` decides on.
    """
    if flags is None:
        return []
    return sorted(f for f in features - {"AMX_INT8"} if _FLAG_OF[f] not in flags)


@lru_cache(maxsize=1)
def amx_runs() -> bool:
    """Whether AMX instructions really run in a process here (proved in a child process)."""
    flags = cpu_flags()
    if sys.platform != "linux" or platform.machine() != "x86_64" or not flags:
        return False
    return "amx_int8" in flags and runs_in_child(_REQUEST_AMX + _RUN_AMX)


def runs_in_child(code: str) -> bool:
    """Whether ``code`` runs to the end in a fresh interpreter (one killed by a signal does not)."""
    try:
        child = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return child.returncode == 0
