"""Schedules, optimisers and the combined loss against PyTorch's."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from inception_jax import config as config_lib
from inception_jax import train as training

torch = pytest.importorskip("torch")


def _torch_lrs(make_sched, steps, base=0.1):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base)
    sched = make_sched(opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return np.array(lrs)


def test_step_schedule_is_torch_steplr_per_epoch():
    c = config_lib.base_config()
    c.learning_rate, c.schedule, c.step_size_epochs, c.gamma = 0.1, "step", 3, 0.1
    spe = 5
    sched = training.make_schedule(c, spe, 50)
    ours = np.array([sched(s) for s in range(0, 50)])
    per_epoch = _torch_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.1), 10)
    np.testing.assert_allclose(ours, np.repeat(per_epoch, spe), rtol=1e-6)


def test_cosine_schedule_is_torch_cosine_annealing():
    c = config_lib.base_config()
    c.learning_rate, c.schedule = 0.1, "cosine"
    sched = training.make_schedule(c, 1, 20)
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=20), 20)
    np.testing.assert_allclose([sched(s) for s in range(20)], ref, rtol=1e-5, atol=1e-8)


def test_exponential_staircase_and_warmup_by_hand():
    c = config_lib.base_config()
    c.learning_rate, c.schedule, c.step_size_epochs, c.gamma = 0.045, "exponential", 2, 0.94
    sched = training.make_schedule(c, 10, 100)
    assert float(sched(19)) == pytest.approx(0.045)
    assert float(sched(20)) == pytest.approx(0.045 * 0.94)
    assert float(sched(45)) == pytest.approx(0.045 * 0.94**2)
    c.warmup_epochs = 1.0
    sched = training.make_schedule(c, 10, 100)
    assert float(sched(0)) == 0.0 and float(sched(5)) == pytest.approx(0.0225)


@pytest.mark.parametrize(
    "name,torch_opt",
    [
        ("sgd", lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)),
        ("adam", lambda p: torch.optim.Adam(p, lr=1e-3, weight_decay=1e-4)),
        ("adamw", lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=1e-2)),
    ],
)
def test_optimizers_match_torch_over_three_steps(name, torch_opt):
    c = config_lib.base_config()
    c.optimizer, c.momentum, c.nesterov = name, 0.9, True
    c.learning_rate = 0.1 if name == "sgd" else 1e-3
    c.weight_decay = {"sgd": 5e-4, "adam": 1e-4, "adamw": 1e-2}[name]
    tx = training.make_optimizer(c, optax.constant_schedule(c.learning_rate))
    rng = np.random.RandomState(0)
    w0 = rng.randn(5).astype(np.float32)
    grads = [rng.randn(5).astype(np.float32) for _ in range(3)]
    params = jnp.asarray(w0)
    state = tx.init(params)
    for g in grads:
        upd, state = tx.update(jnp.asarray(g), state, params)
        params = optax.apply_updates(params, upd)
    p = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    opt = torch_opt([p])
    for g in grads:
        p.grad = torch.from_numpy(g)
        opt.step()
    np.testing.assert_allclose(params, p.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_combined_loss_is_main_plus_weighted_aux_like_torch():
    rng = np.random.RandomState(0)
    main, aux1, aux2 = (rng.randn(6, 10).astype(np.float32) for _ in range(3))
    labels = rng.randint(0, 10, 6)
    ce = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    t = lambda a: torch.from_numpy(a)  # noqa: E731
    ref = (ce(t(main), t(labels)) + 0.3 * ce(t(aux1), t(labels)) + 0.3 * ce(t(aux2), t(labels))).item()
    ours, logits = training.combined_loss(
        (jnp.asarray(main), jnp.asarray(aux1), jnp.asarray(aux2)), jnp.asarray(labels), 0.3, 0.1
    )
    assert float(ours) == pytest.approx(ref, rel=1e-5)
    np.testing.assert_array_equal(logits, main)
    single, _ = training.combined_loss(jnp.asarray(main), jnp.asarray(labels), 0.3, 0.0)
    assert float(single) == pytest.approx(torch.nn.CrossEntropyLoss()(t(main), t(labels)).item(), rel=1e-5)
