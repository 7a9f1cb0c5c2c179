"""Smoke test: synthetic data, inception_cifar at 16x16, a few dozen steps on CPU.

python train.py --config configs/smoke.py --workdir workdirs/smoke
"""

from inception_jax.config import base_config


def get_config():
    c = base_config()
    c.model = "inception_cifar"
    c.dataset = "synthetic"
    c.num_classes = 4
    c.synthetic_examples = 512
    c.image_size = 16
    c.batch_size = 32
    c.eval_batch_size = 64
    c.num_epochs = 3
    c.learning_rate = 3e-3
    c.schedule = "constant"
    c.log_every_steps = 8
    c.compilation_cache_dir = ""
    return c
