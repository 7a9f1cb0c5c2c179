"""The weight file readers of ``inception_jax.weights.files`` against ``torch.load`` and
the safetensors package: both torch.save formats, every dtype public weights use, views
and shared storages; pickles that would run code are refused before anything runs; and
FID from a pytorch-fid weights file where neither torch nor safetensors can be
imported, equal to pytorch-fid's."""

import collections
import io
import json
import os
import pickle
import pickletools
import site
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from inception_jax.weights import files

torch = pytest.importorskip("torch")
fid_score = pytest.importorskip("pytorch_fid.fid_score")

# pytorch-fid's own network (random weights) and the helpers that feed it
from test_fid import _torch_wrapper, _write_images, torch_fid_net  # noqa: E402, F401

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORMATS = {"zip": True, "legacy": False}  # torch.save's _use_new_zipfile_serialization


def _save(obj, path, fmt):
    torch.save(obj, path, _use_new_zipfile_serialization=FORMATS[fmt])
    return str(path)


def _assert_same(got, want, where="root"):
    """``got`` (our reader) holds what ``want`` (torch.load) holds, tensors as arrays."""
    if isinstance(want, torch.Tensor):
        assert isinstance(got, np.ndarray), where
        assert got.shape == tuple(want.shape) and got.dtype.name == str(want.dtype)[6:], (where, got.dtype)
        if want.dtype in (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2):  # no numpy in torch
            got, want = got.astype(np.float32), want.float()
        np.testing.assert_array_equal(got, want.detach().numpy(), err_msg=where)
    elif isinstance(want, dict):
        assert type(got) is type(want) and list(got) == list(want), where
        for k in want:
            _assert_same(got[k], want[k], f"{where}/{k}")
    elif isinstance(want, (list, tuple)):
        assert type(got) is type(want) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            _assert_same(g, w, f"{where}[{i}]")
    else:
        assert got == want and type(got) is type(want), where


def _every_kind_of_tensor(fmt):
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=gen)
    shared = torch.randn(10, generator=gen)
    tensors = {
        "float32": torch.randn(3, 4, generator=gen),
        "float16": torch.randn(5, generator=gen).half(),
        "bfloat16": torch.randn(2, 3, generator=gen).bfloat16(),
        "float64": torch.randn(2, generator=gen).double(),
        "num_batches_tracked": torch.tensor(123, dtype=torch.long),  # 0-d int64, as BatchNorm keeps it
        "int32": torch.arange(-3, 3, dtype=torch.int32),
        "int16": torch.arange(4, dtype=torch.int16),
        "int8": torch.arange(-2, 2, dtype=torch.int8),
        "uint8": torch.arange(250, 256, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "transposed": base.t(),  # a non-contiguous view
        "every_other_column": base[:, ::2],
        "last_rows": base[2:],  # a storage offset
        "empty": torch.zeros(0, 3),
        "shared_a": shared[:6],  # two overlapping tensors, one storage
        "shared_b": shared[4:].view(2, 3),
        "parameter": torch.nn.Parameter(torch.randn(3, generator=gen)),
        "nested": collections.OrderedDict(
            block=collections.OrderedDict(weight=torch.randn(2, 2, generator=gen)),
            epoch=5,
            arch="googlenet",
            lr=0.1,
            flags=[True, None],
            shape=(1, 2),
            raw=b"\x00\xff",  # protocol 2 writes bytes as _codecs.encode(..., "latin1")
        ),
    }
    if fmt == "zip":  # an untyped storage (_rebuild_tensor_v3), which torch.load cannot read back legacy
        tensors["uint16"] = torch.arange(65530, 65536, dtype=torch.int32).to(torch.uint16)
    return tensors


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_dtype_view_and_shared_storage_equals_torch_load(fmt, tmp_path):
    path = _save(_every_kind_of_tensor(fmt), tmp_path / "w.pth", fmt)
    want = torch.load(path, weights_only=True)
    got = files.load_torch_file(path)
    _assert_same(got, want)
    # shared in torch, shared here (and not merely equal)
    assert want["shared_a"].untyped_storage().data_ptr() == want["shared_b"].untyped_storage().data_ptr()
    assert np.shares_memory(got["shared_a"], got["shared_b"])
    assert not np.shares_memory(got["float32"], got["shared_a"])
    if fmt == "zip":  # torch stores its records; deflated ones are read through zipfile
        deflated = tmp_path / "deflated.pth"
        with zipfile.ZipFile(path) as z, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as out:
            for info in z.infolist():
                out.writestr(info.filename, z.read(info))
        _assert_same(files.load_torch_file(deflated), want)


@pytest.mark.parametrize("fmt", FORMATS)
def test_torchvision_and_timm_state_dicts_equal_torch_load(fmt, tmp_path):
    import timm
    import torchvision

    torch.manual_seed(0)
    models = {
        "googlenet": torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False),
        "timm_inception_v3": timm.create_model("inception_v3", pretrained=False),
    }
    for name, model in models.items():
        path = _save(model.state_dict(), tmp_path / f"{name}.pth", fmt)
        want = torch.load(path, weights_only=True)
        _assert_same(files.load_torch_file(path), want)
        # the state_dict path: the same keys, bfloat16 none, int64 counters kept
        state_dict = files.load_torch_state_dict(path)
        assert list(state_dict) == list(want)
        assert (
            state_dict[
                "conv1.bn.num_batches_tracked"
                if name == "googlenet"
                else "Conv2d_1a_3x3.bn.num_batches_tracked"
            ].dtype
            == np.int64
        )


