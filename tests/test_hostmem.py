"""inception_jax.hostmem: a step's large temporary block is reused, not page-faulted
in again.

Each case runs in a fresh interpreter (the settings are process-wide and must be made
before JAX creates its CPU client); the kernel's minor-fault count is the referee.
"""

import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = 5 * (256 << 20) // os.sysconf("SC_PAGE_SIZE")  # the five blocks' pages
# Reused, the blocks fault nothing; but now and then (1 run in 4 here, after three
# warm-up calls) a small allocation lands just above a freed block and the next block
# is carved once from fresh heap. So: at most one of the five blocks faulted in.
AT_MOST_ONE_BLOCK = PAGES // 5 + 1000

# Like XLA:CPU's per-step temporary block: a jitted call whose 256 MB intermediate
# (a running sum, which no kernel library computes with memory of its own) lives only
# inside the call, made five times over.
SCRIPT = textwrap.dedent("""
    import resource, sys
    from inception_jax import hostmem
    assert "jax" not in sys.modules, "importing inception_jax.hostmem imported jax"
    applied = hostmem.reuse_freed_memory() if sys.argv[1] == "tuned" else False
    import jax

    x = jax.numpy.ones((32 << 20,))
    step = jax.jit(lambda x: jax.numpy.cumsum(x * 2)[:: 1 << 12])
    assert step.lower(x).compile().memory_analysis().temp_size_in_bytes == 256 << 20
    for _ in range(3):  # the first calls may fault: the heap grows to its working size
        jax.block_until_ready(step(x))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        jax.block_until_ready(step(x))
    print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _run(mode, env_extra=None, extra_path=()):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, *extra_path])}
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
def test_reuse_freed_memory_stops_page_faults_for_large_blocks():
    applied, default_faults = _run("default")
    assert not applied
    # default: every 256 MB block is a fresh mmap, each page faulted in again
    assert default_faults > 0.9 * PAGES, (default_faults, PAGES)
    applied, tuned_faults = _run("tuned")
    assert applied
    assert tuned_faults < AT_MOST_ONE_BLOCK, (tuned_faults, PAGES)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_opt_out_leaves_malloc_alone():
    applied, faults = _run("tuned", {"INCEPTION_JAX_DEFAULT_MALLOC": "1"})
    assert not applied
    assert faults > 0.9 * PAGES


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_left_alone_where_jax_may_use_an_accelerator(tmp_path):
    # an installed accelerator plugin (as jax[cuda] installs jax_plugins.xla_cuda12)
    plugin = tmp_path / "plugins" / "jax_plugins" / "xla_fake"
    plugin.mkdir(parents=True)
    (plugin / "__init__.py").write_text("")
    path = [str(tmp_path / "plugins")]
    applied, faults = _run("tuned", {"JAX_PLATFORMS": None}, extra_path=path)
    assert not applied
    assert faults > 0.9 * PAGES
    # ... unless JAX is told to use the CPU
    applied, faults = _run("tuned", {"JAX_PLATFORMS": "cpu"}, extra_path=path)
    assert applied and faults < AT_MOST_ONE_BLOCK
