"""Pretrained weights: the recorded preprocessing against torchvision / timm / Cadene,
weight-file reading (wrappers, safetensors, refused pickles), caches, fine-tuning
heads, Orbax round trip and pooled features against the references."""

import math
import os

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import real_images
import torch_refs as R

from inception_jax import models
from inception_jax import weights as P

TOL = 1e-4
PRETRAINED_MODELS = ["googlenet", "inception_v3", "inception_v4", "inception_resnet_v2", "bn_inception"]


def _one_line(excinfo):
    message = str(excinfo.value)
    assert "\n" not in message, message
    return message


# ----------------------------------------------------------------------------
# The recorded pretrained configs and class names vs. the references
# ----------------------------------------------------------------------------


def _torchvision_weights(name):
    from torchvision.models import GoogLeNet_Weights, Inception_V3_Weights

    return {"googlenet": GoogLeNet_Weights.IMAGENET1K_V1, "inception_v3": Inception_V3_Weights.IMAGENET1K_V1}[
        name
    ]


def _timm_cfg(name):
    import timm

    return timm.models.get_pretrained_cfg(f"{name}.tf_in1k")


@pytest.mark.parametrize("name", PRETRAINED_MODELS)
def test_pretrained_records_match_the_references(name):
    cfg = models.get_info(name).pretrained
    if name in ("googlenet", "inception_v3"):
        w = _torchvision_weights(name)
        t = w.transforms()
        assert cfg.url == w.url and cfg.filename == os.path.basename(w.url)
        assert (cfg.input_size, cfg.resize_size) == (t.crop_size[0], t.resize_size[0])
        assert cfg.interpolation == t.interpolation.value
        assert cfg.mean == tuple(t.mean) and cfg.std == tuple(t.std)
        assert cfg.num_classes == len(w.meta["categories"])
        assert cfg.accuracy == (
            w.meta["_metrics"]["ImageNet-1K"]["acc@1"],
            w.meta["_metrics"]["ImageNet-1K"]["acc@5"],
        )
        # torchvision builds these with transform_input=True whenever weights are given
        import inspect

        import torchvision.models as tvm

        builder = tvm.googlenet if name == "googlenet" else tvm.inception_v3
        assert '"transform_input", True' in inspect.getsource(builder)
        assert dict(cfg.model_kwargs) == {"transform_input": True}
    elif name == "bn_inception":
        import pretrainedmodels

        s = pretrainedmodels.pretrained_settings["bninception"]["imagenet"]
        assert cfg.url == s["url"] and cfg.filename == os.path.basename(s["url"])
        assert cfg.input_size == s["input_size"][1] == s["input_size"][2]
        assert cfg.resize_size == math.floor(cfg.input_size / 0.875)  # TransformImage scale
        assert (cfg.input_space, cfg.input_range) == (s["input_space"], max(s["input_range"]))
        assert cfg.mean == tuple(s["mean"]) and cfg.std == tuple(s["std"])
        assert (cfg.num_classes, cfg.label_offset) == (s["num_classes"], 0)
    else:
        t = _timm_cfg(name)
        assert cfg.hf_hub_id == t.hf_hub_id and t.hf_hub_id in cfg.url
        assert (3, cfg.input_size, cfg.input_size) == t.input_size
        assert cfg.resize_size == math.floor(cfg.input_size / t.crop_pct)
        assert t.crop_mode == "center" and cfg.interpolation == t.interpolation
        assert cfg.mean == t.mean and cfg.std == t.std
        assert (cfg.num_classes, cfg.label_offset) == (t.num_classes, 0)


def test_class_names_are_torchvisions():
    from torchvision.models import GoogLeNet_Weights

    assert list(P.imagenet_classes()) == GoogLeNet_Weights.IMAGENET1K_V1.meta["categories"]


# ----------------------------------------------------------------------------
# preprocess() vs. the references' eval transforms on photo-sized images
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_files(tmp_path_factory, synthetic_cifar):
    return real_images.write_images(tmp_path_factory.mktemp("images"), synthetic_cifar)


def _reference_transform(name):
    if name in ("googlenet", "inception_v3"):
        return _torchvision_weights(name).transforms()
    if name == "bn_inception":
        import pretrainedmodels
        from pretrainedmodels.utils import TransformImage

        return TransformImage(pretrainedmodels.pretrained_settings["bninception"]["imagenet"])
    import timm.data

    return timm.data.create_transform(
        **timm.data.resolve_data_config(pretrained_cfg=_timm_cfg(name).to_dict())
    )


