"""How programs are compiled and started (inception_jax/train/programs.py): programs
that run once give what plain ``model.init`` gives, and a later Runner runs a saved
program without tracing the step, with the same results as tracing it."""

import os
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import reliability_worker  # noqa: F401  (registers tiny_inception: compiles in seconds)

from inception_jax import config as config_lib
from inception_jax import models, nn
from inception_jax import train as training
from inception_jax.data import source
from inception_jax.train import parallel, programs
from inception_jax.train.steps import TrainState


@pytest.fixture(scope="module")
def setup():
    c = config_lib.base_config()
    c.model, c.image_size, c.optimizer, c.learning_rate = "tiny_inception", 16, "sgd", 0.05
    c.crop_padding, c.random_flip = 2, True
    model = training.build_model(c, 4)
    tx = training.make_optimizer(c, optax.constant_schedule(c.learning_rate))
    state0 = training.create_train_state(model, jax.random.PRNGKey(0), 16, tx)
    return c, model, tx, jax.tree_util.tree_map(np.asarray, state0), source.synthetic(48, 16, 4)


def run(setup, cache=None, steps=3):
    c, model, _, state0, ds = setup
    r = training.Runner(model, training.step_config(c), "shard_map", programs=cache)
    st = r.put_replicated(state0)
    imgs, lbls = r.put_replicated(ds.images), r.put_replicated(ds.labels)
    key = r.put_replicated(jax.random.PRNGKey(1))
    for step in range(steps):
        ids = r.put_batch(np.arange(16 * step, 16 * step + 16, dtype=np.int32))
        st, m = r.train(st, *r.gather(imgs, lbls, ids), r.put_batch(np.ones(16, np.float32)), ids, key)
    ev = r.metrics(r.evaluate(st, *r.gather(imgs, lbls, ids), r.put_batch(np.ones(16, np.float32))))
    return jax.device_get(st), r.metrics(m), ev


def test_a_saved_program_gives_the_same_steps_and_skips_tracing(setup, tmp_path, monkeypatch):
    plain_state, plain_m, plain_ev = run(setup)
    writer = programs.ProgramCache(str(tmp_path), "config A")
    state, m, ev = run(setup, writer)
    assert writer.writes == 2 and writer.hits == 0  # train_step and eval_step
    traced = []
    step = parallel.train_step

    def counting_step(*args, **kwargs):
        traced.append(1)
        return step(*args, **kwargs)

    monkeypatch.setattr(parallel, "train_step", counting_step)
    reader = programs.ProgramCache(str(tmp_path), "config A")
    loaded_state, loaded_m, loaded_ev = run(setup, reader)
    assert reader.hits == 2 and reader.writes == 0
    assert traced == []  # the step was never traced in this Runner
    # the same numbers as JAX tracing the step itself: the cache must be invisible
    chex.assert_trees_all_equal(state.params, plain_state.params)
    chex.assert_trees_all_equal(loaded_state.params, plain_state.params)
    chex.assert_trees_all_equal(loaded_state.batch_stats, plain_state.batch_stats)
    chex.assert_trees_all_equal(loaded_state.opt_state, plain_state.opt_state)
    assert int(loaded_state.step) == 3
    assert loaded_m == m == plain_m and loaded_ev == ev == plain_ev
    # another caller key (another config) is another entry, traced again
    other = programs.ProgramCache(str(tmp_path), "config B")
    run(setup, other, steps=1)
    assert other.hits == 0 and other.writes == 2 and len(traced) == 1


