"""Reading weight files safely, without PyTorch: torch ``.pth``/``.pt``/``.bin`` (both
``torch.save`` formats, read by an unpickler that rebuilds only tensors and plain
containers) and ``.safetensors`` (read with numpy alone), into ``{name: numpy array}``."""

from __future__ import annotations

import collections
import json
import math
import os
import pickle
import struct
import tarfile
import zipfile
from collections.abc import Mapping
from typing import Any, NamedTuple

import ml_dtypes  # a dependency of jax: numpy's bfloat16 and float8 types
import numpy as np

from inception_jax.errors import first_line

TORCH_EXTENSIONS = (".pth", ".pt", ".bin")


SAFETENSORS_EXTENSIONS = (".safetensors",)


_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "state_dict_ema", "net", "module")


def _is_array(value: Any) -> bool:
    return hasattr(value, "detach") or isinstance(value, np.ndarray)


def to_numpy(value: Any) -> np.ndarray:
    """A numpy array of a torch tensor (without importing torch; bfloat16 as float32)
    or of anything ``np.asarray`` takes."""
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        return value.numpy()
    value = np.asarray(value)
    return value.astype(np.float32) if value.dtype == ml_dtypes.bfloat16 else value


def strip_module_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """``state_dict`` with the ``module.`` prefix that (Distributed)DataParallel adds
    removed from its keys."""
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def _unwrap(obj: Any, path: str) -> dict[str, np.ndarray]:
    """Finds the state_dict in a checkpoint (``{"state_dict": ...}``, ``{"model": ...}``)
    and strips a leading ``module.`` (DataParallel) from its keys."""
    for _ in range(3):
        if not isinstance(obj, Mapping):
            break
        if obj and all(_is_array(v) for v in obj.values()):
            break
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping) or not obj:
        kind = type(obj).__name__ if not isinstance(obj, Mapping) else "an empty mapping"
        raise ValueError(
            f"weights file {path!r} holds {kind}, not a state_dict of tensors; "
            "save model.state_dict() (torch.save(model.state_dict(), path))"
        )
    arrays = {str(k): v for k, v in obj.items() if _is_array(v)}
    others = sorted(str(k) for k in obj if not _is_array(obj[k]))
    if not arrays:
        raise ValueError(
            f"weights file {path!r} holds no tensors (keys: {', '.join(others[:5])}); "
            "save model.state_dict() instead"
        )
    if others and not all(k in ("epoch", "step", "arch", "_metadata") for k in others):
        raise ValueError(
            f"weights file {path!r} mixes tensors with other entries "
            f"({', '.join(others[:5])}); save model.state_dict() alone"
        )
    return strip_module_prefix({k: to_numpy(v) for k, v in arrays.items()})


# --- torch.save files without torch ----------------------------------------------------
#
# Both formats torch.save has written since PyTorch 0.1.10: the zip archive (1.6 and
# later: ``<dir>/data.pkl`` plus one raw record ``<dir>/data/<key>`` per storage) and the
# legacy stream (before 1.6, e.g. pytorch-fid's FID weights of 2019: five pickles, the
# object among them, then each storage as an int64 element count and its bytes). The
# pickle only ever calls the globals below; a tensor becomes a numpy view of its
# storage's bytes, so tensors that shared a storage in torch share memory here too.


class _Refused(Exception):
    """The pickle asked for a global this reader does not rebuild."""


class _Unsupported(Exception):
    """A file refused for another reason (damaged, big-endian, TorchScript): the message
    says what, and how to fix it."""


class _StorageType(NamedTuple):
    dtype: np.dtype


class _Storage(NamedTuple):  # immutable, so a pickle's BUILD cannot swap its bytes
    dtype: np.dtype
    data: memoryview


_DTYPES = {
    "float64": np.float64,
    "float32": np.float32,
    "float16": np.float16,
    "bfloat16": ml_dtypes.bfloat16,
    "float8_e4m3fn": ml_dtypes.float8_e4m3fn,
    "float8_e5m2": ml_dtypes.float8_e5m2,
    "int64": np.int64,
    "int32": np.int32,
    "int16": np.int16,
    "int8": np.int8,
    "uint8": np.uint8,
    "uint16": np.uint16,
    "uint32": np.uint32,
    "uint64": np.uint64,
    "bool": np.bool_,
}
_STORAGES = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "UntypedStorage": "uint8",
}