def test_safetensors_of_every_dtype_equal_the_safetensors_package(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    tensors = {
        k: v.detach().contiguous().clone()  # safetensors stores no views and no shared storage
        for k, v in _every_kind_of_tensor("zip").items()
        if isinstance(v, torch.Tensor)
    }
    tensors["float8_e4m3fn"] = torch.randn(4, generator=torch.Generator().manual_seed(1)).to(
        torch.float8_e4m3fn
    )
    tensors["float8_e5m2"] = torch.randn(4, generator=torch.Generator().manual_seed(2)).to(torch.float8_e5m2)
    path = tmp_path / "w.safetensors"
    safetensors_torch.save_file(tensors, str(path), metadata={"format": "pt"})
    want = safetensors_torch.load_file(str(path))
    got = files.load_safetensors(path)
    _assert_same(dict(sorted(got.items())), dict(sorted(want.items())))

    for damage, match in (
        (lambda b: b[:-5], "truncated or damaged (the byte range of "),
        (lambda b: b[:100], "its header is longer than it"),
        (lambda b: b"\x10" + b"\x00" * 7 + b"{not json}" + b"\x00" * 6, "could not be read as safetensors"),
    ):
        broken = tmp_path / "broken.safetensors"
        broken.write_bytes(damage(path.read_bytes()))
        with pytest.raises(ValueError) as e:
            files.load_safetensors(broken)
        assert "\n" not in str(e.value) and str(broken) in str(e.value) and match in str(e.value), str(
            e.value
        )


_MARKER_PAYLOAD = "touch {}"


def _evil_pickle(marker):
    """Protocol 0 by hand: ``os.system("touch <marker>")``."""
    return f"cos\nsystem\n(V{_MARKER_PAYLOAD.format(marker)}\ntR.".encode()


def _write_zip(path, records):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, data in records.items():
            z.writestr(f"archive/{name}", data)
    return str(path)


def _legacy_header(little_endian=True):
    from torch.serialization import MAGIC_NUMBER, PROTOCOL_VERSION

    sys_info = {"protocol_version": PROTOCOL_VERSION, "little_endian": little_endian, "type_sizes": {}}
    return b"".join(pickle.dumps(x, protocol=2) for x in (MAGIC_NUMBER, PROTOCOL_VERSION, sys_info))


def _one_line_error(path):
    with pytest.raises(ValueError) as e:
        files.load_torch_file(path)
    message = str(e.value)
    assert "\n" not in message and str(path) in message, message
    return message


@pytest.mark.parametrize("fmt", FORMATS)
def test_pickle_calling_os_system_is_refused_and_never_runs(fmt, tmp_path):
    marker = tmp_path / "pwned"
    payload = _evil_pickle(marker)
    # control, without running it: the pickle really asks for os.system
    assert [arg for op, arg, _ in pickletools.genops(payload) if op.name == "GLOBAL"] == ["os system"]
    if fmt == "zip":
        path = _write_zip(tmp_path / "evil.pth", {"data.pkl": payload, "byteorder": b"little"})
    else:
        path = tmp_path / "evil.pth"
        path.write_bytes(_legacy_header() + payload)
    message = _one_line_error(path)
    assert "it references os.system" in message and "refused for safety" in message, message
    assert not marker.exists()


class _StorageRef:
    pass


class _FloatsOfStorage0:
    """Pickles as torch does a tensor of ``n`` floats over storage ``0``."""

    def __init__(self, n):
        self.n = n

    def __reduce__(self):
        return (
            torch._utils._rebuild_tensor_v2,
            (_StorageRef(), 0, (self.n,), (1,), False, collections.OrderedDict()),
        )


class _TorchLikePickler(pickle.Pickler):
    storage = ("storage", torch.FloatStorage, "0", "cpu", 4)

    def persistent_id(self, obj):
        return self.storage if isinstance(obj, _StorageRef) else None


def _torch_like_pickle(obj, storage=_TorchLikePickler.storage):
    buffer = io.BytesIO()
    pickler = _TorchLikePickler(buffer, protocol=2)
    pickler.storage = storage
    pickler.dump(obj)
    return buffer.getvalue()


def test_tensors_saved_from_a_gpu_are_read(tmp_path):
    """torch.save of CUDA tensors names torch.cuda.FloatStorage and location cuda:0
    (crafted here: no GPU needed)."""
    storage = ("storage", torch.cuda.FloatStorage, "0", "cuda:0", 4)
    path = _write_zip(
        tmp_path / "gpu.pth",
        {
            "data.pkl": _torch_like_pickle({"w": _FloatsOfStorage0(4)}, storage),
            "data/0": np.arange(4, dtype=np.float32).tobytes(),
            "version": b"3\n",
        },
    )
    assert b"torch.cuda\nFloatStorage" in zipfile.ZipFile(path).read("archive/data.pkl")
    _assert_same(files.load_torch_file(path), torch.load(path, map_location="cpu", weights_only=True))


@pytest.mark.parametrize(
    "case,match",
    [
        ("big_endian_zip", "holds big-endian tensors"),
        ("big_endian_legacy", "holds big-endian tensors"),
        ("out_of_bounds", "reaching element 99 of a storage of 4"),
        ("truncated_legacy", "truncated"),
        ("truncated_zip", "could not be read as a torch checkpoint: a damaged zip archive"),
        ("module_zip", "it references torch.nn.modules.linear.Linear"),
        ("module_legacy", "it references torch.nn.modules.linear.Linear"),
        ("torchscript", "TorchScript archive"),
        ("not_a_checkpoint", "not a torch.save file"),
    ],
)
def test_malformed_files_are_refused_in_one_line(case, match, tmp_path):
    path = tmp_path / "w.pth"
    tensors = {"w": torch.arange(6, dtype=torch.float32)}
    if case == "big_endian_zip":
        _save(tensors, tmp_path / "little.pth", "zip")
        with zipfile.ZipFile(tmp_path / "little.pth") as z:
            records = {n.split("/", 1)[1]: z.read(n) for n in z.namelist()}
        _write_zip(path, {**records, "byteorder": b"big"})
    elif case == "big_endian_legacy":
        path.write_bytes(_legacy_header(little_endian=False) + pickle.dumps({}, protocol=2))
    elif case == "out_of_bounds":
        for n in (4, 100):  # 4: the control, a well-formed file of the storage's 4 floats
            data = {"data/0": np.arange(4, dtype=np.float32).tobytes(), "version": b"3\n"}
            _write_zip(path, {"data.pkl": _torch_like_pickle({"w": _FloatsOfStorage0(n)}), **data})
            if n == 4:
                np.testing.assert_array_equal(files.load_torch_file(path)["w"], np.arange(4))
                np.testing.assert_array_equal(torch.load(path, weights_only=True)["w"].numpy(), np.arange(4))
    elif case in ("truncated_legacy", "truncated_zip"):
        _save(tensors, path, case.split("_")[1])
        path.write_bytes(path.read_bytes()[:-12])
    elif case == "module_zip":
        _save(torch.nn.Linear(2, 2), path, "zip")
    elif case == "module_legacy":
        _save(torch.nn.Linear(2, 2), path, "legacy")
    elif case == "torchscript":
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    elif case == "not_a_checkpoint":
        path.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=2))
    assert match in _one_line_error(path)


