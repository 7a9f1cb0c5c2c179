"""Every code block of README.md and docs/*.md, run, so that a doc that stops working
fails the tests.

A block is a fenced block (```python, ```bash or a bare ```) or an indented block (four
spaces after a blank line, which is how the docs write shell commands). Python blocks
run in a fresh interpreter. Shell blocks are split into commands and each command is
checked as the first matching entry of RULES says: run as written with overrides that
make it short, its flags looked up in its --help, a syntax check, ... A command that no
rule covers fails, naming the file and the command: a new kind of command in the docs
needs a rule here.

Everything runs offline in a temporary directory: HOME points there, random-weight
stand-ins for the public weights files sit where the code looks for them
(~/.cache/torch/hub/checkpoints), and the working directory holds the images, folders
and weights files the blocks name, beside links to train.py, configs/, benchmarks/ and
tests/. One XLA compilation cache is shared by every process of the run.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC_FILES = ["README.md"] + sorted(
    os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md"))
)
TIMEOUT_S = 1500  # one command; the slowest (fine-tuning, FID) take minutes on a busy CPU

PYTHON_LANGS = ("python", "py")
SHELL_LANGS = ("", "bash", "sh", "shell")  # "": a bare fence or an indented block


# --- collecting the blocks --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Block:
    path: str  # relative to the repository
    line: int  # the block's first line (its fence, for a fenced block)
    lang: str  # the fence's language, "" for a bare fence or an indented block
    text: str

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"


FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})\s*(\{[\w:-]+\}|[\w+-]*)[ \t]*(\S*)")
# MyST directives whose body is code in the language of their argument; the body of
# any other directive ({toctree}, {automodule}, a table-building directive) is not code
CODE_DIRECTIVES = ("{code-block}", "{code}", "{sourcecode}", "{code-cell}")


def code_blocks(markdown: str, path: str) -> list[Block]:
    """The fenced and indented code blocks of a markdown text, in order. A MyST
    directive fence (```{name}) is a code block only for the code directives."""
    lines = markdown.splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence:
            indent, marker, lang, argument = fence.groups()
            if lang.startswith("{"):
                lang = argument if lang in CODE_DIRECTIVES else None
            close = re.compile(rf"^ {{0,3}}{re.escape(marker[0])}{{{len(marker)},}}\s*$")
            j = i + 1
            while j < len(lines) and not close.match(lines[j]):
                j += 1
            body = [s[len(indent) :] if s.startswith(indent) else s.lstrip() for s in lines[i + 1 : j]]
            if lang is not None:
                blocks.append(Block(path, i + 1, lang.lower(), "\n".join(body) + "\n"))
            i = j + 1
        elif lines[i].startswith("    ") and lines[i].strip() and (i == 0 or not lines[i - 1].strip()):
            j = i
            while j < len(lines) and (lines[j].startswith("    ") or not lines[j].strip()):
                j += 1
            while not lines[j - 1].strip():  # blank lines after the block are not part of it
                j -= 1
            blocks.append(Block(path, i + 1, "", "\n".join(s[4:] for s in lines[i:j]) + "\n"))
            i = j
        else:
            i += 1
    return blocks


def all_blocks() -> list[Block]:
    blocks = []
    for path in DOC_FILES:
        with open(os.path.join(ROOT, path), encoding="utf-8") as f:
            blocks += code_blocks(f.read(), path)
    return blocks


def shell_commands(text: str) -> list[list[str]]:
    """A shell block's commands as argument lists: backslash continuations joined,
    ``#`` comments dropped, ``&&`` and ``;`` separating commands."""
    commands = []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        command: list[str] = []
        for token in shlex.split(line, comments=True):
            if token in ("&&", ";"):
                commands.append(command)
                command = []
            else:
                command.append(token)
        if command:
            commands.append(command)
    return commands


def without_optional(args: list[str]) -> list[str]:
    """``args`` less the optional parts a usage line writes in brackets (``[--json]``,
    ``[--dims 64|192|768|2048]``)."""
    out, depth = [], 0
    for a in args:
        if depth == 0 and not a.startswith("["):
            out.append(a)
            continue
        depth += a.count("[") - a.count("]")
    return out


# --- what the blocks need -------------------------------------------------------------------

# What the docs write as placeholders, (flag, placeholder) -> the value used here.
PLACEHOLDERS = {
    ("--weights", "W"): "pt_inception-2015-12-05-6726825d.pth",  # inception_jax.fid
    ("--workdir", "W"): "workdir",
    ("--workdir", "DIR"): "workdir",
    ("--config", "configs/X.py"): "configs/smoke.py",
    ("--config.steps_per_call", "K"): "2",
}


def filled_in(args: list[str]) -> list[str]:
    """A command as run here: optional parts left out, placeholders filled in."""
    args = without_optional(args)
    out = []
    for i, a in enumerate(args):
        flag, eq, value = a.partition("=")
        if eq and (flag, value) in PLACEHOLDERS:
            a = f"{flag}={PLACEHOLDERS[flag, value]}"
        elif i > 0 and (args[i - 1], a) in PLACEHOLDERS:
            a = PLACEHOLDERS[args[i - 1], a]
        out.append(a)
    return out


# Files and folders a block names; each is made once (maker(path)) and linked into the
# working directory of every block whose text names it.


def _save_torch_state_dict(name):
    def make(path):
        import torch
        import torch_refs

        torch.save(torch_refs.build(name).state_dict(), path)

    return make


def _save_fid_weights(path):
    """pytorch-fid's own FID Inception (its FIDInception blocks), random weights and
    random BatchNorm statistics, built without downloading pytorch-fid's file."""
    from unittest import mock

    import torch
    import torch_refs
    from pytorch_fid import inception as pfi

    torch.manual_seed(0)
    with (
        mock.patch.object(pfi, "load_state_dict_from_url", lambda *a, **k: None),
        mock.patch.object(torch.nn.Module, "load_state_dict", lambda self, *a, **k: None),
    ):
        net = pfi.fid_inception_v3()
    torch_refs.randomize_batchnorm(net)
    torch.save(net.state_dict(), path)


def _save_safetensors(name):
    def make(path):
        import torch_refs
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in torch_refs.build(name).state_dict().items()}, path)

    return make


def _image(seed, size):
    def make(path):
        from PIL import Image

        rng = np.random.RandomState(seed)
        base = rng.randint(0, 256, (1, 1, 3))
        noise = rng.normal(0, 50, (size[1], size[0], 3))
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(path)

    return make


def _image_folder(seed, count=6):
    def make(path):
        os.makedirs(path)
        for i in range(count):
            _image(seed * 100 + i, (48, 40))(os.path.join(path, f"{i:03d}.png"))

    return make


def _export(model):
    """What ``python -m inception_jax.export`` writes, for the CPU only (the fastest)."""

    def make(path):
        command = [sys.executable, "-m", "inception_jax.export", "--model", model]
        command += ["--platforms", "cpu", "--out", path]
        env = dict(os.environ, JAX_PLATFORMS="cpu")
        proc = subprocess.run(command, env=env, capture_output=True, text=True)
        assert_ran(proc, shlex.join(command))

    return make


FILES = {
    "googlenet-1378be20.pth": _save_torch_state_dict("googlenet"),
    "pt_inception-2015-12-05-6726825d.pth": _save_fid_weights,
    "cat.jpg": _image(1, (80, 64)),
    "dog.png": _image(2, (64, 96)),
    "real_images/": _image_folder(1),
    "fake_images/": _image_folder(2),
    "real/": _image_folder(3),
    "fake/": _image_folder(4),
    "googlenet_cifar.jaxexport": _export("googlenet_cifar"),
}

# Public weights that a block loads from the download cache, by what in the block
# asks for them: block text -> the model whose weights file goes to
# ~/.cache/torch/hub/checkpoints under the name inception_jax (and torchvision) look for.
HUB_WEIGHTS = {
    'load_pretrained("inception_v3")': "inception_v3",
    'load_pretrained("googlenet")': "googlenet",
    "--model inception_v4": "inception_v4",
    "googlenet(weights='IMAGENET1K_V1')": "googlenet",
    "~/.cache/torch/hub/checkpoints/googlenet-1378be20.pth": "googlenet",
}
HUB_MAKERS = {
    "googlenet": _save_torch_state_dict("googlenet"),
    "inception_v3": _save_torch_state_dict("inception_v3"),
    "inception_v4": _save_safetensors("inception_v4"),
}

# Blocks that are fragments, using names an earlier block defines: the block's first
# line -> the code run before it. Kept to what the fragment needs (googlenet at a small
# input, so that the fragment costs seconds).
PREAMBLES = {
    "feats = inception_jax.intermediate_features(": (
        "import jax, jax.numpy as jnp\n"
        "import inception_jax\n"
        'model = inception_jax.create("googlenet", aux_logits=False)\n'
        "variables = inception_jax.train.init_variables(model, jax.random.PRNGKey(0), (1, 64, 64, 3))\n"
        "x = jnp.ones((2, 64, 64, 3))\n"
    ),
}

# Blocks that take more than ~30 s on a 2-core CPU, by a string in them -> why (the
# times measured on a busy 2-core machine). The first train.py run of configs/smoke.py
# (README's set-up, ~55 s with a cold compilation cache) stays in the quick set: it is
# the README's main job, and it fills the cache the other smoke runs (~15 s) read.
SLOW = {
    'ij.create("inception_v3"': "inception_v3 at 299 px: eval, train mode and a jvp (~80 s)",
    "from inception_jax.weights import load_pretrained": "googlenet at 224 px, 3 loads, a save (~50 s)",
    "fid.FIDNetwork.load": "FID Inception at 299 px on two padded batches of 50 (~90 s)",
    "python -m inception_jax.fid": "FID Inception at 299 px, two processes (~110 s)",
    "configs/finetune_cifar10.py": "googlenet at 224 px, train and eval steps (~130 s)",
    "inception_jax.export --model inception_v3": "inception_v3 exported for 3 platforms and checked (~80 s)",
    "python -m inception_jax.predict": "googlenet 224 px, inception_v4 299 px and its 170 MB weights (~55 s)",
    "configs/cifar10.py": "inception_cifar at 32 px, batch 128: a compile of its own (~60 s)",
    "--config.steps_per_call=": "2 steps in one lax.scan: a compile of its own (~50 s)",
    # measured 2026-12-07 with the machine's 2 cores shared by several jobs
    "python -m inception_jax.models": "traces all 9 models, 3 times each with aux heads (~80 s)",
    "inception_jax.export --model googlenet_cifar": "exported for 3 platforms and checked (~110 s)",
    'open("googlenet_cifar.jaxexport"': "the export it reads, made first (~95 s)",
    'load_pretrained("googlenet")': "googlenet at 224 px: a conversion and 2 compiled programs (~100 s)",
    "optax.softmax_cross_entropy_with_integer_labels": "inception_cifar init, train, eval (~140 s)",
}

# Blocks that are known to be wrong, by a string in them -> what is wrong. Strict: a
# block that starts working fails here, so that its entry is removed.
XFAIL: dict[str, str] = {}

# Short runs of train.py: appended to every command (the later value wins), and
# per config file.
TRAIN_OVERRIDES = ["--config.num_train_steps=2", "--config.log_every_steps=1"]
CONFIG_OVERRIDES = {
    "configs/finetune_cifar10.py": ["--config.batch_size=8", "--config.eval_batch_size=32"],
}
# The synthetic cifar10 (conftest.synthetic_cifar) has 512 examples in its train split.
SYNTHETIC_SPLITS = ["--config.train_split=train[:448]", "--config.eval_split=train[448:]"]


class Workspace:
    """The temporary HOME, working directory and environment of one block."""

    def __init__(self, store, cwd, request):
        self.store, self.cwd, self.request = store, str(cwd), request
        self.home = store.home
        self.xla_cache = store.xla_cache
        self.env = dict(os.environ)
        for key in ("XDG_CACHE_HOME", "HF_HUB_CACHE", "TFDS_DATA_DIR"):
            self.env.pop(key, None)
        self.env.update(
            HOME=self.home,
            TORCH_HOME=os.path.join(self.home, ".cache", "torch"),
            HF_HOME=os.path.join(self.home, ".cache", "huggingface"),
            HF_HUB_OFFLINE="1",
            JAX_PLATFORMS="cpu",
            JAX_COMPILATION_CACHE_DIR=self.xla_cache,
            PYTHONUNBUFFERED="1",
        )
        os.makedirs(self.cwd, exist_ok=True)
        for name in ("train.py", "configs", "benchmarks", "tests"):
            os.symlink(os.path.join(ROOT, name), os.path.join(self.cwd, name))

    def prepare(self, text: str, args: tuple[str, ...] = ()) -> None:
        """Links the files ``text`` (or the arguments ``args``) name into the working
        directory and puts the cached weights it loads in HOME."""
        for name in FILES:
            if name in text or name in args:
                os.symlink(self.store.file(name), os.path.join(self.cwd, name.rstrip("/")))
        for trigger, model in HUB_WEIGHTS.items():
            if trigger in text:
                self.store.hub(model)

    def run(self, argv: list[str]) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(
                argv, cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"{shlex.join(argv)}: still running after {TIMEOUT_S} s")

    def synthetic_cifar(self) -> str:
        return self.request.getfixturevalue("synthetic_cifar")


class Store:
    """Files made once per test run, on first use."""

    def __init__(self, root):
        self.root = str(root)
        self.home = os.path.join(self.root, "home")
        self.xla_cache = os.path.join(self.root, "xla")
        os.makedirs(self.home)

    def file(self, name: str) -> str:
        path = os.path.join(self.root, "files", name.rstrip("/"))
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            FILES[name](path)
        return path

    def hub(self, model: str) -> str:
        from inception_jax import models

        cfg = models.get_info(model).pretrained
        path = os.path.join(self.home, ".cache", "torch", "hub", "checkpoints", cfg.filename)
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            HUB_MAKERS[model](path)
        return path


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    return Store(tmp_path_factory.mktemp("docs"))


@pytest.fixture
def workspace(store, tmp_path, request):
    return Workspace(store, tmp_path / "cwd", request)


def _output(proc) -> str:
    text = (proc.stdout or "") + (proc.stderr or "")
    return text if len(text) < 6000 else "...\n" + text[-6000:]


def assert_ran(proc, what: str) -> None:
    assert proc.returncode == 0, f"{what}: exit status {proc.returncode}\n{_output(proc)}"


# --- the rules for shell commands ------------------------------------------------------------


def check_pip_install(args, ws, where):
    """Not run here (CI runs the README's install commands): one of the known installs,
    of this repository, with extras that pyproject.toml defines."""
    known = [["-e", "."], ["-e", ".[test]"], ["-e", ".[prepare]"], ["-e", ".[docs]"]]
    assert args[2:] in known, f"{where}: `{shlex.join(args)}` is not one of the known install commands"
    extras = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", args[-1]).group(1)
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        pyproject = f.read()
    section = pyproject.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    for extra in (extras or "").split(",") if extras else []:
        assert re.search(rf"^{re.escape(extra)}\s*=", section, re.M), f"{where}: no extra {extra!r}"


def check_pytest_command(args, ws, where):
    """Not run here (pytest inside pytest): the named test files exist and the ``-m``
    expression names markers that conftest.py registers."""
    with open(os.path.join(ROOT, "tests", "conftest.py"), encoding="utf-8") as f:
        markers = set(re.findall(r'"markers",\s*"(\w+)', f.read()))
    rest = args[3:]
    i = 0
    while i < len(rest):
        a = rest[i]
        if a in ("-m", "-k"):
            if a == "-m":
                for name in re.findall(r"\w+", rest[i + 1]):
                    assert name in ("and", "or", "not") or name in markers, (
                        f"{where}: marker {name!r} is not registered in tests/conftest.py"
                    )
            i += 2
            continue
        if not a.startswith("-"):
            path = a.split("::")[0]
            assert os.path.exists(os.path.join(ROOT, path)), f"{where}: {path} does not exist"
        i += 1


def _value(args, flag):
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def _dataset(config_path):
    spec = importlib.util.spec_from_file_location("_doc_config", os.path.join(ROOT, config_path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config().dataset


def run_train(args, ws, where):
    """Runs train.py as written, with overrides appended (the last value wins) that stop
    it after 2 steps, share the compilation cache, read the synthetic cifar10 instead of
    a prepared one and keep the workdir inside the temporary directory."""
    config = _value(args, "--config")
    assert config, f"{where}: no --config"
    extra = TRAIN_OVERRIDES + [f"--config.compilation_cache_dir={ws.xla_cache}"]
    dataset = _dataset(config)
    if dataset == "cifar10":
        extra += [f"--config.data_dir={ws.synthetic_cifar()}"] + SYNTHETIC_SPLITS
    elif dataset != "synthetic":
        pytest.fail(f"{where}: no synthetic stand-in for dataset {dataset!r} (add one in tests/test_docs.py)")
    extra += CONFIG_OVERRIDES.get(config, [])
    workdir = _value(args, "--workdir")
    assert workdir, f"{where}: no --workdir"
    if os.path.isabs(os.path.expanduser(workdir)):
        extra.append(f"--workdir={os.path.join(ws.cwd, 'workdir')}")
    proc = ws.run([sys.executable] + args[1:] + extra)
    assert_ran(proc, where)
    assert re.search(r"step 2/2 loss \d", proc.stdout + proc.stderr), (
        f"{where}: no progress line\n{_output(proc)}"
    )


def run_module(args, ws, where):
    """Runs ``python -m inception_jax.X`` with the prepared files; a --json command
    must print JSON."""
    proc = ws.run([sys.executable] + args[1:])
    assert_ran(proc, where)
    if "--json" in args:
        json.loads(proc.stdout)


def run_python_c(args, ws, where):
    assert_ran(ws.run([sys.executable, "-c", args[2]]), where)


def check_flags_in_help(args, ws, where):
    """Not run (a benchmark takes minutes or a GPU; preparing data downloads it and needs
    TensorFlow): its --help works and lists every flag the doc passes."""
    program = args[1:3] if args[1] == "-m" else args[1:2]
    proc = ws.run([sys.executable] + program + ["--help"])
    assert_ran(proc, where)
    for a in args:
        if a.startswith("--"):
            flag = a.split("=", 1)[0]
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", proc.stdout), (
                f"{where}: {flag} is not a flag of {' '.join(program)}:\n{proc.stdout}"
            )


def check_bash_syntax(args, ws, where):
    """Syntax only (it needs a GPU)."""
    assert os.path.isfile(os.path.join(ROOT, args[1])), f"{where}: {args[1]} does not exist"
    assert_ran(ws.run(["bash", "-n", args[1]]), where)


def check_docs_build(args, ws, where):
    """Not run (CI builds the site, with -W): it builds docs/ with its conf.py."""
    sources = [a for a in args[3:] if not a.startswith("-") and a not in ("html",)]
    assert sources[:1] == ["docs"], f"{where}: expected docs/ as the source folder"
    assert os.path.isfile(os.path.join(ROOT, "docs", "conf.py")), f"{where}: no docs/conf.py"


ENV_ASSIGNMENT = re.compile(r"[A-Z][A-Z0-9_]*=")


def check_multihost_launch(args, ws, where):
    """Not run (it waits for the other hosts): every variable set before ``python
    train.py`` is one train.py reads, and the config file exists."""
    with open(os.path.join(ROOT, "train.py"), encoding="utf-8") as f:
        source = f.read()
    names = [a.split("=", 1)[0] for a in args if ENV_ASSIGNMENT.match(a)]
    for name in names:
        assert f'"{name}"' in source, f"{where}: train.py does not read {name}"
    command = args[len(names) :]
    assert command[:2] == ["python", "train.py"], f"{where}: expected `python train.py` after the variables"
    config = _value(command, "--config")
    assert config and os.path.isfile(os.path.join(ROOT, config)), f"{where}: no config file {config!r}"


@dataclasses.dataclass(frozen=True)
class Rule:
    name: str
    matches: object  # args -> bool
    check: object  # (args, workspace, where) -> None


RULES = [
    Rule(
        "VAR=value python train.py",
        lambda a: ENV_ASSIGNMENT.match(a[0]) is not None and "train.py" in a,
        check_multihost_launch,
    ),
    Rule("pip install", lambda a: a[:2] == ["pip", "install"], check_pip_install),
    Rule("python -m pytest", lambda a: a[:3] == ["python", "-m", "pytest"], check_pytest_command),
    Rule("python train.py", lambda a: a[:2] == ["python", "train.py"], run_train),
    Rule(
        "python -m inception_jax.data.prepare",
        lambda a: a[:3] == ["python", "-m", "inception_jax.data.prepare"],
        check_flags_in_help,
    ),
    Rule(
        "python -m inception_jax.X",
        lambda a: a[:2] == ["python", "-m"] and len(a) > 2 and a[2].startswith("inception_jax."),
        run_module,
    ),
    Rule(
        "python benchmarks/X.py",
        lambda a: (
            a[:1] == ["python"] and len(a) > 1 and re.fullmatch(r"benchmarks/\w+\.py", a[1]) is not None
        ),
        check_flags_in_help,
    ),
    Rule("python -c", lambda a: a[:2] == ["python", "-c"] and len(a) == 3, run_python_c),
    Rule("python -m sphinx", lambda a: a[:3] == ["python", "-m", "sphinx"], check_docs_build),
    Rule(
        "bash benchmarks/gpu_suite.sh",
        lambda a: a[:2] == ["bash", "benchmarks/gpu_suite.sh"],
        check_bash_syntax,
    ),
]


def rule_for(args: list[str]) -> Rule | None:
    return next((r for r in RULES if r.matches(args)), None)


# --- the tests -------------------------------------------------------------------------------

BLOCKS = all_blocks()


def _param(block):
    marks = []
    slow = [why for key, why in SLOW.items() if key in block.text]
    if slow:
        marks.append(pytest.mark.slow)
    xfail = [why for key, why in XFAIL.items() if key in block.text]
    if xfail:
        marks.append(pytest.mark.xfail(strict=True, reason="; ".join(xfail)))
    return pytest.param(block, id=block.id, marks=marks)


# Pages that hold no code by design: the site's contents and the generated API reference.
PAGES_WITHOUT_CODE = ("docs/index.md", "docs/api.md")


def test_the_docs_have_blocks():
    found = {path: sum(b.path == path for b in BLOCKS) for path in DOC_FILES}
    assert all(found[path] > 0 for path in DOC_FILES if path not in PAGES_WITHOUT_CODE), found
    assert all(found[path] == 0 for path in PAGES_WITHOUT_CODE), found


def test_the_block_reader():
    markdown = (
        "Text\n\n    cmd one \\\n        --flag  # note\n\n    cmd two\nmore text\n\n"
        "- item\n  continued\n\n```python\nx = 1\n\n    y = 2\n```\n\n~~~\nbare\n~~~\n"
        "\n```{toctree}\n:hidden:\n\nquickstart\n```\n\n```{code-block} python\nz = 3\n```\n"
    )
    blocks = code_blocks(markdown, "x.md")
    assert [(b.line, b.lang, b.text) for b in blocks] == [
        (3, "", "cmd one \\\n    --flag  # note\n\ncmd two\n"),
        (12, "python", "x = 1\n\n    y = 2\n"),
        (18, "", "bare\n"),
        (28, "python", "z = 3\n"),
    ]
    assert shell_commands(blocks[0].text) == [["cmd", "one", "--flag"], ["cmd", "two"]]
    assert shell_commands("pip install -e . && python a.py 'x y'  # c\n# only a comment\n") == [
        ["pip", "install", "-e", "."],
        ["python", "a.py", "x y"],
    ]
    assert without_optional(["a", "[--w", "P]", "b", "[--json]", "c"]) == ["a", "b", "c"]
    assert filled_in(["python", "x", "--workdir", "DIR", "--config.steps_per_call=K", "[--x=1", "...]"]) == [
        "python",
        "x",
        "--workdir",
        "workdir",
        "--config.steps_per_call=2",
    ]


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_every_block_has_a_rule(block):
    """Cheap, and covers the slow blocks too: every block is Python or shell, and every
    shell command matches a rule."""
    if block.lang in PYTHON_LANGS:
        compile(PREAMBLES.get(block.text.splitlines()[0], "") + block.text, block.id, "exec")
        return
    assert block.lang in SHELL_LANGS, (
        f"{block.id}: a ```{block.lang} block; tests/test_docs.py runs python and shell blocks only"
    )
    for args in map(filled_in, shell_commands(block.text)):
        assert rule_for(args), (
            f"{block.id}: no rule in tests/test_docs.py covers `{shlex.join(args)}`; add one to RULES"
        )


