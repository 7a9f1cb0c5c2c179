"""PyTorch reference models for the parity tests (torch is a test extra)."""

from __future__ import annotations

import numpy as np

torch = None


def _torch():
    global torch
    if torch is None:
        import torch as _t

        torch = _t
    return torch


def build(name: str, seed: int = 0, **kw):
    """The reference torch model for a registry name, with random weights and random
    BatchNorm statistics (so running stats matter in eval mode)."""
    t = _torch()
    t.manual_seed(seed)
    if name == "googlenet":
        from torchvision.models import googlenet

        m = googlenet(weights=None, init_weights=True, **kw)
    elif name == "inception_v3":
        from torchvision.models import inception_v3

        m = inception_v3(weights=None, init_weights=True, **kw)
    elif name in ("inception_v4", "inception_resnet_v2"):
        import timm

        m = timm.create_model(name, pretrained=False, **kw)
    elif name == "bn_inception":
        from pretrainedmodels.models.bninception import BNInception

        m = BNInception(**kw)
    else:
        raise KeyError(name)
    randomize_batchnorm(m, seed)
    return m


def randomize_batchnorm(model, seed: int = 0) -> None:
    t = _torch()
    g = t.Generator().manual_seed(seed + 1)
    with t.no_grad():
        for mod in model.modules():
            if isinstance(mod, t.nn.modules.batchnorm._BatchNorm):
                c = mod.num_features
                mod.running_mean.copy_(0.2 * t.randn(c, generator=g))
                mod.running_var.copy_(0.5 + t.rand(c, generator=g))
                mod.weight.copy_(0.5 + t.rand(c, generator=g))
                mod.bias.copy_(0.2 * t.randn(c, generator=g))


def run(model, x_nhwc: np.ndarray, train: bool = False):
    """Runs a torch model on NHWC numpy input; returns numpy outputs (tuple in train mode)."""
    t = _torch()
    model.train(train)
    for mod in model.modules():  # parity runs compare without dropout noise
        if isinstance(mod, t.nn.Dropout):
            mod.eval()
    x = t.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))
    with t.no_grad():
        out = model(x)
    if isinstance(out, tuple):
        return tuple(o.numpy() for o in out)
    return out.numpy()


def rel_l2(a, b) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def pytorch_fid_network(
    seed: int = 0,
    he_init: bool = False,
    running_mean=(-0.5, 0.5),
    running_var=(0.5, 2.0),
    weight=(0.5, 1.5),
    bias=(-0.2, 0.2),
):
    """pytorch-fid's own ``fid_inception_v3`` (its FIDInception blocks), with random
    weights and BatchNorm statistics and parameters drawn uniformly from the given
    ranges instead of the downloaded file. ``he_init``: He-initialised convolutions,
    whose features differ from image to image (torch's default init maps every image
    to nearly one point)."""
    from unittest import mock

    from pytorch_fid import inception as pfi

    t = _torch()
    t.manual_seed(seed)
    with (
        mock.patch.object(pfi, "load_state_dict_from_url", lambda *a, **k: None),
        mock.patch.object(t.nn.Module, "load_state_dict", lambda self, *a, **k: None),
    ):
        net = pfi.fid_inception_v3()
    with t.no_grad():
        for m in net.modules():
            if he_init and isinstance(m, t.nn.Conv2d):
                t.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if isinstance(m, t.nn.BatchNorm2d):
                m.running_mean.uniform_(*running_mean)
                m.running_var.uniform_(*running_var)
                m.weight.uniform_(*weight)
                m.bias.uniform_(*bias)
    return net.eval()