def test_a_damaged_entry_is_reported_and_replaced(setup, tmp_path):
    reference = run(setup, programs.ProgramCache(str(tmp_path), "k"), steps=1)
    for name in os.listdir(tmp_path):
        with open(tmp_path / name, "r+b") as f:
            f.truncate(os.path.getsize(tmp_path / name) // 2)
    lines = []
    cache = programs.ProgramCache(str(tmp_path), "k", log=lines.append)
    state, m, ev = run(setup, cache, steps=1)
    assert cache.hits == 0 and cache.writes == 2
    chex.assert_trees_all_equal(state.params, reference[0].params)
    assert (m, ev) == reference[1:]
    # a truncated file fails its length check: no traceback, a fresh export replaces it
    assert lines == []
    again = programs.ProgramCache(str(tmp_path), "k")
    run(setup, again, steps=1)
    assert again.hits == 2


def test_output_trees_are_described_by_containers_and_inputs():
    state = TrainState.create(apply_fn=None, params={"w": np.zeros(2)}, tx=optax.sgd(0.1), batch_stats={})
    args = (state, np.zeros(3))
    out = (state, {"loss": 1.0, "n": [2.0, None]})
    tree = jax.tree_util.tree_structure(out)
    spec = programs.describe_tree(tree, [jax.tree_util.tree_structure(a) for a in args])
    assert spec == {
        "tuple": [{"arg": 0}, {"dict": [["loss", "leaf"], ["n", {"list": ["leaf", {"none": 0}]}]]}]
    }
    assert programs.rebuild_tree(spec, args) == tree
    # optax's states: namedtuples, rebuilt from their importable class
    sched = jax.tree_util.tree_structure((optax.ScaleByScheduleState(count=np.zeros(())),))
    spec = programs.describe_tree(sched, [])
    assert spec == {"tuple": [{"namedtuple": ["optax._src.transform:ScaleByScheduleState", ["leaf"]]}]}
    assert programs.rebuild_tree(spec, []) == sched
    # a state of another structure: only with a template carrying its static fields
    grown = jax.tree_util.tree_structure(state.replace(params={"w": np.zeros(2), "v": np.zeros(1)}))
    assert programs.describe_tree(grown, [jax.tree_util.tree_structure(a) for a in args]) is None
    template = state.replace(params={})
    spec = programs.describe_tree(grown, [], templates=(template,))
    assert spec["template"][0] == 0
    assert programs.rebuild_tree(spec, [], templates=(template,)) == grown


def test_the_loop_caches_programs_only_beside_an_active_compilation_cache():
    c = config_lib.base_config()
    sizes = dict(num_classes=10, steps_per_epoch=390, total_steps=780)
    previous = jax.config.values.get("jax_compilation_cache_dir")
    try:
        jax.config.update("jax_compilation_cache_dir", None)
        assert training.program_cache(c, **sizes) is None  # JAX's cache off: nothing written
        jax.config.update("jax_compilation_cache_dir", "/tmp/some/xla")
        cache = training.program_cache(c, **sizes)
        assert cache.directory == "/tmp/some/xla-programs"
        # settings that cannot change the programs keep the key; the others change it
        same = config_lib.base_config()
        same.log_every_steps, same.stop_at_step = 7, 3
        assert training.program_cache(same, **sizes)._env_key == cache._env_key
        # the values the schedule and the head take from the data are in the key
        for name in sizes:
            other = {**sizes, name: sizes[name] + 1}
            assert training.program_cache(same, **other)._env_key != cache._env_key, name
        same.learning_rate = 0.5
        assert training.program_cache(same, **sizes)._env_key != cache._env_key
        c.cache_traced_programs = False
        assert training.program_cache(c, **sizes) is None
        c.cache_traced_programs, c.compilation_cache_dir = True, ""
        assert training.program_cache(c, **sizes) is None
        c.compilation_cache_dir, c.parallel = "~/x", "pmap"
        assert training.program_cache(c, **sizes) is None
    finally:
        jax.config.update("jax_compilation_cache_dir", previous)


# --- programs that run once ---------------------------------------------------------


def test_initialisation_is_deterministic():
    model = models.create("inception_cifar")
    x = jnp.zeros((1, 32, 32, 3))
    a = programs.init_variables(model, jax.random.PRNGKey(0), x.shape)
    b = programs.init_variables(model, jax.random.PRNGKey(0), x.shape)
    c = programs.init_variables(model, jax.random.PRNGKey(1), x.shape)
    # the fast-compiling helper gives what plain model.init gives
    block = nn.InceptionModule(3, 4, 2, 4, 2, 4, 4)
    chex.assert_trees_all_close(
        programs.init_variables(block, jax.random.PRNGKey(3), (1, 6, 6, 3)),
        block.init(jax.random.PRNGKey(3), jnp.zeros((1, 6, 6, 3))),
        rtol=1e-6,
        atol=1e-7,
    )
    chex.assert_trees_all_equal(a, b)
    assert not np.array_equal(a["params"]["fc"]["kernel"], c["params"]["fc"]["kernel"])


def test_the_cpu_options_for_initialisation_give_the_same_variables_bitwise():
    # run_once's first choice on a CPU (backends.cpu.ONE_OFF_COMPILER_OPTIONS, chosen
    # for compile time) against plain O0: the same program, the same values. An XLA
    # that lacks the option (jax 0.11 dropped the older CPU emitters) must fall back to
    # plain O0 and remember it
    model = models.create("inception_cifar")
    rng, x = jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))

    def init(r, x):
        return model.init(r, x, train=False)

    lowered = jax.jit(init).lower(rng, x)
    first, plain = programs.one_off_compiler_options("cpu")
    assert first != plain
    expected = lowered.compile(compiler_options=plain)(rng, x)
    try:
        with_first = lowered.compile(compiler_options=first)(rng, x)
    except Exception as e:
        assert "compile option" in str(e), e
        chex.assert_trees_all_equal(programs.run_once(init, rng, x), expected)
        assert tuple(sorted(first.items())) in programs._REJECTED_OPTIONS
        return
    chex.assert_trees_all_equal(with_first, expected)
    chex.assert_trees_all_equal(programs.run_once(init, rng, x), expected)


