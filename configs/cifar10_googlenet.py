"""GoogLeNet on CIFAR-10 (``googlenet_cifar`` with aux heads), SGD + Nesterov, cosine.

A stronger recipe than the reference recipe's: SGD momentum 0.9 with Nesterov, lr 0.1
for batch 128 with 1 epoch of linear warm-up then cosine decay over 100 epochs,
weight decay 5e-4, label smoothing 0.1, aux heads weighted 0.3, bfloat16 compute
on accelerators. (Accuracy not yet measured: see docs/training.md.)

    python train.py --config configs/cifar10_googlenet.py --workdir workdirs/cifar10_googlenet
"""

from inception_jax.config import base_config


def get_config():
    c = base_config()
    c.model = "googlenet_cifar"
    c.model_kwargs.aux_logits = True
    c.dataset = "cifar10"
    c.optimizer = "sgd"
    c.learning_rate = 0.1
    c.momentum = 0.9
    c.nesterov = True
    c.weight_decay = 5e-4
    c.schedule = "cosine"
    c.warmup_epochs = 1.0
    c.label_smoothing = 0.1
    c.num_epochs = 100
    c.batch_size = 128
    c.half_precision = True
    return c
