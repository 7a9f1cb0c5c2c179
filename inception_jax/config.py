"""Default training configuration and its validation.

Every file in ``configs/`` starts from :func:`base_config` and overrides what its
recipe needs; any key can be overridden on the command line
(``--config.batch_size=256``). :func:`validate` checks a config before any data
is read or anything is compiled, and raises one line naming the bad value.
"""

from __future__ import annotations

import os

import ml_collections

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("constant", "step", "exponential", "cosine")
IN_MEMORY = ("cifar10", "cifar100", "synthetic")  # others stream from disk (ImageNet)
PARALLEL = ("shard_map", "pmap")


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # what to train
    c.model = "inception_cifar"
    c.model_kwargs = ml_collections.ConfigDict()  # e.g. dropout, aux_logits, transform_input
    c.num_classes = -1  # -1: the dataset's
    c.dataset = "cifar10"
    c.data_dir = ml_collections.FieldReference(None, field_type=str)
    c.train_split = "train"
    c.eval_split = "test"
    c.cache_dir = "~/.cache/inception_jax"  # decoded in-memory datasets
    c.bad_records = "error"  # or "skip": count and skip undecodable records
    c.image_size = 32  # in-memory: the stored images' size; streaming: the crop
    c.resize_to = 0  # in-memory only: resize on the device to this model input
    # size (fine-tuning ImageNet weights on CIFAR); 0: off
    c.init_from = ""  # weights to start from when the workdir has no checkpoint:
    # a .pth/.safetensors state_dict or a save_pretrained dir
    c.pipeline = "auto"  # auto | in_memory | streaming (auto: streaming unless
    # the dataset is one of IN_MEMORY)
    c.pipeline_workers = 8  # streaming: decoding worker processes (0: in-process)
    c.synthetic_examples = 1024  # dataset="synthetic" only
    # input normalisation and augmentation (torchvision semantics)
    c.mean = (0.4914, 0.4822, 0.4465)
    c.std = (0.2023, 0.1994, 0.2010)
    c.crop_padding = 4
    c.random_flip = True
    # length
    c.batch_size = 128  # global, over all devices and hosts
    c.eval_batch_size = 100
    c.num_epochs = 50
    c.num_train_steps = -1  # -1: derive from num_epochs
    c.stop_at_step = -1  # stop early (with a checkpoint) after this step; resumable
    c.steps_per_call = 1  # in-memory data: k train steps in one compiled call (lax.scan);
    # fewer Python dispatches per step, the same params
    # the CPU runs k > 1 as single calls (its scan measured slower on real models);
    # True scans there too
    c.scan_on_cpu = False
    # optimisation
    c.optimizer = "adam"
    c.learning_rate = 1e-3
    c.momentum = 0.9  # sgd momentum / rmsprop momentum
    c.nesterov = False
    c.rmsprop_decay = 0.9
    c.rmsprop_eps = 1.0
    c.adam_eps = 1e-8
    c.weight_decay = 0.0  # L2 added to the gradient (decoupled for adamw)
    c.schedule = "step"
    c.step_size_epochs = 30.0  # step / exponential: decay every this many epochs
    c.gamma = 0.1  # step / exponential: decay factor
    c.warmup_epochs = 0.0
    c.label_smoothing = 0.0
    c.aux_loss_weight = 0.3
    c.grad_clip_norm = 0.0  # 0: off
    c.half_precision = False  # bfloat16 compute, float32 params and BN statistics
    c.seed = 0
    # running
    c.parallel = "shard_map"  # or "pmap"
    c.sync_batch_norm = True  # BatchNorm statistics and dropout masks of the global
    # batch: the same update on any device count. False:
    # per-device statistics (PyTorch DDP's default), faster,
    # and the update then depends on the device count
    # inception_jax.backends.cpu's hand-written gradients (and the host-malloc setting of
    # inception_jax/hostmem.py): "auto" = on exactly when JAX runs on the CPU; True, False
    c.cpu_kernels = ml_collections.FieldReference("auto", field_type=object)
    c.log_every_steps = 50
    c.checkpoint_every_steps = 0  # 0: only at epoch ends
    c.keep_checkpoints = 3
    # a non-finite training loss: "stop" (keep the last good checkpoint and stop) or
    # "rollback" (in-memory data: restore the last good checkpoint, replay with each
    # step's loss checked, skip the batches whose loss is not finite, go on), at most
    # max_rollbacks times
    c.on_nonfinite = "stop"
    c.max_rollbacks = 3
    c.compilation_cache_dir = "~/.cache/inception_jax/xla"  # "" disables
    # keep the traced train/eval programs (jax.export) in <compilation_cache_dir>-programs:
    # a restart with the same code and config skips tracing them
    c.cache_traced_programs = True
    return c


