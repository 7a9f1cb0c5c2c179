"""inception_jax.hostmem: freed large blocks are reused, not page-faulted in again.

Each case runs in a fresh interpreter (malloc settings are process-wide and must
be made before threads allocate); the kernel's minor-fault count is the referee.
"""

import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = 5 * (256 << 20) // os.sysconf("SC_PAGE_SIZE")  # the five blocks' pages

# Like XLA:CPU's per-step temporary block: a 256 MB block allocated, written and
# freed from a worker thread, five times over.
SCRIPT = textwrap.dedent("""
    import ctypes, resource, sys, threading
    from inception_jax import hostmem
    applied = hostmem.reuse_freed_memory() if sys.argv[1] == "tuned" else False
    import jax_free_check  # noqa: F401  (fails if JAX was imported by now)

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]

    def cycles(n):  # plain malloc/free (numpy would ask for huge pages)
        for _ in range(n):
            block = libc.malloc(256 << 20)
            ctypes.memset(block, 1, 256 << 20)
            libc.free(block)

    faults = []
    def work():
        cycles(1)  # the first one may fault: the heap grows
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        cycles(5)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    t = threading.Thread(target=work)
    t.start()
    t.join()
    print(applied, faults[0])
""")


def _run(mode, env_extra=None, tmp_path=None, extra_path=()):
    # a stand-in module that fails if JAX was imported before it (hostmem must not import JAX)
    (tmp_path / "jax_free_check.py").write_text(
        "import sys\nassert 'jax' not in sys.modules, 'inception_jax.hostmem imported jax'\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), ROOT, *extra_path])}
    env.pop("INCEPTION_JAX_DEFAULT_MALLOC", None)
    env["JAX_PLATFORMS"] = "cpu"
    for k, v in (env_extra or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_reuse_freed_memory_stops_page_faults_for_large_blocks(tmp_path):
    applied, default_faults = _run("default", tmp_path=tmp_path)
    assert not applied
    # default glibc: every 256 MB block is a fresh mmap, each page faulted in again
    assert default_faults > 0.9 * PAGES, (default_faults, PAGES)
    applied, tuned_faults = _run("tuned", tmp_path=tmp_path)
    assert applied
    assert tuned_faults < 0.01 * PAGES, (tuned_faults, PAGES)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_opt_out_leaves_malloc_alone(tmp_path):
    applied, faults = _run("tuned", {"INCEPTION_JAX_DEFAULT_MALLOC": "1"}, tmp_path=tmp_path)
    assert not applied
    assert faults > 0.9 * PAGES


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_left_alone_where_jax_may_use_an_accelerator(tmp_path):
    # an installed accelerator plugin (as jax[cuda] installs jax_plugins.xla_cuda12)
    plugin = tmp_path / "plugins" / "jax_plugins" / "xla_fake"
    plugin.mkdir(parents=True)
    (plugin / "__init__.py").write_text("")
    path = [str(tmp_path / "plugins")]
    applied, faults = _run("tuned", {"JAX_PLATFORMS": None}, tmp_path=tmp_path, extra_path=path)
    assert not applied
    assert faults > 0.9 * PAGES
    # ... unless JAX is told to use the CPU
    applied, faults = _run("tuned", {"JAX_PLATFORMS": "cpu"}, tmp_path=tmp_path, extra_path=path)
    assert applied and faults < 0.01 * PAGES
