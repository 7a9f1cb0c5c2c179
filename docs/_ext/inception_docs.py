"""Tables of the documentation built from the code at build time, so that they cannot
drift from it:

- ``{model-table}``: every registered model, its parameters and multiply-adds
  (``inception_jax.models.stats``, what ``python -m inception_jax.models`` prints);
- ``{pretrained-table}``: the public weights each model loads and their eval transform;
- ``{config-files}``: each ``configs/*.py`` and the keys it sets apart from the defaults.
"""

from __future__ import annotations

import glob
import importlib.util
import inspect
import os
import re

from docutils import nodes
from docutils.parsers.rst import Directive

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cell(content) -> nodes.entry:
    """A table cell; a ``(text,)`` tuple is set as code."""
    entry = nodes.entry()
    paragraph = nodes.paragraph()
    if isinstance(content, tuple):
        for i, text in enumerate(content):
            if i:
                paragraph += nodes.Text(", ")
            paragraph += nodes.literal(text=text)
    else:
        paragraph += nodes.Text(str(content))
    entry += paragraph
    return entry


def _table(header, rows, right_aligned=()) -> nodes.table:
    table = nodes.table(classes=["colwidths-auto"])
    group = nodes.tgroup(cols=len(header))
    table += group
    for _ in header:
        group += nodes.colspec(colwidth=1)
    head = nodes.thead()
    group += head
    row = nodes.row()
    for title in header:
        row += _cell(title)
    head += row
    body = nodes.tbody()
    group += body
    for values in rows:
        row = nodes.row()
        for i, value in enumerate(values):
            cell = _cell(value)
            if i in right_aligned:
                cell["classes"].append("text-right")
            row += cell
        body += row
    return table


class ModelTable(Directive):
    """Parameters and GMACs of every registered model, counted from the traced program."""

    def run(self):
        from inception_jax.models import get_info, list_models
        from inception_jax.models.stats import model_stats

        rows = []
        for name in list_models():
            stats = model_stats(name)
            info = get_info(name)
            min_size = str(info.min_input_size)
            if info.min_aux_input_size and info.min_aux_input_size != info.min_input_size:
                min_size += f" ({info.min_aux_input_size} with aux)"
            rows.append(
                [
                    (name,),
                    f"{stats['params']:,}",
                    f"{stats['params_with_aux']:,}" if "params_with_aux" in stats else "–",
                    f"{stats['macs'] / 1e9:.2f}",
                    str(stats["input_size"]),
                    min_size,
                    info.num_classes,
                    stats["reference"],
                ]
            )
        header = ["model", "params", "params + aux", "GMACs", "input", "min input", "classes", "reference"]
        return [_table(header, rows, right_aligned=(1, 2, 3, 4, 6))]


class PretrainedTable(Directive):
    """The public weights of each model that has them and the transform they expect."""

    def run(self):
        from inception_jax.models import get_info, list_models

        rows = []
        for name in list_models():
            weights = get_info(name).pretrained
            if weights is None:
                continue
            if weights.input_range == 255:
                normalisation = f"{weights.input_space}, 0–255, minus {tuple(round(m) for m in weights.mean)}"
            else:
                normalisation = f"{weights.input_space}, mean {weights.mean}, std {weights.std}"
            top = "–"
            if weights.accuracy is not None:
                top = f"{weights.accuracy[0]:.2f} / {weights.accuracy[1]:.2f}"
            rows.append(
                [
                    (name,),
                    weights.source,
                    (weights.filename,),
                    f"{weights.resize_size} → {weights.input_size}",
                    weights.interpolation,
                    normalisation,
                    weights.num_classes + weights.label_offset,
                    top,
                ]
            )
        header = [
            "model",
            "source",
            "file",
            "resize → crop",
            "interpolation",
            "normalisation",
            "classes in the file",
            "published top-1 / top-5",
        ]
        return [_table(header, rows)]


def _load_config(path):
    spec = importlib.util.spec_from_file_location(f"_docs_config_{os.path.basename(path)[:-3]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _short(value) -> str:
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    return repr(value)


class ConfigFiles(Directive):
    """Each ``configs/*.py``: what its docstring says first and what it changes."""

    def run(self):
        from inception_jax.config import base_config

        defaults = base_config()
        rows = []
        for path in sorted(glob.glob(os.path.join(ROOT, "configs", "*.py"))):
            module = _load_config(path)
            if not hasattr(module, "get_config"):
                continue
            config = module.get_config()
            changed = tuple(
                f"{key}={_short(config[key])}"
                for key in config.keys()
                if key not in defaults or _short(config[key]) != _short(defaults[key])
            )
            summary = (module.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
            rows.append([(f"configs/{os.path.basename(path)}",), summary, changed or "–"])
        return [_table(["config", "what it is", "set apart from the defaults"], rows)]


_CLASS_REPR = re.compile(r"<class '([\w.]+)'>")


def _flax_fields(cls) -> str:
    """A Flax module's constructor without the ``parent`` and ``name`` that Flax adds to
    every module (their defaults print as object addresses)."""
    params = []
    for p in inspect.signature(cls).parameters.values():
        if p.name in ("parent", "name"):
            continue
        params.append(p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}")
    return "(" + ", ".join(params) + ")"


def _readable_signature(app, what, name, obj, options, signature, return_annotation):
    """Signatures as they are written in code: ``dtype=jax.numpy.float32`` rather than
    the repr of the class, Flax modules without their ``parent``/``name`` fields."""
    if what == "class" and inspect.isclass(obj) and _is_flax_module(obj):
        signature = _flax_fields(obj)
    if signature:
        signature = _CLASS_REPR.sub(r"\1", signature)
    return signature, return_annotation


def _is_flax_module(cls) -> bool:
    import flax.linen as nn

    return issubclass(cls, nn.Module)


def setup(app):
    app.connect("autodoc-process-signature", _readable_signature)
    app.add_directive("model-table", ModelTable)
    app.add_directive("pretrained-table", PretrainedTable)
    app.add_directive("config-files", ConfigFiles)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