@pytest.mark.parametrize("name", PRETRAINED_MODELS)
def test_preprocess_matches_reference_transform(name, image_files):
    from PIL import Image

    transform = _reference_transform(name)
    refs = []
    for path in image_files:
        with Image.open(path) as img:
            refs.append(transform(img.convert("RGB")).numpy().transpose(1, 2, 0))
    ref = np.stack(refs)
    ours = P.preprocess(image_files, name)  # paths
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    atol = 1e-4 if name == "bn_inception" else 1e-6  # values in [-128, 151]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=atol)
    # PIL images and uint8 arrays give the same
    with Image.open(image_files[1]) as img:
        np.testing.assert_allclose(P.preprocess(img, name)[0], ref[1], rtol=0, atol=atol)
        np.testing.assert_allclose(
            P.preprocess([np.asarray(img.convert("RGB"))], name)[0], ref[1], rtol=0, atol=atol
        )


def test_preprocess_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist") as e:
        P.preprocess(str(tmp_path / "missing.jpg"), "googlenet")
    assert "missing.jpg" in _one_line(e)
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    with pytest.raises(ValueError, match="could not be decoded") as e:
        P.preprocess([str(bad)], "googlenet")
    assert "bad.jpg" in _one_line(e)
    with pytest.raises(ValueError, match="no public pretrained weights"):
        P.preprocess(np.zeros((8, 8, 3), np.uint8), "googlenet_cifar")
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        P.preprocess(np.zeros((8, 8, 3), np.float32), "googlenet")


# ----------------------------------------------------------------------------
# Reading weight files
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def googlenet_ref():
    """torchvision GoogLeNet as the pretrained weights are used: transform_input=True,
    with aux heads; random weights and BatchNorm statistics."""
    return R.build("googlenet", transform_input=True, aux_logits=True)


