"""How the training programs are compiled and started: the start-up strategy in one
place.

* Programs that run once (initialisation): :func:`run_once` compiles them without XLA
  backend optimisation, with the CPU backend's one-off options where XLA takes them;
  :func:`init_variables` makes a model's variables that way.
* The CPU backend's kernels: :func:`use_cpu_kernels` turns ``config.cpu_kernels``
  into on/off, and the steps are traced inside :func:`cpu_kernels`.
* Traced programs kept on disk (:class:`ProgramCache`, made for a run by
  :func:`program_cache`), so that a restart skips tracing and lowering.

JAX's persistent compilation cache saves the XLA compile of a program, but every
process still traces the Python step and lowers it to StableHLO before it can look
the compile up: for the smoke config that is most of the start (1.5 s to trace the
train step, 0.8 s to lower it, on the 2-core CPU this was written on). ``ProgramCache``
keeps each program as a ``jax.export`` artifact beside the compilation cache; a later
process with the same key deserializes it (about 0.01 s) and calls it.

The program called is the one exported, both in the process that wrote it and in the
ones that read it, so the compile it asks for is the same and the persistent
compilation cache finds it. The key of an entry covers everything that shapes the
trace:

- the code: a digest of this package's source; the content of every other loaded
  module that is not installed in site-packages or the standard library (a model
  registered from the user's own files, the script that runs); the version, file
  count, size and newest modification of jax, jaxlib, flax, optax, numpy and
  ml_dtypes; the modification time of site-packages (any install, upgrade or
  removal);
- JAX's configuration and the devices;
- the caller's key: the training config and the values the trainer derives from the
  data (class count, steps per epoch, total steps, which the schedule closes over);
- the program's name, and the paths, shapes, dtypes and shardings (partition spec,
  mesh and device ids) of its arguments.

Code with no source file to digest (typed into a notebook or ``python -c``, or run
into a module made in memory) cannot be keyed: the trainer then keeps no programs
(``unkeyed_code``). Anything unusual (an output this module cannot describe, an
export error, a damaged entry) falls back to the plain jitted function.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import sys
import sysconfig
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from inception_jax import models
from inception_jax.backends import cpu as cpu_backend
from inception_jax.checkpoint.integrity import write_atomic
from inception_jax.errors import first_line

_FORMAT = 1
_UNWRITABLE = "free disk space or pick another --config.compilation_cache_dir; until then each start traces"
_PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "ml_dtypes")


# -- programs that run once --


def one_off_compiler_options(platform: str = ""):
    """The compiler options ``run_once`` tries, best first: O0, and on a CPU the CPU
    backend's ``ONE_OFF_COMPILER_OPTIONS`` with it."""
    level = {"xla_backend_optimization_level": 0}
    if (platform or jax.default_backend()) == "cpu":
        return [{**level, **cpu_backend.ONE_OFF_COMPILER_OPTIONS}, level]
    return [level]


_REJECTED_OPTIONS: set = set()  # option sets this process's XLA did not take


def run_once(fn, *args):
    """``fn(*args)`` as one compiled program, compiled without XLA backend optimisation:
    for work that runs a single time (initialisation), compiling fast (about 2x sooner
    on a CPU) matters more than running fast. ``jax.ShapeDtypeStruct`` arguments are
    passed as zeros."""
    lowered = jax.jit(fn).lower(*args)
    compiled = None
    for options in one_off_compiler_options():
        key = tuple(sorted(options.items()))
        if key in _REJECTED_OPTIONS:
            continue
        try:
            compiled = lowered.compile(compiler_options=options)
            break
        except Exception:  # a backend or XLA version that does not take an option
            # (jax 0.11's XLA has no xla_cpu_use_fusion_emitters); finding out cost
            # 0.45 s for googlenet's init there, so ask once per process
            _REJECTED_OPTIONS.add(key)
    if compiled is None:
        compiled = lowered.compile()
    concrete = [jnp.zeros(a.shape, a.dtype) if isinstance(a, jax.ShapeDtypeStruct) else a for a in args]
    return compiled(*concrete)


