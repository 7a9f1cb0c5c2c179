"""Running the steps on devices: ``jax.jit`` + ``jax.shard_map`` (default) or
``jax.pmap``; placing state and batches."""

from __future__ import annotations

import functools
from typing import Dict

import jax
import numpy as np

from inception_jax.train.steps import AXIS, StepConfig, eval_step, train_step


class Runner:
    """Compiles the per-device steps for all local devices and moves data/state.

    ``train(state, images, labels, weights, example_ids, key)`` and ``evaluate(state,
    images, labels, mask)`` take a global batch split over the devices; ``gather``
    makes one from a dataset held on the devices. The canonical state (what is
    checkpointed) is replicated over the mesh; the pmap runner keeps a stacked copy
    internally.

    ``programs`` (a ``programs.ProgramCache``, shard_map only) keeps the traced train
    and eval programs on disk, so that a later process skips tracing them.
    """

    def __init__(self, model, cfg: StepConfig, parallel: str = "shard_map", devices=None, programs=None):
        from jax.sharding import Mesh, NamedSharding
        from jax.sharding import PartitionSpec as P

        self.devices = list(devices if devices is not None else jax.devices())
        self.num_devices = len(self.devices)
        self.parallel = parallel
        self.mesh = Mesh(np.array(self.devices), (AXIS,))
        self.replicated = NamedSharding(self.mesh, P())
        self.sharded = NamedSharding(self.mesh, P(AXIS))
        step = functools.partial(train_step, model=model, cfg=cfg, axis_name=AXIS)
        evaluate = functools.partial(eval_step, model=model, cfg=cfg, axis_name=AXIS)

        def gather(images, labels, indices):
            return images[indices], labels[indices]

        if parallel == "shard_map":
            batch = P(AXIS)
            self._train = jax.jit(
                jax.shard_map(
                    step,
                    mesh=self.mesh,
                    in_specs=(P(), batch, batch, batch, batch, P()),
                    out_specs=(P(), P()),
                    check_vma=False,
                ),
                donate_argnums=(0,),
            )
            self._eval = jax.jit(
                jax.shard_map(
                    evaluate,
                    mesh=self.mesh,
                    in_specs=(P(), batch, batch, batch),
                    out_specs=P(),
                    check_vma=False,
                )
            )
            self._gather = jax.jit(gather, out_shardings=(self.sharded, self.sharded))

            def many(state, images, labels, indices, weights, key):
                # k steps in one program: this device's examples of each step gathered from
                # the dataset held on it, then the same per-device step as ``train``
                def body(state, idx):
                    return step(state, images[idx], labels[idx], weights, idx, key)

                state, ms = jax.lax.scan(body, state, indices)
                return state, jax.tree_util.tree_map(lambda m: m.sum(axis=0), ms)

            self._train_many = jax.jit(
                jax.shard_map(
                    many,
                    mesh=self.mesh,
                    in_specs=(P(), P(), P(), P(None, AXIS), batch, P()),
                    out_specs=(P(), P()),
                    check_vma=False,
                ),
                donate_argnums=(0,),
            )
            self.steps_sharded = NamedSharding(self.mesh, P(None, AXIS))
            if programs is not None:
                self._train = programs.wrap("train_step", self._train, donate_argnums=(0,))
                self._eval = programs.wrap("eval_step", self._eval)
                self._train_many = programs.wrap("train_many", self._train_many, donate_argnums=(0,))
        elif parallel == "pmap":
            self._train = jax.pmap(
                step, axis_name=AXIS, in_axes=(0, 0, 0, 0, 0, None), donate_argnums=(0,), devices=self.devices
            )
            self._eval = jax.pmap(evaluate, axis_name=AXIS, devices=self.devices)
            self._gather = jax.pmap(gather, devices=self.devices)
        else:
            raise ValueError(f"parallel={parallel!r}: expected 'shard_map' or 'pmap'")

    # -- placement --
    def put_replicated(self, tree):
        if self.parallel == "pmap":  # one copy per device along a new leading axis
            n = self.num_devices
            return jax.tree_util.tree_map(
                lambda x: jax.device_put(
                    np.broadcast_to(np.asarray(x)[None], (n,) + np.shape(x)), self.sharded
                ),
                tree,
            )
        if jax.process_count() > 1:
            # An array committed to this process's own device (a restored checkpoint, say)
            # cannot be moved to the other processes' devices; every process holds the same
            # values, so each hands its copy over through host memory.
            tree = jax.tree_util.tree_map(
                lambda x: np.asarray(x) if isinstance(x, jax.Array) and x.is_fully_addressable else x, tree
            )
        return jax.device_put(tree, self.replicated)

    def unreplicate(self, tree):
        if self.parallel == "pmap":
            return jax.tree_util.tree_map(lambda x: x[0], tree)
        return tree

    def put_local_batch(self, array: np.ndarray):
        """This process's part of a global batch (streaming: each process reads its own shard)."""
        if self.parallel == "pmap":
            return jax.device_put(array.reshape(self.num_devices, -1, *array.shape[1:]), self.sharded)
        return jax.make_array_from_process_local_data(self.sharded, array)

    def put_batch(self, array: np.ndarray):
        """A global batch (the same on every process): each process feeds its own part."""
        if self.parallel == "shard_map" and jax.process_count() > 1:
            per = array.shape[0] // jax.process_count()
            array = array[jax.process_index() * per : (jax.process_index() + 1) * per]
        return self.put_local_batch(array)

    # -- steps --
    def train(self, state, *args):
        return self._train(state, *args)

    def train_many(self, state, images, labels, indices, weights, key):
        """``indices.shape[0]`` train steps in one call (shard_map only): ``images`` and
        ``labels`` the dataset placed with ``put_replicated``, ``indices`` (steps, batch)
        from ``put_steps``; returns the state and the steps' summed metrics."""
        return self._train_many(state, images, labels, indices, weights, key)

    def put_steps(self, array: np.ndarray):
        """(steps, global batch) indices, the same on every process, split along the batch."""
        if jax.process_count() > 1:
            per = array.shape[1] // jax.process_count()
            array = array[:, jax.process_index() * per : (jax.process_index() + 1) * per]
        return jax.make_array_from_process_local_data(self.steps_sharded, array)

    def evaluate(self, state, *args):
        return self._eval(state, *args)

    def gather(self, images, labels, indices):
        """The examples ``indices`` (a batch from ``put_batch``) of a dataset placed with
        ``put_replicated``, split over the devices as ``train``/``evaluate`` take them."""
        return self._gather(images, labels, indices)

    def metrics(self, m) -> Dict[str, float]:
        m = jax.device_get(m)
        if self.parallel == "pmap":
            m = jax.tree_util.tree_map(lambda x: x[0], m)
        return {k: float(v) for k, v in m.items()}