def _tensor(storage: Any, offset: Any, size: Any, stride: Any, dtype: Any = None) -> np.ndarray:
    if not isinstance(storage, _Storage):
        raise _Unsupported(f"holds a tensor without a plain storage ({type(storage).__name__})")
    dtype = np.dtype(storage.dtype if dtype is None else dtype)
    size, stride, offset = tuple(map(int, size)), tuple(map(int, stride)), int(offset)
    if len(size) != len(stride) or min((offset, *size, *stride)) < 0:
        raise _Unsupported(f"holds a tensor of size {size}, stride {stride}, offset {offset}")
    if 0 in size:
        return np.zeros(size, dtype)
    count = storage.data.nbytes // dtype.itemsize
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= count:  # as_strided does not check: a bad file must not read past the storage
        raise _Unsupported(f"holds a tensor of size {size} reaching element {last} of a storage of {count}")
    flat = np.frombuffer(storage.data, dtype, count)
    return np.lib.stride_tricks.as_strided(flat[offset:], size, [s * dtype.itemsize for s in stride])


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    return _tensor(storage, offset, size, stride)


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, metadata=None):
    if not isinstance(dtype, np.dtype):
        raise _Unsupported(f"holds a tensor of dtype {dtype!r}")
    return _tensor(storage, offset, size, stride, dtype)


def _rebuild_parameter(data, requires_grad, hooks, state=None):
    return data


def _latin1_bytes(text: str, encoding: str) -> bytes:  # how pickle protocol 2 stores bytes
    if encoding not in ("latin1", "latin-1"):
        raise _Refused(f"_codecs.encode(..., {encoding!r})")
    return text.encode("latin1")


_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): tuple,
    ("_codecs", "encode"): _latin1_bytes,
    **{("torch", name): np.dtype(dtype) for name, dtype in _DTYPES.items()},
    **{("torch", name): _StorageType(np.dtype(_DTYPES[d])) for name, d in _STORAGES.items()},
}
_GLOBALS[("torch.storage", "UntypedStorage")] = _GLOBALS[("torch", "UntypedStorage")]
# files saved from GPU tensors name torch.cuda's storages; their bytes are the same
_GLOBALS.update(
    {("torch.cuda", name): _GLOBALS[("torch", name)] for name in _STORAGES if name != "UntypedStorage"}
)


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, storage):
        super().__init__(file, encoding="utf-8")
        self._storage = storage

    def find_class(self, module: str, name: str) -> Any:
        found = _GLOBALS.get((module, name))
        if found is None:
            raise _Refused(f"{module}.{name}")
        return found

    def persistent_load(self, pid: Any) -> Any:
        kind = pid[0] if isinstance(pid, tuple) and len(pid) > 1 else None
        if kind not in ("storage", b"storage") or not isinstance(pid[1], _StorageType):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r:.40}")
        return self._storage(pid[1].dtype, *pid[2:])


def _read_record(archive: zipfile.ZipFile, file: Any, info: zipfile.ZipInfo, data: np.ndarray) -> int:
    """Reads a record into ``data``; torch stores them uncompressed, and reading those
    straight from the file is 4x faster than through ``zipfile`` (no CRC, no copy)."""
    if info.compress_type != zipfile.ZIP_STORED:
        with archive.open(info) as record:
            return record.readinto(data)
    file.seek(info.header_offset)
    header = file.read(30)
    if header[:4] != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"no local header for {info.filename}")
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    file.seek(info.header_offset + 30 + name_length + extra_length)
    return file.readinto(data)


