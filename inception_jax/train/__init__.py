"""Training: the optimiser and schedule (``optim``), the per-device train and eval
steps (``steps``), running them on devices (``parallel``), the data adapters
(``inputs``), stop signals (``signals``) and ``train_and_evaluate(config, workdir)``
(``loop``), and how programs are compiled and started (``programs``: programs run
once, the CPU kernels, traced programs kept on disk). Everything is re-exported here."""

from inception_jax.train.inputs import (
    InMemoryData,
    StreamingData,
    epoch_permutation,
    evaluate,
    load_datasets,
    open_data,
)
from inception_jax.train.loop import (
    build_model,
    evaluate_workdir,
    init_from_pretrained,
    step_config,
    train_and_evaluate,
)
from inception_jax.train.optim import (
    make_optimizer,
    make_schedule,
)
from inception_jax.train.parallel import (
    Runner,
)
from inception_jax.train.programs import (
    init_variables,
    program_cache,
    run_once,
)
from inception_jax.train.signals import (
    StopRequest,
)
from inception_jax.train.steps import (
    AXIS,
    StepConfig,
    TrainState,
    abstract_train_state,
    combined_loss,
    create_train_state,
    cross_entropy,
    eval_step,
    prepare_images,
    train_step,
)

__all__ = [
    "AXIS",
    "InMemoryData",
    "Runner",
    "StepConfig",
    "StopRequest",
    "StreamingData",
    "TrainState",
    "abstract_train_state",
    "build_model",
    "combined_loss",
    "create_train_state",
    "cross_entropy",
    "epoch_permutation",
    "eval_step",
    "evaluate",
    "evaluate_workdir",
    "init_from_pretrained",
    "init_variables",
    "load_datasets",
    "make_optimizer",
    "make_schedule",
    "open_data",
    "prepare_images",
    "program_cache",
    "run_once",
    "step_config",
    "train_and_evaluate",
    "train_step",
]