def input_size(config: ml_collections.ConfigDict) -> int:
    """The model's input size: ``resize_to`` when set, else ``image_size``."""
    return config.resize_to or config.image_size


def uses_streaming(config) -> bool:
    """Whether ``config`` streams its data from disk (``pipeline``, or for "auto": every
    dataset not in IN_MEMORY) rather than holding it in memory."""
    return config.pipeline == "streaming" or (config.pipeline == "auto" and config.dataset not in IN_MEMORY)


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError (one line) for a config that cannot run."""
    from inception_jax import models

    def bad(key, expected):
        raise ValueError(f"config.{key}={config[key]!r}: expected {expected}; fix it with --config.{key}=...")

    models.get_info(config.model)  # unknown model -> lists the names
    if config.optimizer not in OPTIMIZERS:
        bad("optimizer", f"one of {', '.join(OPTIMIZERS)}")
    if config.schedule not in SCHEDULES:
        bad("schedule", f"one of {', '.join(SCHEDULES)}")
    if not isinstance(config.dataset, str) or not config.dataset:
        bad(
            "dataset",
            f"a tfds dataset name ({', '.join(IN_MEMORY)} are held in memory; others, "
            "e.g. imagenet2012, stream from disk)",
        )
    if config.parallel not in PARALLEL:
        bad("parallel", f"one of {', '.join(PARALLEL)}")
    if config.pipeline not in ("auto", "in_memory", "streaming"):
        bad("pipeline", "'auto', 'in_memory' or 'streaming'")
    for key in ("sync_batch_norm", "cache_traced_programs", "scan_on_cpu"):
        if not isinstance(config[key], bool):
            bad(key, "True or False")
    if not isinstance(config.cpu_kernels, bool) and config.cpu_kernels != "auto":
        bad("cpu_kernels", "'auto', True or False")
    if config.bad_records not in ("error", "skip"):
        bad("bad_records", "'error' or 'skip'")
    if config.on_nonfinite not in ("stop", "rollback"):
        bad("on_nonfinite", "'stop' or 'rollback'")
    if config.on_nonfinite == "rollback" and uses_streaming(config):
        bad("on_nonfinite", "'stop' with a streaming dataset (rollback replays in-memory data only)")
    if not isinstance(config.max_rollbacks, int) or config.max_rollbacks < 0:
        bad("max_rollbacks", "a non-negative integer")
    for key in ("batch_size", "eval_batch_size", "image_size", "steps_per_call"):
        if not isinstance(config[key], int) or config[key] < 1:
            bad(key, "a positive integer")
    if config.steps_per_call > 1 and (uses_streaming(config) or config.parallel != "shard_map"):
        bad("steps_per_call", "1 with a streaming dataset or parallel='pmap' (k > 1 needs in-memory data)")
    if config.num_train_steps == -1 and not config.num_epochs > 0:
        bad("num_epochs", "> 0 (or set num_train_steps)")
    if config.learning_rate <= 0:
        bad("learning_rate", "> 0")
    if len(config.mean) != 3 or len(config.std) != 3 or min(config.std) <= 0:
        bad("std", "three positive numbers (and mean three numbers)")
    info = models.get_info(config.model)
    aux = config.model_kwargs.get("aux_logits", info.aux_default)
    min_size = (info.min_aux_input_size or info.min_input_size) if aux else info.min_input_size
    if not isinstance(config.resize_to, int) or config.resize_to < 0:
        bad("resize_to", "0 (off) or a positive integer")
    if config.resize_to and uses_streaming(config):
        bad("resize_to", "0 with a streaming dataset (set image_size, the crop size, instead)")
    key = "resize_to" if config.resize_to else "image_size"
    if config[key] < min_size:
        bad(key, f">= {min_size} for {config.model}" + (" with aux heads" if aux else ""))
    if config.init_from and not os.path.exists(os.path.expanduser(config.init_from)):
        bad("init_from", "an existing .pth/.safetensors file or a save_pretrained directory")
