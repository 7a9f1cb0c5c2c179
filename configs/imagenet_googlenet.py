"""GoogLeNet on ImageNet (tfds imagenet2012), the torchvision reference recipe.

SGD momentum 0.9, lr 0.1 for batch 256 (linearly scaled), weight decay 1e-4,
step decay x0.1 every 30 epochs, 90 epochs, aux heads weighted 0.3, bfloat16.

Streams from disk (inception_jax/data/streaming.py: grain worker processes, random-resized
crop + flip; resize + center crop for eval). Prepare imagenet2012 from its manual
download first (python -m inception_jax.data.prepare --dataset imagenet2012 ...).
Not yet run end to end on ImageNet (no ImageNet or GPU was available).

    python train.py --config configs/imagenet_googlenet.py --workdir workdirs/imagenet_googlenet \
        --config.data_dir=~/tensorflow_datasets
"""

from inception_jax.config import base_config


def get_config():
    c = base_config()
    c.model = "googlenet"
    c.model_kwargs.aux_logits = True
    c.dataset = "imagenet2012"
    c.train_split, c.eval_split = "train", "validation"
    c.image_size = 224
    c.mean = (0.485, 0.456, 0.406)
    c.std = (0.229, 0.224, 0.225)
    c.batch_size = 256
    c.eval_batch_size = 256
    c.num_epochs = 90
    c.optimizer = "sgd"
    c.learning_rate = 0.1
    c.momentum = 0.9
    c.weight_decay = 1e-4
    c.schedule = "step"
    c.step_size_epochs = 30.0
    c.gamma = 0.1
    c.aux_loss_weight = 0.3
    c.half_precision = True
    c.log_every_steps = 100
    c.checkpoint_every_steps = 2000
    return c