def _read_zip(archive: zipfile.ZipFile, file: Any) -> Any:
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") <= 1]
    if not pickles:
        raise _Unsupported("is a zip archive without data.pkl, not a torch.save file")
    prefix = pickles[0][: -len("data.pkl")]
    if prefix + "constants.pkl" in names:
        raise _Unsupported("is a TorchScript archive (torch.jit.save); save model.state_dict() instead")
    if prefix + "byteorder" in names and archive.read(prefix + "byteorder") != b"little":
        raise _Unsupported("holds big-endian tensors; re-save it on a little-endian machine")
    storages: dict[str, _Storage] = {}

    def storage(dtype: np.dtype, key: str, location: Any, numel: int) -> _Storage:
        if key not in storages:
            info = archive.getinfo(f"{prefix}data/{key}")
            if info.file_size != numel * dtype.itemsize:
                raise _Unsupported(f"has a storage record data/{key} of the wrong size")
            data = np.empty(info.file_size, np.uint8)  # not bytearray: no zero-filling first
            if _read_record(archive, file, info, data) != len(data):
                raise _Unsupported(f"is truncated (storage record data/{key})")
            storages[key] = _Storage(dtype, memoryview(data))
        return storages[key]

    with archive.open(pickles[0]) as pickled:
        return _Unpickler(pickled, storage).load()


_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


def _read_legacy(file: Any) -> Any:
    def no_storage(*_: Any) -> None:
        raise pickle.UnpicklingError("a storage outside the pickle of the tensors")

    if _Unpickler(file, no_storage).load() != _LEGACY_MAGIC:
        raise _Unsupported("is not a torch.save file (no zip archive, no legacy magic number)")
    if _Unpickler(file, no_storage).load() != _LEGACY_PROTOCOL:
        raise _Unsupported("is a legacy torch.save file of an unknown protocol version")
    sys_info = _Unpickler(file, no_storage).load()
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", True):
        raise _Unsupported("holds big-endian tensors; re-save it on a little-endian machine")
    roots: dict[str, tuple[np.ndarray, int]] = {}  # key: (bytes, element size)
    views: dict[str, _Storage] = {}
    file_size = os.fstat(file.fileno()).st_size

    def storage(dtype: np.dtype, key: str, location: Any, numel: int, view: Any = None) -> _Storage:
        if numel * dtype.itemsize > file_size:
            raise _Unsupported(f"is truncated (storage {key!r:.40} is larger than the file)")
        if key not in roots:  # filled below, once the pickle is read: the arrays see it then
            roots[key] = (np.empty(numel * dtype.itemsize, np.uint8), dtype.itemsize)
        data = memoryview(roots[key][0])
        if view is None:
            return _Storage(dtype, data)
        view_key, start, count = view
        if view_key not in views:
            views[view_key] = _Storage(dtype, data[start * dtype.itemsize : (start + count) * dtype.itemsize])
        return views[view_key]

    result = _Unpickler(file, storage).load()
    keys = _Unpickler(file, no_storage).load()
    for key in keys:
        if key not in roots:
            raise _Unsupported(f"lists a storage {key!r:.40} its pickle never used")
        (count,) = struct.unpack("<q", file.read(8))
        data, itemsize = roots[key]
        if count * itemsize != len(data) or file.readinto(data) != len(data):
            raise _Unsupported(f"is truncated (storage {key!r:.40})")
    return result


