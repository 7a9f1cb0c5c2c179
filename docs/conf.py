"""Sphinx configuration: Markdown pages (MyST), the API reference from the docstrings
(autodoc, Google-style sections read by napoleon) and tables built from the code
(``_ext/inception_docs.py``).

    pip install -e '.[docs]'
    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

import os
import sys

DOCS = os.path.dirname(os.path.abspath(__file__))
# this checkout's package (not another installed copy) and the docs' own extension
sys.path[:0] = [os.path.dirname(DOCS), os.path.join(DOCS, "_ext")]
# autodoc and the model table trace models; no accelerator is needed for that
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import inception_jax  # noqa: E402

project = "inception_jax"
author = "inception_jax contributors"
copyright = "2026, inception_jax contributors"
release = version = inception_jax.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "inception_docs",
]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_ext"]

myst_heading_anchors = 3  # "page.md#a-section" links
myst_enable_extensions = ["colon_fence"]

# dtype, conv: Flax module fields whose defaults (jnp.float32, BasicConv) autodoc would list
autodoc_default_options = {"members": True, "member-order": "bysource", "exclude-members": "dtype, conv"}
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "furo"
html_title = f"inception_jax {release}"
html_show_sourcelink = False