def init_variables(model, rng, input_shape, dtype=jnp.float32):
    """``model.init`` for an input of ``input_shape``, compiled once without XLA backend
    optimisation (``run_once``). Returns the variables dict."""
    x = jax.ShapeDtypeStruct(tuple(input_shape), dtype)
    return run_once(lambda rng, x: model.init(rng, x, train=False), rng, x)


# -- the CPU backend's kernels --


def use_cpu_kernels(setting: cpu_backend.Setting) -> bool:
    """``config.cpu_kernels`` as on/off: ``"auto"`` is on exactly when JAX runs on the
    CPU, where the kernels were measured faster (``inception_jax.backends.cpu``)."""
    return cpu_backend.resolve(setting)


def cpu_kernels(on: bool):
    """The context a step is traced in: with the CPU backend's kernels when ``on``
    (``StepConfig.cpu_kernels``), else the plain program every platform runs."""
    return cpu_backend.cpu_kernels(on)


# -- traced programs kept on disk --


class _Leaf:
    """A placeholder leaf while describing an output tree."""


def _class_path(cls) -> Optional[str]:
    name = f"{cls.__module__}:{cls.__qualname__}"
    return None if "<" in name else name


def _import_class(path: str):
    module, qualname = path.split(":")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def describe_tree(out_tree, in_trees: Sequence[Any], templates: Sequence[Any] = ()):
    """A JSON description of ``out_tree``, or None if it has a node it cannot describe.

    It is described in terms of leaves, plain containers (dict, list, tuple, None),
    namedtuples of an importable class (optax's states), the input trees ``in_trees``
    (the state a step returns) and dataclass ``templates`` whose pytree fields are
    replaced (a ``TrainState`` carrying the static ``apply_fn`` and ``tx``).
    """
    obj = jax.tree_util.tree_unflatten(out_tree, [_Leaf() for _ in range(out_tree.num_leaves)])

    def walk(o):
        if isinstance(o, _Leaf):
            return "leaf"
        if o is None:
            return {"none": 0}
        if type(o) is dict and all(isinstance(k, str) for k in o):
            return {"dict": [[k, walk(v)] for k, v in o.items()]}
        if type(o) in (list, tuple):
            return {type(o).__name__: [walk(v) for v in o]}
        structure = jax.tree_util.tree_structure(o)
        for i, tree in enumerate(in_trees):
            if structure == tree:
                return {"arg": i}
        if isinstance(o, tuple) and hasattr(type(o), "_fields") and _class_path(type(o)):
            return {"namedtuple": [_class_path(type(o)), [walk(v) for v in o]]}
        for i, template in enumerate(templates):
            if type(o) is type(template) and dataclasses.is_dataclass(o):
                fields = [f.name for f in dataclasses.fields(o) if f.metadata.get("pytree_node", True)]
                return {"template": [i, [[name, walk(getattr(o, name))] for name in fields]]}
        raise _Unsupported

    try:
        return walk(obj)
    except _Unsupported:
        return None


class _Unsupported(Exception):
    pass


def rebuild_tree(spec, args: Sequence[Any], templates: Sequence[Any] = ()):
    """The tree structure ``describe_tree`` described, given the call's arguments and
    the same templates."""

    def build(s):
        if s == "leaf":
            return 0
        ((kind, value),) = s.items()
        if kind == "none":
            return None
        if kind == "dict":
            return {k: build(v) for k, v in value}
        if kind == "list":
            return [build(v) for v in value]
        if kind == "tuple":
            return tuple(build(v) for v in value)
        if kind == "arg":
            return args[value]
        if kind == "namedtuple":
            return _import_class(value[0])(*(build(v) for v in value[1]))
        if kind == "template":
            return dataclasses.replace(templates[value[0]], **{k: build(v) for k, v in value[1]})
        raise ValueError(f"unknown node {kind!r}")

    return jax.tree_util.tree_structure(build(spec))


def _installed(package: str) -> list:
    """A package's version and a summary of its installed Python files (count, total
    size, newest modification), so an edited installation changes the key."""
    try:
        module = __import__(package)
    except ImportError:
        return [package, None]
    version = getattr(module, "__version__", None)
    root = os.path.dirname(getattr(module, "__file__", "") or "")
    count = size = newest = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py"):
                st = os.stat(os.path.join(dirpath, f))
                count, size, newest = count + 1, size + st.st_size, max(newest, st.st_mtime_ns)
    return [package, version, count, size, newest]