def _site_without_torch(root):
    """A directory of links to every installed package except torch, its kin and
    safetensors: a Python started with ``-S`` and only this (and the repository) on its
    path has no torch at all (``importlib.util.find_spec("torch") is None``)."""
    os.makedirs(root)
    for site_packages in site.getsitepackages():
        for name in os.listdir(site_packages):
            hidden = name.lower().startswith(
                ("torch", "functorch", "pytorch_fid", "safetensors", "__editable__")
            )
            if hidden or name.endswith(".pth") or os.path.exists(os.path.join(root, name)):
                continue
            os.symlink(os.path.join(site_packages, name), os.path.join(root, name))
    return str(root)


_WITHOUT_TORCH = """
import importlib.util, json, sys
import jax
import numpy as np
assert importlib.util.find_spec("torch") is None, "torch is importable"
from inception_jax import fid
legacy, zipped, converted, a, b = sys.argv[1:]
net = fid.FIDNetwork.load(legacy)
leaves = [jax.tree.leaves(fid.FIDNetwork.load(w).variables) for w in (zipped, converted)]
same = [np.array_equal(x, y) for other in leaves for x, y in zip(jax.tree.leaves(net.variables), other)]
stats = [fid.statistics_of(net, folder, dims=64, batch_size=40) for folder in (a, b)]
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "safetensors"))
print(json.dumps({"fid": fid.frechet_distance(*stats[0], *stats[1]), "mu": stats[0][0].tolist(),
                  "others_equal_legacy": all(same) and len(same), "torch_modules": loaded}))
"""