def load_torch_file(path: str | os.PathLike) -> Any:
    """What ``torch.load(path, weights_only=True)`` returns, with numpy arrays for
    tensors, read without PyTorch (no torch import).

    Reads both ``torch.save`` formats (the zip archive and the pre-1.6 legacy stream).
    Only tensors, parameters and plain containers are rebuilt: a pickle that asks for
    any other global (one that would run code) is refused with a ``ValueError``
    naming it, before anything runs. Arrays share memory where the tensors shared a
    storage, and keep their dtype (bfloat16 as ``ml_dtypes.bfloat16``).
    """
    path = os.fspath(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive, open(path, "rb") as file:
                return _read_zip(archive, file)
        with open(path, "rb") as file:
            damaged_zip = file.read(4) == b"PK\x03\x04"
        if damaged_zip:
            raise _Unsupported(
                "could not be read as a torch checkpoint: a damaged zip archive (a truncated download?); "
                "download or save it again"
            )
        if tarfile.is_tarfile(path):
            raise _Unsupported("is a tar checkpoint of PyTorch < 0.1.10; re-save it with a newer torch")
        with open(path, "rb") as file:
            return _read_legacy(file)
    except _Refused as e:
        raise ValueError(
            f"weights file {path!r} contains non-weight objects (it references {e}) and was refused "
            "for safety (loading it could run arbitrary code); re-save only the tensors with "
            "torch.save(model.state_dict(), path) from a trusted source, or use .safetensors"
        ) from None
    except _Unsupported as e:
        raise ValueError(f"weights file {path!r} {e}") from None
    except Exception as e:  # noqa: BLE001 - every failure becomes one line
        raise ValueError(
            f"weights file {path!r} could not be read as a torch checkpoint "
            f"({type(e).__name__}: {first_line(e)}); is it complete and a torch.save file?"
        ) from None


def load_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a PyTorch state_dict from ``.pth``/``.pt``/``.bin`` or ``.safetensors``.

    Pickled files are read by :func:`load_torch_file`, without PyTorch: a file that
    holds anything but tensors and plain containers (a pickle that would run code on
    load) is refused with a ``ValueError``. Returns ``{key: np.ndarray}`` (bfloat16
    becomes float32), unwrapped from ``{"state_dict": ...}``-style wrappers, with any
    ``module.`` prefix removed.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        what = "is a directory" if os.path.isdir(path) else "does not exist"
        raise ValueError(
            f"weights file {path!r} {what}; pass a .pth/.pt/.bin or .safetensors state_dict file"
        )
    ext = os.path.splitext(path)[1].lower()
    if ext in SAFETENSORS_EXTENSIONS:
        return _load_safetensors(path)
    if ext not in TORCH_EXTENSIONS:
        raise ValueError(
            f"weights file {path!r} has an unknown extension {ext or '(none)'!r}; "
            "expected .pth, .pt, .bin (torch.save of a state_dict) or .safetensors"
        )
    obj = load_torch_file(path)
    return _unwrap(obj, path)


_SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "U16": "uint16",
    "U32": "uint32",
    "U64": "uint64",
    "BOOL": "bool",
}


def load_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of a ``.safetensors`` file, read with numpy alone (the format is a
    little-endian u64 header length, a JSON header of dtype/shape/byte range per
    tensor, then the bytes): neither torch nor the safetensors package is needed, and
    bfloat16 comes back as ``ml_dtypes.bfloat16``. A damaged file is one ``ValueError``."""
    path = os.fspath(path)
    arrays: dict[str, np.ndarray] = {}
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            (header_size,) = struct.unpack("<Q", file.read(8))
            if header_size > size - 8:
                raise _Unsupported("is truncated or not a safetensors file (its header is longer than it)")
            header = json.loads(file.read(header_size))
            for name, entry in header.items():
                if name == "__metadata__":
                    continue
                if entry["dtype"] not in _SAFETENSORS_DTYPES:
                    raise _Unsupported(
                        f"holds {name} of dtype {entry['dtype']}, which this reader does not read"
                    )
                dtype = np.dtype(_DTYPES[_SAFETENSORS_DTYPES[entry["dtype"]]])
                shape = tuple(int(n) for n in entry["shape"])
                start, end = (int(n) for n in entry["data_offsets"])
                if (
                    not 0 <= start <= end <= size - 8 - header_size
                    or end - start != math.prod(shape) * dtype.itemsize
                ):
                    raise _Unsupported(f"is truncated or damaged (the byte range of {name})")
                data = np.empty(end - start, np.uint8)
                file.seek(8 + header_size + start)
                if file.readinto(data) != len(data):
                    raise _Unsupported(f"is truncated (the bytes of {name})")
                arrays[name] = data.view(dtype).reshape(shape)
    except _Unsupported as e:
        raise ValueError(f"weights file {path!r} {e}") from None
    except Exception as e:  # noqa: BLE001 - every failure becomes one line
        raise ValueError(
            f"weights file {path!r} could not be read as safetensors ({type(e).__name__}: {first_line(e)})"
        ) from None
    return arrays


def _load_safetensors(path: str) -> dict[str, np.ndarray]:
    return _unwrap(load_safetensors(path), path)