def _source_digest() -> str:
    """sha256 of every Python file of this package, by relative path and content."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    h = hashlib.sha256()
    for dirpath, dirnames, files in os.walk(root):
        dirnames.sort()
        for f in sorted(files):
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                h.update(os.path.relpath(path, root).encode())
                with open(path, "rb") as fh:
                    h.update(hashlib.sha256(fh.read()).digest())
    return h.hexdigest()


def _install_dirs() -> Tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple(sorted({paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}))


def _user_code() -> list:
    """sha256 of each loaded module's source that is neither standard library nor
    installed in site-packages: the user's own model definitions and scripts, wherever
    they were imported from (an editable install included)."""
    dirs = _install_dirs()
    raw = tuple(os.path.join(d, "") for d in dirs)
    real = tuple(os.path.join(os.path.realpath(d), "") for d in dirs)
    digests = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not path or not path.endswith(".py") or path.startswith(raw):
            continue
        path = os.path.realpath(path)
        if path.startswith(real) or path in digests:
            continue
        try:
            with open(path, "rb") as fh:
                digests[path] = hashlib.sha256(fh.read()).hexdigest()
        except OSError:
            digests[path] = None
    return sorted(digests.items())


def unkeyed_code(builders: Sequence[Callable] = ()) -> Optional[str]:
    """Why code that shapes the programs has no source to key them on, or None.

    Code typed into an interactive session (a notebook, a REPL, ``python -c``) or
    executed into a module made in memory has no file whose content can go into the
    key: edited and run again, it would find the programs traced from its old version.
    ``builders`` are the model classes the programs are traced from."""
    main = sys.modules.get("__main__")
    if main is not None and not getattr(main, "__file__", None):
        return "code typed into this interactive session has no source file to key them on"
    for builder in builders:
        if not getattr(sys.modules.get(builder.__module__), "__file__", None):
            where = f"{builder.__qualname__} comes from {builder.__module__!r}"
            return f"{where}, which has no source file to key them on"
    return None


def _site_packages() -> list:
    """The modification time of each site-packages directory: installing, upgrading,
    reinstalling or removing a package (its metadata directory made or removed)
    changes it."""
    paths = sysconfig.get_paths()
    out = []
    for d in sorted({paths["purelib"], paths["platlib"]}):
        try:
            out.append([d, os.stat(d).st_mtime_ns])
        except OSError:
            out.append([d, None])
    return out


def _jax_settings() -> Dict[str, Any]:
    simple = (str, int, float, bool, type(None))
    return {k: v for k, v in sorted(jax.config.values.items()) if isinstance(v, simple)}


def environment_key(caller_key: str) -> str:
    """The part of every entry's key that does not depend on the program."""
    devices = jax.devices()
    parts = {
        "format": _FORMAT,
        "caller": caller_key,
        "source": _source_digest(),
        "user_code": _user_code(),
        "packages": [_installed(p) for p in _PACKAGES],
        "site_packages": _site_packages(),
        "jax_config": _jax_settings(),
        "devices": [jax.default_backend(), len(devices), devices[0].device_kind, jax.process_count()],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=repr).encode()).hexdigest()


def _sharding_text(x) -> str:
    """The partition spec, the mesh and the devices an argument lives on: a program
    traced for one set of devices is never called on another."""
    sharding = getattr(x, "sharding", None)
    if sharding is None:
        return "None"
    spec = getattr(sharding, "spec", None)
    mesh = getattr(sharding, "mesh", None)
    text = [repr(spec) if spec is not None else type(sharding).__name__]
    try:
        if mesh is not None:
            text.append(f"mesh{dict(mesh.shape)}:{[d.id for d in np.ravel(mesh.devices)]}")
        else:
            text.append(str(sorted(d.id for d in sharding.device_set)))
    except Exception:  # an abstract mesh: no devices to name
        text.append(repr(mesh))
    return " ".join(text)


def _aval_text(x) -> str:
    if isinstance(x, jax.ShapeDtypeStruct):
        return f"{np.dtype(x.dtype).name}{list(x.shape)}"
    return str(jax.typeof(x))