def test_fid_without_torch_installed_equals_pytorch_fid(torch_fid_net, tmp_path):  # noqa: F811
    """pytorch-fid's weights file (2019) is torch's legacy format; the zip format and a
    .safetensors conversion must give the same variables. dims 64 (block 0), 80 small
    images per folder."""
    folders = [_write_images(tmp_path / name, 80, seed, size=(24, 24)) for seed, name in enumerate("ab")]
    name = "pt_inception-2015-12-05-6726825d.pth"
    weights = [_save(torch_fid_net.state_dict(), tmp_path / f"{fmt}-{name}", fmt) for fmt in FORMATS]
    weights.append(str(tmp_path / "converted.safetensors"))
    safetensors_torch = pytest.importorskip("safetensors.torch")
    safetensors_torch.save_file(torch_fid_net.state_dict(), weights[-1])
    model = _torch_wrapper(torch_fid_net, [0])
    want = [fid_score.compute_statistics_of_path(f, model, 40, 64, "cpu", num_workers=0) for f in folders]
    want_fid = fid_score.calculate_frechet_distance(*want[0], *want[1])

    path = os.pathsep.join([ROOT, _site_without_torch(tmp_path / "site")])
    out = subprocess.run(
        [sys.executable, "-S", "-c", _WITHOUT_TORCH, weights[1], weights[0], weights[2], *folders],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=path),
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["torch_modules"] == [] and got["others_equal_legacy"]
    mu = np.asarray(got["mu"])
    assert np.linalg.norm(mu - want[0][0]) / np.linalg.norm(want[0][0]) < 1e-5
    assert got["fid"] == pytest.approx(want_fid, rel=1e-3) and want_fid > 0
