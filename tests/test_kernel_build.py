"""Building the CPU kernels (kernels/loader.py) cannot hang: a build killed mid-compile leaves nothing that
blocks the next one, a complete build is loaded without compiling again, and a cache folder that cannot
be written to still gives a working kernel or one warning that says why.

Each process here runs in a fresh LLMACCEL_CACHE with a time limit, so a regression fails instead of
hanging. One full compile for the whole file (~1.5 min of CPU time), shared by the tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmaccel.kernels import loader

BUILD_TIMEOUT_S = 1200  # a full build on 2 busy cores took ~3 min; an orphaned lock would wait forever
START_TIMEOUT_S = 300  # until the killed process has started compiling (imports torch first)

BUILD = "from llmaccel.kernels import skinny; skinny.build()"
LOAD = """
import time
from llmaccel.kernels import skinny
t = time.perf_counter()
path = skinny.build()
print(f"{time.perf_counter() - t:.3f} {path}")
"""

pytestmark = pytest.mark.skipif(
    (shutil.which("c++") or shutil.which("g++")) is None or shutil.which("ninja") is None,
    reason="building the kernels needs a C++ compiler and ninja",
)


def _env(cache: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LLMACCEL_CACHE", "TMPDIR")}
    return env | {"LLMACCEL_CACHE": str(cache)} | extra


def _start(code: str, env: dict[str, str]) -> subprocess.Popen:
    # its own process group, so that a kill takes ninja and the compilers with it
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _kill(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait()


def _run(code: str, env: dict[str, str], timeout: float) -> tuple[str, str]:
    """(stdout, stderr) of `python -c code`; fails the test if it errors or runs past `timeout`."""
    p = _start(code, env)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(p)
        pytest.fail(f"`{code.strip()}` did not finish in {timeout} s (waiting on a lock left by the killed build?)")
    assert p.returncode == 0, err[-3000:]
    return out, err


def _warnings(stderr: str, text: str) -> list[str]:
    return [line for line in stderr.splitlines() if text in line]


@pytest.fixture(scope="module")
def built_after_kill(tmp_path_factory):
    """A build killed (SIGKILL, whole process group) while its compilers run, then a build in the same
    cache: (cache folder, the second build's stderr, its wall time)."""
    cache = tmp_path_factory.mktemp("kernel-cache")
    env = _env(cache)
    p = _start(BUILD, env)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not list((cache / "torch_extensions").glob(".llmaccel_cpu_kernels_*/build.ninja")):
            assert p.poll() is None, f"the build ended before it could be killed: {p.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "the build did not start compiling"
            time.sleep(0.2)
        time.sleep(3)  # the compilers are running now; a whole build takes over a minute
        assert p.poll() is None and not list((cache / "torch_extensions").glob("llmaccel_cpu_kernels_*/*.so"))
    finally:
        _kill(p)
    t = time.perf_counter()
    _, err = _run(BUILD, env, BUILD_TIMEOUT_S)
    return cache, err, time.perf_counter() - t


def test_build_after_a_killed_build_completes(built_after_kill):
    cache, err, seconds = built_after_kill
    builds = list((cache / "torch_extensions").glob("llmaccel_cpu_kernels_*/llmaccel_cpu_kernels_*.so"))
    assert len(builds) == 1
    assert len(_warnings(err, "compiling llmaccel's CPU kernels")) == 1, err  # said once, at WARNING
    print(f"build after a killed one: {seconds:.0f} s")


def test_second_load_does_not_recompile(built_after_kill):
    cache, _, _ = built_after_kill
    (so,) = (cache / "torch_extensions").glob("llmaccel_cpu_kernels_*/*.so")
    mtime = so.stat().st_mtime_ns
    out, err = _run(LOAD, _env(cache), timeout=120)
    seconds, path = out.splitlines()[-1].split()
    assert Path(path) == so and so.stat().st_mtime_ns == mtime
    assert float(seconds) < 2.0, seconds  # an import of the .so: no compiler, no ninja, no lock
    assert "compiling" not in err, err


def test_unwritable_cache_uses_a_private_folder(built_after_kill, tmp_path):
    """A cache folder that cannot be created or written (here: its parent is a file, since the tests may
    run as root, who can write to any read-only folder) builds into this user's folder in the temp dir
    and loads from there later; here that folder already holds the build, so nothing compiles."""
    cache, _, _ = built_after_kill
    (blocker := tmp_path / "not-a-folder").write_text("")
    private = tmp_path / "tmp" / f"llmaccel-{os.getuid()}"
    private.mkdir(parents=True, mode=0o700)
    shutil.copytree(cache / "torch_extensions", private / "torch_extensions",
                    ignore=shutil.ignore_patterns(".llmaccel_cpu_kernels_*"))
    out, err = _run(LOAD, _env(blocker / "cache", TMPDIR=str(tmp_path / "tmp")), timeout=120)
    assert Path(out.splitlines()[-1].split()[1]).is_relative_to(private)
    assert "compiling" not in err and "unavailable" not in err, err


def test_no_compiler_warns_once(tmp_path):
    """No compiler and no build: the fallback says so once, at WARNING, with the reason."""
    code = """
from llmaccel.kernels import skinny
assert not skinny.available() and not skinny.available()
try:
    skinny.build()
except RuntimeError as e:
    assert "no C++ compiler" in str(e)
"""
    env = _env(tmp_path / "cache", PATH=str(tmp_path / "empty-bin"))
    env.pop("CXX", None)
    _, err = _run(code, env, timeout=120)
    assert len(_warnings(err, "CPU kernels are unavailable")) == 1, err
    assert "no C++ compiler" in err


def test_concurrent_builds_both_keep_a_working_build(tmp_path):
    """Two processes that finish the same build at once: the first rename wins, the second keeps it."""
    root = tmp_path / "torch_extensions"
    name = "llmaccel_cpu_kernels_0123456789ab"
    tmps = []
    for i in range(2):
        d = root / f".{name}.host.{i}.x"
        d.mkdir(parents=True)
        (d / f"{name}.so").write_text(str(i))
        tmps.append(d)
    for d in tmps:
        loader._publish(d, root / name)
    assert (root / name / f"{name}.so").read_text() == "0"
    assert tmps[1].exists()  # the loser's folder, which its caller removes
