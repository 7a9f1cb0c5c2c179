"""``python tests/reliability_worker.py <train.py flags>``: train.py with a tiny
Inception model (``tiny_inception``) registered, so the reliability tests can
start, kill and restart real training processes in a few seconds each.

Environment knobs used by the tests:
  RELIABILITY_FSIZE_LIMIT=<bytes>   cap the size of any file this process writes
                                    (RLIMIT_FSIZE; writes past it fail with EFBIG,
                                    which stands in for a full disk).
  RELIABILITY_EXAMPLE_LOG=<path>    append "step: record indices" for every streamed
                                    training batch (flushed before the step runs).
  RELIABILITY_STEP_SECONDS=<float>  sleep this long per in-memory training step
                                    (before the call that runs it), so a signal
                                    lands in mid-run.
  RELIABILITY_STOP_LOG=<path>       append "<process index> <step>" when the stop
                                    request tells this process to stop after a step.
  RELIABILITY_STEP_LOG=<path>       append the number of every finished train step
                                    (its results computed) to <path>.
  RELIABILITY_SLOW_SAVE=<seconds>   every checkpoint write first sleeps this long in
                                    its background thread (a slow disk).
"""

import os
import resource
import signal
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import flax.linen as nn
import numpy as np

from inception_jax import nn as layers
from inception_jax.models.registry import ModelInfo, register


class TinyInception(nn.Module):
    """conv 3->8, one Inception module, global pool, classifier."""

    num_classes: int = 4
    dtype: object = None
    axis_name: object = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        conv = layers.make_conv(self.dtype or x.dtype, self.axis_name)
        x = conv(8, 3, 1, 1, name="conv1")(x, train)
        x = layers.max_pool(x, 2)
        x = layers.InceptionModule(8, 4, 4, 4, 2, 4, 4, conv=conv, name="inception3a")(x, train)
        x = layers.global_avg_pool(x)
        return layers.dense(self.num_classes, self.dtype or x.dtype, "fc")(x)


register(ModelInfo("tiny_inception", TinyInception, 8, 4, num_classes=4))

if __name__ == "__main__":
    limit = os.environ.get("RELIABILITY_FSIZE_LIMIT")
    if limit:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), int(limit)))
    log_path = os.environ.get("RELIABILITY_EXAMPLE_LOG")
    if log_path:
        from inception_jax.train import inputs

        streamed = inputs.StreamingData.train_args

        def logged(self, step):
            args = streamed(self, step)
            ids = " ".join(str(int(i)) for i in np.asarray(args[3]))
            with open(log_path, "a") as f:
                f.write(f"{step}: {ids}\n")
            return args

        inputs.StreamingData.train_args = logged
    delay = float(os.environ.get("RELIABILITY_STEP_SECONDS", "0"))
    if delay:
        from inception_jax.train import inputs

        one, several = inputs.InMemoryData.train_args, inputs.InMemoryData.train_steps_args

        def slow_one(self, step):
            time.sleep(delay)
            return one(self, step)

        def slow_several(self, step, n):
            time.sleep(delay * n)
            return several(self, step, n)

        inputs.InMemoryData.train_args = slow_one
        inputs.InMemoryData.train_steps_args = slow_several
    stop_log = os.environ.get("RELIABILITY_STOP_LOG")
    if stop_log:
        import jax

        from inception_jax.train import signals

        decide = signals.StopRequest.should_stop

        def logged_stop(self, step):
            stop = decide(self, step)
            if stop:
                with open(stop_log, "a") as f:
                    f.write(f"{jax.process_index()} {step}\n")
            return stop

        signals.StopRequest.should_stop = logged_stop
    step_log = os.environ.get("RELIABILITY_STEP_LOG")
    if step_log:
        import jax

        from inception_jax.train import parallel

        runner_train = parallel.Runner.train

        def logged_train(self, state, *args):
            out = runner_train(self, state, *args)
            jax.block_until_ready(out)
            step = int(jax.device_get(out[0].step))
            with open(step_log, "a") as f:
                f.write(f"{step}\n")
            return out

        parallel.Runner.train = logged_train
    slow = float(os.environ.get("RELIABILITY_SLOW_SAVE", "0"))
    if slow:
        from inception_jax.checkpoint import manager

        write = manager.Checkpointer._write

        def slow_write(self, *args, **kwargs):
            time.sleep(slow)
            return write(self, *args, **kwargs)

        manager.Checkpointer._write = slow_write
    from absl import app

    import train

    app.run(train.main)