@pytest.fixture(scope="module")
def googlenet_pth(googlenet_ref, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "googlenet.pth"
    torch.save(googlenet_ref.state_dict(), path)
    return str(path)


def _sd_numpy(module):
    return {k: v.numpy() for k, v in module.state_dict().items()}


def _assert_same_state_dict(loaded, ref):
    assert set(loaded) == set(ref)
    for k in ref:
        assert loaded[k].dtype == np.float32 or loaded[k].dtype == ref[k].dtype, k
        np.testing.assert_array_equal(loaded[k], ref[k], err_msg=k)


def test_load_torch_state_dict_unwraps_and_reads_safetensors(googlenet_ref, tmp_path):
    import safetensors.torch

    sd = googlenet_ref.state_dict()
    ref = _sd_numpy(googlenet_ref)
    for i, obj in enumerate(
        [sd, {"state_dict": sd, "epoch": 3}, {"model": sd}, {"module." + k: v for k, v in sd.items()}]
    ):
        path = tmp_path / f"w{i}.pt"
        torch.save(obj, path)
        _assert_same_state_dict(P.load_torch_state_dict(path), ref)
    path = tmp_path / "w.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    _assert_same_state_dict(P.load_torch_state_dict(path), ref)
    # bfloat16 (numpy cannot hold it) comes back as float32, like torch's .float()
    bf = {"a.weight": torch.randn(3, 4).to(torch.bfloat16)}
    safetensors.torch.save_file(bf, str(tmp_path / "bf.safetensors"))
    torch.save(bf, tmp_path / "bf.bin")
    for f in ("bf.safetensors", "bf.bin"):
        out = P.load_torch_state_dict(tmp_path / f)["a.weight"]
        np.testing.assert_array_equal(out, bf["a.weight"].float().numpy())


class _Evil:
    """Unpickling this would create ``marker`` (stands for arbitrary code)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_code_executing_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"conv.weight": torch.zeros(2), "payload": _Evil(str(marker))}, path)
    assert not marker.exists()
    with pytest.raises(ValueError) as e:
        P.load_torch_state_dict(path)
    message = _one_line(e)
    assert str(path) in message and "non-weight objects" in message
    assert "refused for safety" in message and ".safetensors" in message
    assert not marker.exists()
    # control (without unpickling): the file's pickle really calls open()
    import pickletools
    import zipfile

    with zipfile.ZipFile(path) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    globals_ = [arg for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"]
    assert "io open" in globals_ or "builtins open" in globals_


@pytest.mark.parametrize(
    "case,match",
    [
        ("missing", "does not exist"),
        ("directory", "is a directory"),
        ("extension", "unknown extension '.ckpt'"),
        ("corrupt", "could not be read as a torch"),
        ("list", "not a state_dict"),
    ],
)
def test_weight_file_errors_are_one_line(case, match, tmp_path):
    path = tmp_path / "w.pth"
    if case == "directory":
        path = tmp_path
    elif case == "extension":
        path = tmp_path / "w.ckpt"
        path.write_bytes(b"x")
    elif case == "corrupt":
        path.write_bytes(b"PK\x03\x04 truncated")
    elif case == "list":
        torch.save([torch.zeros(2)], path)
    with pytest.raises(ValueError, match=match) as e:
        P.load_torch_state_dict(path)
    assert str(path) in _one_line(e)


# ----------------------------------------------------------------------------
# load_pretrained: caches, fine-tuning heads, other layouts, Orbax round trip
# ----------------------------------------------------------------------------


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    return tmp_path


def test_load_pretrained_downloads_to_and_reads_the_caches(
    empty_caches, googlenet_ref, googlenet_pth, monkeypatch
):
    import dataclasses
    import pathlib

    with pytest.raises(ValueError, match="no googlenet weights found") as e:
        P.load_pretrained("googlenet", download=False)
    message = _one_line(e)
    expected = os.path.join(str(empty_caches), "torch", "hub", "checkpoints", "googlenet-1378be20.pth")
    assert expected in message
    assert "https://download.pytorch.org/models/googlenet-1378be20.pth" in message
    # "download" (from a file:// URL) into torch hub's cache, where
    # torchvision.models.googlenet(weights=...) puts it; the sha256 prefix in the name is
    # checked as torch.hub does, and these random weights do not have it
    cfg = models.get_info("googlenet").pretrained
    local = dataclasses.replace(cfg, url=pathlib.Path(googlenet_pth).as_uri())
    with monkeypatch.context() as m:
        from inception_jax.weights import hub

        m.setattr(hub, "pretrained_config", lambda name: local)  # where the download looks it up
        with pytest.raises(ValueError, match="does not start with the expected 1378be20"):
            P.load_pretrained("googlenet")
        assert not os.path.exists(expected) and not os.listdir(os.path.dirname(expected))
        local = dataclasses.replace(local, check_hash=False)
        P.load_pretrained("googlenet")
    with open(expected, "rb") as a, open(googlenet_pth, "rb") as b:
        assert a.read() == b.read()
    model, variables = P.load_pretrained("googlenet", download=False)  # from the cache
    assert model.transform_input and model.aux_logits and model.num_classes == 1000
    sd = _sd_numpy(googlenet_ref)
    np.testing.assert_array_equal(
        variables["params"]["inception4c"]["branch2_1"]["conv"]["kernel"],
        sd["inception4c.branch2.1.conv.weight"].transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(
        variables["batch_stats"]["aux2"]["conv"]["bn"]["var"], sd["aux2.conv.bn.running_var"]
    )
    # timm: the Hugging Face hub cache layout
    snap = os.path.join(
        str(empty_caches), "hf", "hub", "models--timm--inception_v4.tf_in1k", "snapshots", "0123abc"
    )
    os.makedirs(snap)
    open(os.path.join(snap, "model.safetensors"), "wb").close()
    assert P.cached_weights("inception_v4") == os.path.join(snap, "model.safetensors")


def test_fine_tuning_heads_are_replaced_and_the_rest_loaded(googlenet_ref, googlenet_pth):
    model, variables = P.load_pretrained(
        "googlenet", googlenet_pth, num_classes=10, rng=jax.random.PRNGKey(3)
    )
    assert model.num_classes == 10 and model.transform_input
    sd = _sd_numpy(googlenet_ref)
    params = variables["params"]
    assert params["fc"]["kernel"].shape == (1024, 10) and params["fc"]["bias"].shape == (10,)
    assert params["aux1"]["fc2"]["kernel"].shape == (1024, 10)
    assert params["aux2"]["fc2"]["kernel"].shape == (1024, 10)
    np.testing.assert_array_equal(params["aux1"]["fc1"]["kernel"], sd["aux1.fc1.weight"].T)
    np.testing.assert_array_equal(
        params["conv1"]["conv"]["kernel"], sd["conv1.conv.weight"].transpose(2, 3, 1, 0)
    )
    new = np.asarray(params["fc"]["kernel"])
    assert new.std() > 0 and not np.allclose(new, sd["fc.weight"][:10].T)
    _, no_aux = P.load_pretrained("googlenet", googlenet_pth, aux_logits=False)
    assert "aux1" not in no_aux["params"] and "aux1" not in no_aux["batch_stats"]


def test_cadene_1001_class_file_drops_the_background_class(tmp_path):
    """Cadene's original inceptionresnetv2 file: 1001 classes, classifier last_linear;
    his loader keeps rows 1: for the 1000 ImageNet classes."""
    from pretrainedmodels.models.inceptionresnetv2 import InceptionResNetV2

    torch.manual_seed(0)
    ref = InceptionResNetV2(num_classes=1001)
    path = tmp_path / "inceptionresnetv2-520b38e4.pth"
    torch.save(ref.state_dict(), path)
    model, variables = P.load_pretrained("inception_resnet_v2", path)
    assert model.num_classes == 1000
    w = ref.last_linear.weight.detach().numpy()
    np.testing.assert_array_equal(variables["params"]["classif"]["kernel"], w[1:].T)
    np.testing.assert_array_equal(
        variables["params"]["classif"]["bias"], ref.last_linear.bias.detach().numpy()[1:]
    )


def test_caffe_style_vectors_of_shape_1xC_are_squeezed(tmp_path):
    """yjxiong's bn_inception file stores BatchNorm vectors and biases as (1, C)."""
    ref = R.build("bn_inception")
    sd = {k: (v.unsqueeze(0) if v.ndim == 1 else v) for k, v in ref.state_dict().items()}
    torch.save(sd, tmp_path / "bn_inception-9f5701afb96c8044.pth")
    _, variables = P.load_pretrained("bn_inception", tmp_path / "bn_inception-9f5701afb96c8044.pth")
    want = ref.state_dict()
    p, s = variables["params"], variables["batch_stats"]
    np.testing.assert_array_equal(
        p["inception_4a_1x1_bn"]["scale"], want["inception_4a_1x1_bn.weight"].numpy()
    )
    np.testing.assert_array_equal(p["inception_4a_1x1"]["bias"], want["inception_4a_1x1.bias"].numpy())
    np.testing.assert_array_equal(s["conv2_3x3_bn"]["var"], want["conv2_3x3_bn.running_var"].numpy())
    np.testing.assert_array_equal(p["last_linear"]["kernel"], want["last_linear.weight"].numpy().T)


def test_weights_of_another_model_are_named(googlenet_pth):
    with pytest.raises(ValueError, match="does not fit inception_v3") as e:
        P.load_pretrained("inception_v3", googlenet_pth)
    assert googlenet_pth in _one_line(e)


def test_save_pretrained_round_trip_gives_torch_logits(googlenet_ref, googlenet_pth, tmp_path):
    model, variables = P.load_pretrained("googlenet", googlenet_pth)
    directory = P.save_pretrained(
        variables, tmp_path / "googlenet_orbax", name="googlenet", model_kwargs={"transform_input": True}
    )
    restored = P.load_variables(directory)
    assert set(restored) == {"params", "batch_stats"}
    model2, variables2 = P.load_pretrained("googlenet", directory)
    assert model2 == model
    x = np.random.RandomState(0).rand(2, 32, 32, 3).astype(np.float32)
    ref = R.run(googlenet_ref, x)  # eval mode: logits only
    assert R.rel_l2(jax.jit(model2.apply)(variables2, x), ref) < TOL
    with pytest.raises(ValueError, match="already exists"):
        P.save_pretrained(variables, directory)
    with pytest.raises(ValueError, match="holds googlenet weights, not inception_v3"):
        P.load_pretrained("inception_v3", directory)


# ----------------------------------------------------------------------------
# Pooled features vs. torchvision (fc = Identity) and timm (reset_classifier(0))
# ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,size,dim",
    [
        ("googlenet", 15, 1024),
        ("inception_v3", 75, 2048),
        ("inception_v4", 75, 1536),
        ("inception_resnet_v2", 75, 1536),
    ],
)
def test_features_match_reference(name, size, dim):
    from inception_jax.weights import from_torch

    kw = {"aux_logits": False} if name in ("googlenet", "inception_v3") else {}
    ref = R.build(name, **kw)
    model = models.create(name, **kw)
    variables = from_torch(name, ref.state_dict(), **kw)
    if hasattr(ref, "reset_classifier"):
        ref.reset_classifier(0)  # timm: forward_features + global pool
    else:
        ref.fc = torch.nn.Identity()
    x = np.random.RandomState(1).randn(2, size, size, 3).astype(np.float32)
    ours = P.pooled_features(model, variables, x)
    theirs = R.run(ref, x)
    assert ours.shape == theirs.shape == (2, dim)
    assert R.rel_l2(ours, theirs) < TOL
