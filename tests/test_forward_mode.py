"""Forward mode equals reverse mode on every registered model, at its smallest input.

For each model (``inception_jax.list_models()``, the FID network included) at the
smallest size its input check accepts (``ModelInfo.min_input_size``), batch 2, in
float64: the directional derivative of the loss along a random tangent (params and
input together) by ``jax.jvp`` equals ``<grad, t>`` by ``jax.grad``, in train mode
(batch statistics, BatchNorm statistics mutable, dropout) and in eval mode (running
statistics). test_platforms.py compares the two for the 32 px and smaller models only,
through the trainer's float32 cross-entropy (so to 1e-6); the 75 px ones are traced
there, not run. Here the loss is float64 too, and the two modes agree to 5e-13 or
better on every model, 1e-14 on most (measured 2026-12-07, printed with ``-s``), so a
wrong derivative rule anywhere shows against the 1e-9 bound.

No finite difference: the loss is only piecewise smooth (ReLU, max pool), and at these
sizes a step along t crosses kinks (eval mode, step 1e-7: googlenet_paper at 1 px is
off by 5e-2, googlenet_cifar at 2 px by 4e-4); in train mode at batch 2 BatchNorm over
two values amplifies layer by layer (directional derivatives up to 1e9), so a step
small enough to see the derivative is below float64's resolution.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_sizes import FEATURE_EXTRACTORS, package_models

from inception_jax import models
from inception_jax.train.programs import init_variables, run_once

BATCH = 2
AD_RTOL = 1e-9  # jvp vs <grad, t>, float64
NAMES = sorted(package_models() + list(FEATURE_EXTRACTORS))
# compile time dominates (one float64 program with both modes' jvp and gradient). CI
# runs inception_cifar (18 s of CPU, measured 2026-12-07); the others take 3-5 times as
# long, the 75 px ones about 10 times (and inception_v4 9 GB of memory), so they are
# marked slow and heavy: about 25 min of CPU in all, which .ci/run leaves out to keep CI
# within its time (run them with `python -m pytest -m heavy`)
FAST = {"inception_cifar"}


def test_every_registered_model_is_covered():
    assert NAMES == sorted(
        n for n in models.list_models() if models.get_info(n).builder.__module__.startswith("inception_jax.")
    )


def _setup(name):
    """(model in float64, float64 variables, input, labels) at the smallest input size;
    aux heads on where they are by default and fit at that size."""
    info = models.get_info(name)
    size = info.min_input_size
    kwargs = {}
    if info.has_aux and info.min_aux_input_size and size < info.min_aux_input_size:
        kwargs["aux_logits"] = False
    model32 = models.create(name, num_classes=10, **kwargs)
    variables = jax.device_get(init_variables(model32, jax.random.PRNGKey(0), (BATCH, size, size, 3)))
    x = np.random.RandomState(1).standard_normal((BATCH, size, size, 3))
    model = models.create(name, num_classes=10, dtype=jnp.float64, **kwargs)
    variables = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), variables)
    return model, variables, jnp.asarray(x, jnp.float64), jnp.arange(BATCH) % 10


def _loss(outputs, labels):
    """Mean cross-entropy of the logits plus 0.3 x each aux head's, in the logits' dtype
    (the trainer's ``combined_loss`` computes it in float32, which would cap the
    agreement at float32's precision)."""
    total = 0.0
    for k, logits in enumerate(outputs if isinstance(outputs, (tuple, list)) else (outputs,)):
        log_p = jax.nn.log_softmax(logits)
        total = total + (0.3 if k else 1.0) * -jnp.mean(log_p[jnp.arange(len(labels)), labels])
    return total


def _random_like(tree, seed):
    rng = np.random.RandomState(seed)
    return jax.tree_util.tree_map(lambda a: jnp.asarray(rng.standard_normal(a.shape), a.dtype), tree)


def _dot(a, b):
    return sum(jnp.vdot(u, v) for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def _derivatives(name):
    model, variables, x, labels = _setup(name)
    stats = variables["batch_stats"]
    t = (_random_like(variables["params"], 5), jnp.asarray(np.random.RandomState(6).standard_normal(x.shape)))

    def train(params, x):
        out, upd = model.apply(
            {"params": params, "batch_stats": stats},
            x,
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": jax.random.PRNGKey(2)},
        )
        return _loss(out, labels), upd["batch_stats"]

    def evaluate(params, x):
        return _loss(model.apply({"params": params, "batch_stats": stats}, x), labels)

    def run(params, x):
        out = {}
        for mode, f in (("train", lambda p, x: train(p, x)[0]), ("eval", evaluate)):
            out[f"{mode}_jvp"] = jax.jvp(f, (params, x), t)[1]
            out[f"{mode}_grad_t"] = _dot(jax.grad(f, argnums=(0, 1))(params, x), t)
        return out

    # one program, run once: compiled without XLA's backend optimisation (run_once),
    # about half the compile time on a CPU
    return jax.device_get(run_once(run, variables["params"], x))


HEAVY = [pytest.mark.slow, pytest.mark.heavy]


@pytest.mark.parametrize("name", [n if n in FAST else pytest.param(n, marks=HEAVY) for n in NAMES])
def test_jvp_equals_gradient_dot_tangent_in_train_and_eval_mode(name):
    with jax.enable_x64(True):
        r = _derivatives(name)
    for mode in ("train", "eval"):
        jvp, grad_t = r[f"{mode}_jvp"], r[f"{mode}_grad_t"]
        print(f"{name} {mode}: jvp {jvp:.6e}, |jvp/<grad,t> - 1| {abs(jvp / grad_t - 1):.1e}")
        assert np.isfinite(jvp) and abs(grad_t) > 0, (mode, jvp, grad_t)
        np.testing.assert_allclose(jvp, grad_t, rtol=AD_RTOL, err_msg=mode)