def _arguments_key(args) -> list:
    return [
        [jax.tree_util.keystr(path), _aval_text(x), _sharding_text(x)]
        for path, x in jax.tree_util.tree_flatten_with_path(args)[0]
    ]


class ProgramCache:
    """Programs exported to ``directory`` under keys that start from ``caller_key``.

    ``wrap(name, fn)`` gives a function that behaves like the jitted ``fn`` (same
    arguments, same results, the same donation) but is called through a ``jax.export``
    artifact saved under ``directory``, read back by later processes.
    """

    def __init__(self, directory: str, caller_key: str, log: Callable[[str], None] = print):
        self.directory = os.path.expanduser(directory)
        self.log = log
        self._env_key = environment_key(caller_key)
        self.hits = 0
        self.writes = 0

    def wrap(self, name: str, fn, donate_argnums: Tuple[int, ...] = ()):
        return _CachedProgram(self, name, fn, tuple(donate_argnums))

    def program(self, name: str, fn, args, templates: Sequence[Any] = ()):
        """(Exported, output tree) of ``fn`` for ``args``: read from its entry, or
        exported (and saved when its output tree can be described). None if ``fn``
        cannot be exported; the caller then runs ``fn`` itself."""
        from jax import export

        path = self._path(name, args)
        loaded = self.load(path, args, templates)
        if loaded is not None:
            self.hits += 1
            return loaded
        leaves, in_tree = jax.tree_util.tree_flatten(args)
        traced = {}

        def flat(*xs):
            out = fn(*jax.tree_util.tree_unflatten(in_tree, xs))
            leaves_out, traced["tree"] = jax.tree_util.tree_flatten(out)
            return leaves_out

        try:
            # called as a later process reads it back (the serialized form drops weak
            # types, for one), so that this process and the next call the same program
            blob = export.export(jax.jit(flat))(*leaves).serialize()
            exported = export.deserialize(blob)
        except Exception as e:  # not exportable here: trace as usual
            self.log(f"program cache: {name} runs uncached ({type(e).__name__}: {e})")
            return None
        out_tree = traced["tree"]
        spec = describe_tree(out_tree, [jax.tree_util.tree_structure(a) for a in args], templates)
        if spec is not None and rebuild_tree(spec, args, templates) == out_tree:
            self.store(path, blob, spec)
        return exported, out_tree

    def run_once(self, name: str, fn, args, templates: Sequence[Any] = ()):
        """``run_once(fn, *args)`` (compiled for a single run; ShapeDtypeStruct
        arguments passed as zeros) through a saved program."""
        program = self.program(name, fn, args, templates)
        if program is None:
            return run_once(fn, *args)
        exported, out_tree = program
        leaves = run_once(exported.call, *jax.tree_util.tree_leaves(args))
        return jax.tree_util.tree_unflatten(out_tree, leaves)

    # -- entries --
    def _path(self, name: str, args) -> str:
        key = hashlib.sha256(
            json.dumps([self._env_key, name, _arguments_key(args)], sort_keys=True).encode()
        ).hexdigest()
        return os.path.join(self.directory, f"{name}-{key[:32]}.jaxprog")

    def load(self, path: str, args, templates: Sequence[Any] = ()):
        """(Exported, output tree) from ``path``, or None if absent or unreadable."""
        from jax import export

        try:
            with open(path, "rb") as f:
                header = json.loads(f.readline())
                blob = f.read()
            if header.get("format") != _FORMAT or len(blob) != header["bytes"]:
                return None
            exported = export.deserialize(bytearray(blob))
            out_tree = rebuild_tree(header["out"], args, templates)
            n_in = len(jax.tree_util.tree_leaves(args))
            if len(exported.in_avals) != n_in or len(exported.out_avals) != out_tree.num_leaves:
                raise ValueError("its inputs or outputs do not match this call")
            return exported, out_tree
        except FileNotFoundError:
            return None
        except Exception as e:  # damaged or from an incompatible writer: export again
            self.log(f"program cache: ignoring {path} ({type(e).__name__}: {e})")
            return None

    def store(self, path: str, blob: bytearray, out_spec) -> None:
        try:
            header = json.dumps({"format": _FORMAT, "bytes": len(blob), "out": out_spec})
            os.makedirs(self.directory, exist_ok=True)
            write_atomic(path, header.encode() + b"\n" + bytes(blob), remedy=_UNWRITABLE)
            self.writes += 1
        except Exception as e:  # an unwritable cache costs the next start, nothing else
            self.log(f"program cache: {first_line(e)}")


