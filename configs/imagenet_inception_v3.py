"""Inception v3 on ImageNet (tfds imagenet2012), the paper's recipe (Szegedy et al. 2016).

RMSProp (decay 0.9, epsilon 1.0), lr 0.045 decayed x0.94 every 2 epochs, label
smoothing 0.1, gradient clipping at 2.0, the aux head weighted 0.3 (the paper
uses 0.4; torchvision's training reference, 0.4 too; 0.3 is this project's
convention for all aux heads, override with --config.aux_loss_weight=0.4), 299x299
inputs, batch 256.

Streams from disk (inception_jax/data/streaming.py: grain worker processes, random-resized
crop + flip; resize + center crop for eval). Prepare imagenet2012 from its manual
download first (python -m inception_jax.data.prepare --dataset imagenet2012 ...).
Not yet run end to end on ImageNet (no ImageNet or GPU was available).

    python train.py --config configs/imagenet_inception_v3.py --workdir workdirs/imagenet_v3 \
        --config.data_dir=~/tensorflow_datasets
"""

from inception_jax.config import base_config


def get_config():
    c = base_config()
    c.model = "inception_v3"
    c.model_kwargs.aux_logits = True
    c.dataset = "imagenet2012"
    c.train_split, c.eval_split = "train", "validation"
    c.image_size = 299
    c.mean = (0.5, 0.5, 0.5)
    c.std = (0.5, 0.5, 0.5)
    c.batch_size = 256
    c.eval_batch_size = 256
    c.num_epochs = 100
    c.optimizer = "rmsprop"
    c.rmsprop_decay = 0.9
    c.rmsprop_eps = 1.0
    c.momentum = 0.9
    c.learning_rate = 0.045  # the paper's rate; rescale if you change batch_size
    c.schedule = "exponential"
    c.step_size_epochs = 2.0
    c.gamma = 0.94
    c.label_smoothing = 0.1
    c.grad_clip_norm = 2.0
    c.aux_loss_weight = 0.3
    c.half_precision = True
    c.log_every_steps = 100
    c.checkpoint_every_steps = 2000
    return c