def test_a_saved_init_program_gives_the_same_state(setup, tmp_path):
    _, model, tx, plain, _ = setup  # create_train_state(model, PRNGKey(0), 16, tx)
    rng = jax.random.PRNGKey(0)
    writer = programs.ProgramCache(str(tmp_path), "k")
    written = training.create_train_state(model, rng, 16, tx, writer)
    reader = programs.ProgramCache(str(tmp_path), "k")
    loaded = training.create_train_state(model, rng, 16, tx, reader)
    assert (writer.writes, reader.hits) == (1, 1)
    for state in (written, loaded):
        # the optimizer's namedtuple states and the TrainState rebuilt around the leaves
        assert jax.tree_util.tree_structure(state) == jax.tree_util.tree_structure(plain)
        assert state.tx is tx and state.apply_fn == model.apply
        chex.assert_trees_all_equal(state, plain)
    # another seed is an argument of the same program
    other = training.create_train_state(model, jax.random.PRNGKey(5), 16, tx, reader)
    assert reader.hits == 2
    chex.assert_trees_all_equal(
        other.params, training.create_train_state(model, jax.random.PRNGKey(5), 16, tx).params
    )


def test_the_restore_target_has_the_state_shapes_without_running_the_init(setup, tmp_path):
    _, model, tx, real, _ = setup
    rng = jax.random.PRNGKey(0)
    cache = programs.ProgramCache(str(tmp_path), "k")
    traced = training.abstract_train_state(model, rng, 16, tx)  # jax.eval_shape of the init
    exported = training.abstract_train_state(model, rng, 16, tx, cache)  # the program's types
    loaded = training.abstract_train_state(model, rng, 16, tx, programs.ProgramCache(str(tmp_path), "k"))
    assert cache.writes == 1
    device = jax.local_devices()[0]
    for target in (traced, exported, loaded):
        assert jax.tree_util.tree_structure(target) == jax.tree_util.tree_structure(real)
        for a, b in zip(jax.tree_util.tree_leaves(target), jax.tree_util.tree_leaves(real)):
            assert isinstance(a, jax.ShapeDtypeStruct)
            assert (a.shape, a.dtype) == (np.shape(b), np.asarray(b).dtype)
            assert a.sharding.device_set == {device}


# --- nothing that shapes a traced program changes without a re-trace ---------------------


@pytest.fixture
def program_dir(tmp_path):
    """JAX's compilation cache directory as train.py sets it (the saved programs go
    beside it, in ``<dir>-programs``)."""
    previous = jax.config.values.get("jax_compilation_cache_dir")
    xla = str(tmp_path / "xla")
    jax.config.update("jax_compilation_cache_dir", xla)
    yield xla + "-programs"
    jax.config.update("jax_compilation_cache_dir", previous)


def entries(directory) -> set:
    return set(os.listdir(directory)) if os.path.isdir(directory) else set()


def trained(c, workdir, cached: bool):
    c = c.copy_and_resolve_references()
    c.cache_traced_programs = cached
    return training.train_and_evaluate(c, str(workdir))["state"]


def small_config(**overrides):
    c = config_lib.base_config()
    c.model, c.image_size, c.num_classes = "tiny_inception", 16, 4
    c.dataset, c.synthetic_examples, c.batch_size, c.eval_batch_size = "synthetic", 64, 16, 16
    c.num_epochs, c.schedule, c.log_every_steps, c.compilation_cache_dir = 2, "cosine", 1000, "unused"
    for k, v in overrides.items():
        setattr(c, k, v)
    return c


