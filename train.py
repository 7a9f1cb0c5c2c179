"""Train (or evaluate) an Inception model.

    python train.py --config configs/cifar10.py --workdir workdirs/cifar10
    python train.py --config configs/cifar10.py --workdir workdirs/cifar10 --config.batch_size=256
    python train.py --config configs/cifar10.py --workdir workdirs/cifar10 --mode=eval   # best checkpoint

Re-running with the same workdir resumes from its latest checkpoint.
"""

import difflib
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from inception_jax import hostmem

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
flags.DEFINE_enum(
    "mode",
    "train",
    ["train", "eval"],
    "train (resuming if possible) or eval: evaluate the workdir's best checkpoint.",
)
flags.mark_flags_as_required(["config", "workdir"])


def _unknown_override(argv):
    """(key, closest known keys, config file) for the first ``--config.KEY=`` the config file does
    not define, or None."""
    import importlib.util

    path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if path is None and "--config" in argv[:-1]:
        path = argv[argv.index("--config") + 1]
    if path is None:
        return None
    path, _, arg = path.partition(":")
    spec = importlib.util.spec_from_file_location("_train_config", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        config = module.get_config(arg) if arg else module.get_config()
    except Exception:  # noqa: BLE001 (the flag parser reports a broken config file itself)
        return None
    for a in argv:
        if not a.startswith("--config."):
            continue
        node, prefix = config, []
        for part in a[len("--config.") :].split("=", 1)[0].split("."):
            keys = list(node.keys()) if hasattr(node, "keys") else []
            if part not in keys:
                close = difflib.get_close_matches(part, keys, n=3)
                return ".".join(prefix + [part]), [".".join(prefix + [k]) for k in close], path
            node, prefix = node[part], prefix + [part]
    return None


def parse_flags(argv):
    """absl's flag parsing, with one line (exit 2) for an unknown ``--config.KEY``
    instead of ml_collections' traceback."""
    try:
        return FLAGS(argv)
    except (AttributeError, KeyError):
        unknown = _unknown_override(argv)
        if unknown is None:
            raise
        key, close, path = unknown
        hint = f"did you mean {' or '.join(close)}?" if close else f"{path} lists the keys"
        print(f"error: --config.{key}: no such config key; {hint}", file=sys.stderr)
        sys.exit(2)
    except flags.Error as e:
        print(f"error: {e}\n(python train.py --help lists the flags)", file=sys.stderr)
        sys.exit(2)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = FLAGS.config
    # Before JAX starts its threads, with the rule of the CPU kernels: on a CPU, XLA's
    # per-step temporary block is then reused instead of being mapped and zero-filled
    # again every step (inception_jax/hostmem.py).
    hostmem.follow(config.cpu_kernels)
    from absl import logging

    logging.set_verbosity(logging.ERROR)  # Orbax's notices; our own lines are printed
    from inception_jax.checkpoint import quiet_orbax_logs

    quiet_orbax_logs()
    import jax

    env = os.environ
    if "JAX_COORDINATOR_ADDRESS" in env and "JAX_NUM_PROCESSES" in env:
        # launched by hand, one process per host: JAX_COORDINATOR_ADDRESS=host0:port,
        # JAX_NUM_PROCESSES=N, JAX_PROCESS_ID=i
        jax.distributed.initialize(
            env["JAX_COORDINATOR_ADDRESS"], int(env["JAX_NUM_PROCESSES"]), int(env.get("JAX_PROCESS_ID", "0"))
        )
    elif any(
        k in env for k in ("JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE")
    ) or env.get("TPU_WORKER_HOSTNAMES"):
        jax.distributed.initialize()  # launched by a cluster manager: it tells JAX the rest
    hostmem.follow(config.cpu_kernels, jax_started=True)
    if config.compilation_cache_dir:
        cache = os.path.expanduser(config.compilation_cache_dir)
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    from inception_jax import train as training

    try:
        if FLAGS.mode == "eval":
            training.evaluate_workdir(config, FLAGS.workdir)
        else:
            training.train_and_evaluate(config, FLAGS.workdir)
    except (ValueError, FloatingPointError, OSError) as e:
        # bad input, a diverged run, a full disk: one line, no traceback; checkpoints
        # already written are kept. Exit at once: after a failed save, Orbax's writer
        # threads may still be failing and would print their errors at interpreter exit.
        print(f"error: {e}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(2)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