class _CachedProgram:
    def __init__(self, cache: ProgramCache, name: str, fn, donate_argnums: Tuple[int, ...]):
        self.cache, self.name, self.fn, self.donate_argnums = cache, name, fn, donate_argnums
        # (tree of the first argument, tree and avals of the rest) -> (call, out tree) or
        # None for "use fn". The first argument (the state, hundreds of leaves) is
        # checked against the program's input types by the exported call itself.
        self._programs: Dict[Any, Optional[tuple]] = {}

    def __call__(self, *args):
        first, first_tree = jax.tree_util.tree_flatten(args[:1])
        rest, rest_tree = jax.tree_util.tree_flatten(args[1:])
        signature = (first_tree, rest_tree, tuple((np.shape(x), getattr(x, "dtype", type(x))) for x in rest))
        program = self._programs.get(signature, False)
        if program is False:
            program = self._programs[signature] = self._prepare(args)
        if program is None:
            return self.fn(*args)
        call, out_tree = program
        return jax.tree_util.tree_unflatten(out_tree, call(*first, *rest))

    def _prepare(self, args) -> Optional[tuple]:
        program = self.cache.program(self.name, self.fn, args)
        if program is None:
            return None
        exported, out_tree = program
        offsets = np.cumsum([0] + [len(jax.tree_util.tree_leaves(a)) for a in args])
        donated = tuple(i for a in self.donate_argnums for i in range(offsets[a], offsets[a + 1]))
        return jax.jit(exported.call, donate_argnums=donated), out_tree

    def lower(self, *args):
        """Like ``jax.jit(...).lower``: ``.compile()`` of the result takes and returns
        the original trees (benchmarks/first_step.py times the phases)."""
        program = self._prepare(args)
        if program is None:
            return self.fn.lower(*args)
        call, out_tree = program
        leaves = jax.tree_util.tree_leaves(args)
        return _Lowered(call.lower(*leaves), out_tree)


class _Lowered:
    def __init__(self, lowered, out_tree):
        self.lowered, self.out_tree = lowered, out_tree

    def compile(self, **kwargs):
        compiled, out_tree = self.lowered.compile(**kwargs), self.out_tree

        def call(*args):
            return jax.tree_util.tree_unflatten(out_tree, compiled(*jax.tree_util.tree_leaves(args)))

        return call


# Settings that do not change what the train and eval programs compute
_NOT_TRACED = (
    "log_every_steps",
    "checkpoint_every_steps",
    "keep_checkpoints",
    "stop_at_step",
    "compilation_cache_dir",
    "cache_traced_programs",
    "pipeline_workers",
    "bad_records",
    "on_nonfinite",
    "max_rollbacks",
)


def program_cache(config, *, num_classes: int, steps_per_epoch: int, total_steps: int, log=print):
    """A ``ProgramCache`` beside JAX's persistent compilation cache, or None: only with
    ``config.compilation_cache_dir`` and ``config.cache_traced_programs`` set, JAX's
    cache on, one process, the shard_map runner and the model's code in a source file.

    The key holds the config and the values the programs close over that come from
    the data rather than the config: the class count and the schedule's steps per
    epoch and total steps."""
    xla_dir = jax.config.values.get("jax_compilation_cache_dir")
    if not (config.compilation_cache_dir and config.cache_traced_programs and xla_dir):
        return None
    if jax.process_count() > 1 or config.parallel != "shard_map":
        return None
    reason = unkeyed_code([models.get_info(config.model).builder])
    if reason:
        log(f"traced programs not kept: {reason}")
        return None
    traced = {k: v for k, v in config.to_dict().items() if k not in _NOT_TRACED}
    derived = {"num_classes": num_classes, "steps_per_epoch": steps_per_epoch, "total_steps": total_steps}
    key = json.dumps({"config": traced, "derived": derived}, sort_keys=True, default=repr)
    return ProgramCache(os.path.normpath(os.path.expanduser(xla_dir)) + "-programs", key, log=log)