def test_data_of_another_size_in_the_same_place_retraces(program_dir, tmp_path):
    # the schedule's horizon comes from the data, not the config: a dataset replaced
    # by a larger one under the same data_dir must not run the old schedule
    import synthetic_data

    data = tmp_path / "tfds"
    c = small_config(dataset="cifar10", image_size=32, data_dir=str(data), cache_dir="", num_classes=10)
    c.train_split, c.eval_split, c.crop_padding = "train", "train[:16]", 0
    synthetic_data.write_cifar10(str(data), num_examples=48)
    trained(c, tmp_path / "small", cached=True)
    before = entries(program_dir)
    shutil.rmtree(data)
    synthetic_data.write_cifar10(str(data), num_examples=96, seed=1)
    cached = trained(c, tmp_path / "large", cached=True)
    assert entries(program_dir) - before  # traced again, new entries
    plain = trained(c, tmp_path / "plain", cached=False)
    chex.assert_trees_all_equal(cached.params, plain.params)


MODEL_SOURCE = """
import flax.linen as nn

from inception_jax import nn as layers
from inception_jax.models.registry import ModelInfo, register


class Edited(nn.Module):
    num_classes: int = 4
    dtype: object = None
    axis_name: object = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        conv = layers.make_conv(self.dtype or x.dtype, self.axis_name)
        x = conv(8, 3, 1, 1, name="conv1")(x, train)
        x = layers.global_avg_pool(x)
        return SCALE * layers.dense(self.num_classes, self.dtype or x.dtype, "fc")(x)


SCALE = {scale}
register(ModelInfo("edited_{tag}", Edited, 8, 4, num_classes=4))
"""


def test_an_edited_model_registered_from_outside_the_package_retraces(program_dir, tmp_path):
    # the model's code changes, its shapes do not: the saved programs must not be
    # called for the edited model
    import importlib.util
    import sys

    path = tmp_path / "user_models.py"

    def load(scale):
        path.write_text(MODEL_SOURCE.format(scale=scale, tag="model"))
        from inception_jax.models import registry

        registry._REGISTRY.pop("edited_model", None)
        spec = importlib.util.spec_from_file_location("user_models", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["user_models"] = module
        spec.loader.exec_module(module)

    c = small_config(model="edited_model")
    try:
        load(1.0)
        first = trained(c, tmp_path / "first", cached=True)
        before = entries(program_dir)
        load(3.0)
        cached = trained(c, tmp_path / "edited", cached=True)
        assert entries(program_dir) - before  # traced again
        plain = trained(c, tmp_path / "plain", cached=False)
        chex.assert_trees_all_equal(cached.params, plain.params)
        # the edit matters: the first model's params differ
        assert not np.array_equal(first.params["fc"]["kernel"], plain.params["fc"]["kernel"])
    finally:
        from inception_jax.models import registry

        registry._REGISTRY.pop("edited_model", None)
        sys.modules.pop("user_models", None)


def test_a_model_typed_into_a_session_keeps_no_programs(program_dir, tmp_path, capsys):
    # a notebook cell has no file whose content could key the programs: run again
    # after an edit, the model must not find the programs traced from its old version
    import sys
    import types

    def define(scale):
        from inception_jax.models import registry

        registry._REGISTRY.pop("edited_typed", None)
        cell = types.ModuleType("typed_cell")  # made in memory, as a notebook's code is
        sys.modules["typed_cell"] = cell
        exec(MODEL_SOURCE.format(scale=scale, tag="typed"), cell.__dict__)

    c = small_config(model="edited_typed")
    try:
        define(1.0)
        first = trained(c, tmp_path / "first", cached=True)
        assert "traced programs not kept: Edited comes from 'typed_cell'" in capsys.readouterr().out
        define(3.0)
        cached = trained(c, tmp_path / "edited", cached=True)
        assert entries(program_dir) == set()
        plain = trained(c, tmp_path / "plain", cached=False)
        chex.assert_trees_all_equal(cached.params, plain.params)
        assert not np.array_equal(first.params["fc"]["kernel"], plain.params["fc"]["kernel"])
    finally:
        from inception_jax.models import registry

        registry._REGISTRY.pop("edited_typed", None)
        sys.modules.pop("typed_cell", None)


def test_another_steps_per_call_retraces(program_dir, tmp_path):
    c = small_config(num_epochs=1, synthetic_examples=128, log_every_steps=8)
    c.steps_per_call, c.scan_on_cpu = 2, True
    trained(c, tmp_path / "two", cached=True)
    before = entries(program_dir)
    c.steps_per_call = 4
    cached = trained(c, tmp_path / "four", cached=True)
    assert any(name.startswith("train_many") for name in entries(program_dir) - before)
    plain = trained(c, tmp_path / "plain", cached=False)
    chex.assert_trees_all_equal(cached.params, plain.params)
