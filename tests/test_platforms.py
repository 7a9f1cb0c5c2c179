"""One program on every platform, for every registered model at a small input:

* forward-mode autodiff (``jax.jvp``, ``jax.jacfwd``, ``jax.linearize``, Hessian-vector
  products) works in eval and train mode and agrees with reverse mode;
* the CPU kernels (``inception_jax.backends.cpu``) give the loss, gradients and
  BatchNorm statistics of the plain program;
* bf16 compute with fp32 params gives finite gradients close to fp32's.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inception_jax import models
from inception_jax.backends import cpu_kernels
from inception_jax.training import combined_loss
from numerics import tree_rel_l2

# small inputs: each model's smallest comfortable size (v3/v4/irv2 need 75; v3's aux
# head needs 299, too slow to differentiate on a CPU, so its train mode runs without it)
SIZES = {"bn_inception": 32, "googlenet": 32, "googlenet_cifar": 16, "googlenet_paper": 32,
         "inception_cifar": 16, "inception_resnet_v2": 75, "inception_v3": 75, "inception_v4": 75}
BATCH = 2


def test_every_registered_model_is_covered():
    assert sorted(SIZES) == models.list_models()


@functools.lru_cache(maxsize=None)
def _case(name, dtype=jnp.float32):
    kwargs = {"aux_logits": False} if name == "inception_v3" else {}
    model = models.create(name, num_classes=10, dtype=dtype, **kwargs)
    size = SIZES[name]
    x = jax.random.normal(jax.random.PRNGKey(1), (BATCH, size, size, 3))
    variables = models.init(model, jax.random.PRNGKey(0), x.shape)
    return model, variables, x


def _train_loss(model, variables, x, labels):
    def loss(params):
        out, upd = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                               train=True, mutable=["batch_stats"],
                               rngs={"dropout": jax.random.PRNGKey(2)})
        return combined_loss(out, labels, 0.3, 0.0)[0], upd["batch_stats"]
    return loss


def _tree_dot(a, b):
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def _random_like(tree, seed):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return treedef.unflatten([jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])


@pytest.mark.parametrize("name", sorted(SIZES))
def test_forward_mode_autodiff_agrees_with_reverse_mode(name):
    model, v, x = _case(name)
    labels = jnp.arange(BATCH) % 10
    loss = _train_loss(model, v, x, labels)
    t_x = jax.random.normal(jax.random.PRNGKey(3), x.shape)
    u = jax.random.normal(jax.random.PRNGKey(4), (BATCH, 10))
    t_p = _random_like(v["params"], 5)

    def f(x):
        return model.apply(v, x)

    # every forward-mode tool traces (a custom_vjp anywhere would raise here): jacfwd,
    # linearize and Hessian-vector products (jvp of grad) in train mode
    jax.eval_shape(lambda x: jax.jacfwd(lambda s: f(x + s * t_x))(0.0), x)
    jax.eval_shape(lambda x: jax.linearize(f, x)[1](t_x), x)
    jax.eval_shape(lambda p: jax.jvp(jax.grad(lambda p: loss(p)[0]), (p,), (t_p,)), v["params"])

    @jax.jit
    def run(params, x):
        y, jvp_eval = jax.jvp(f, (x,), (t_x,))                                  # eval mode
        vjp_eval = jax.vjp(f, x)[1](u)[0]
        (l0, _), (jvp_train, _) = jax.jvp(loss, (params,), (t_p,))             # train mode
        grad = jax.grad(lambda p: loss(p)[0])(params)
        return dict(jvp_eval=jnp.vdot(u, jvp_eval), vjp_eval=jnp.vdot(vjp_eval, t_x),
                    jvp_train=jvp_train, grad_t=_tree_dot(grad, t_p), loss=l0)

    r = jax.device_get(run(v["params"], x))
    assert np.isfinite(r["loss"])
    # <u, J t> (forward) = <J^T u, t> (reverse), eval mode
    np.testing.assert_allclose(r["jvp_eval"], r["vjp_eval"], rtol=1e-4)
    # train mode (batch statistics, dropout): the loss's directional derivative, both modes
    np.testing.assert_allclose(r["jvp_train"], r["grad_t"], rtol=1e-4)


@pytest.mark.parametrize("name", ["inception_cifar", "googlenet"])
def test_jacfwd_linearize_and_symmetric_hessian_vector_products(name):
    model, v, x = _case(name)
    labels = jnp.arange(BATCH) % 10
    loss = _train_loss(model, v, x, labels)
    t_x = jax.random.normal(jax.random.PRNGKey(3), x.shape)
    t_p, s_p = _random_like(v["params"], 5), _random_like(v["params"], 6)

    @jax.jit
    def run(params, x):
        f = lambda x: model.apply({"params": params, "batch_stats": v["batch_stats"]}, x)  # noqa: E731
        jvp_full = jax.jvp(f, (x,), (t_x,))[1]
        jac = jax.jacfwd(lambda s: f(x + s * t_x))(0.0)                # d f(x + s t) / ds
        lin = jax.linearize(f, x)[1](t_x)
        g = jax.grad(lambda p: loss(p)[0])
        hvp_t, hvp_s = jax.jvp(g, (params,), (t_p,))[1], jax.jvp(g, (params,), (s_p,))[1]
        return dict(jvp=jvp_full, jac=jac, lin=lin, s_h_t=_tree_dot(s_p, hvp_t),
                    t_h_s=_tree_dot(t_p, hvp_s))

    r = jax.device_get(run(v["params"], x))
    np.testing.assert_allclose(r["jac"], r["jvp"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r["lin"], r["jvp"], rtol=1e-5, atol=1e-6)
    # train-mode Hessian-vector products (forward over reverse): <s, H t> = <t, H s>
    assert abs(r["s_h_t"]) > 0
    np.testing.assert_allclose(r["s_h_t"], r["t_h_s"], rtol=1e-2)


@pytest.mark.parametrize("name", sorted(SIZES))
def test_cpu_kernels_and_bf16_against_the_plain_fp32_program(name):
    model, v, x = _case(name)
    model16 = _case(name, jnp.bfloat16)[0]
    labels = jnp.arange(BATCH) % 10

    def grads(m, kernels):
        with cpu_kernels(kernels):
            fn = jax.jit(jax.value_and_grad(_train_loss(m, v, x, labels), has_aux=True))
            (loss, stats), g = fn(v["params"])
        return jax.device_get((loss, g, stats))

    plain, kernel, bf16 = grads(model, False), grads(model, True), grads(model16, False)

    # the CPU kernels: loss, gradients and BatchNorm statistics of the plain program
    np.testing.assert_allclose(kernel[0], plain[0], rtol=1e-5)
    assert tree_rel_l2(kernel[1], plain[1]) < 1e-5, tree_rel_l2(kernel[1], plain[1])
    assert tree_rel_l2(kernel[2], plain[2]) < 1e-5, tree_rel_l2(kernel[2], plain[2])
    # bf16 compute, fp32 params: finite fp32 gradients pointing the way fp32's do. At batch
    # 2, BatchNorm over bf16 activations is coarse: relative L2 0.27 for inception_cifar
    # (measured 2026-12-01); the other models' values are printed (-s) and not yet
    # measured, so the bounds are loose: a bf16 path that is broken (NaN, wrong sign or
    # scale) still fails them
    assert all(leaf.dtype == np.float32 for leaf in jax.tree_util.tree_leaves(bf16[1]))
    assert all(np.isfinite(leaf).all() for leaf in jax.tree_util.tree_leaves(bf16[1]))
    flat16 = np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(bf16[1])]).astype(np.float64)
    flat32 = np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(plain[1])]).astype(np.float64)
    cosine = flat16 @ flat32 / (np.linalg.norm(flat16) * np.linalg.norm(flat32))
    print(f"bf16 vs fp32 gradient {name}: relative L2 {tree_rel_l2(bf16[1], plain[1]):.4f}, cosine {cosine:.4f}")
    assert tree_rel_l2(bf16[1], plain[1]) < 1.0, tree_rel_l2(bf16[1], plain[1])
    assert cosine > 0.5, cosine