@pytest.mark.parametrize("block", [_param(b) for b in BLOCKS if b.lang in PYTHON_LANGS])
def test_python_block(block, workspace):
    code = PREAMBLES.get(block.text.splitlines()[0], "") + block.text
    workspace.prepare(block.text)
    assert_ran(workspace.run([sys.executable, "-c", code]), block.id)


@pytest.mark.parametrize("block", [_param(b) for b in BLOCKS if b.lang in SHELL_LANGS])
def test_shell_block(block, workspace):
    commands = [filled_in(args) for args in shell_commands(block.text)]
    assert commands, f"{block.id}: an empty block"
    workspace.prepare(block.text, tuple(a for args in commands for a in args))
    for args in commands:
        rule = rule_for(args)
        if rule is None:
            pytest.fail(f"{block.id}: no rule in tests/test_docs.py covers `{shlex.join(args)}`")
        rule.check(args, workspace, f"{block.id}: `{shlex.join(args)}`")


# --- tables of the docs that list what the code defines ----------------------------------------


def _table_rows(markdown: str, heading: str) -> list[tuple[str, str]]:
    """(first cell, second cell) of the rows of the first table under ``heading``, with
    the backquotes around each cell removed."""
    section = markdown.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([^`]*)` \| `([^`]*)` \|", section, re.M)


def test_the_config_key_table_lists_every_key_and_its_default():
    from inception_jax.config import base_config

    config = base_config()
    expected = {
        key: repr(config[key].to_dict() if hasattr(config[key], "to_dict") else config[key])
        for key in config.keys()
    }
    with open(os.path.join(ROOT, "docs", "training.md"), encoding="utf-8") as f:
        rows = _table_rows(f.read(), "## Config keys")
    documented = dict(rows)
    assert len(documented) == len(rows), "docs/training.md: a config key is listed twice"
    assert sorted(set(expected) - set(documented)) == [], "docs/training.md: config keys not documented"
    assert sorted(set(documented) - set(expected)) == [], "docs/training.md: keys that base_config() lacks"
    wrong = {k: (documented[k], expected[k]) for k in expected if documented[k] != expected[k]}
    assert wrong == {}, "docs/training.md: defaults (documented, base_config()) that differ"
