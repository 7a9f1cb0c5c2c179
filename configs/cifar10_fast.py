"""CIFAR-10 to 94% fast (target: <= 60 s on one H200, data loading and
compilation included). NOT YET MEASURED on a GPU.

googlenet_cifar (the torchvision GoogLeNet body with a 3x3 stem for 32x32 inputs,
5.6M parameters, 1.45 GMACs per image) without aux heads, trained like a fast
ResNet recipe: bfloat16 compute, batch 512, SGD + Nesterov momentum 0.9, a
one-epoch linear warm-up to lr 0.4 then cosine decay to 0 over 18 epochs, weight
decay 5e-4, label smoothing 0.1, random crop (4 px padding) + flip on the device.
Each choice and what it bought is to be recorded in docs/benchmarks.md once
measured.

    python benchmarks/time_to_accuracy.py --config configs/cifar10_fast.py \\
        --data_dir ~/tensorflow_datasets --target 0.94
    python train.py --config configs/cifar10_fast.py --workdir workdirs/cifar10_fast \\
        --config.data_dir=~/tensorflow_datasets \\
        --config.train_split='train[:45000]' --config.eval_split='train[45000:]'
"""

from inception_jax.config import base_config


def get_config():
    c = base_config()
    c.model = "googlenet_cifar"
    c.model_kwargs.aux_logits = False  # aux heads cost time and do not help at this length
    c.dataset = "cifar10"
    c.num_classes = 10
    c.batch_size = 512
    c.eval_batch_size = 1000
    c.num_epochs = 18
    c.optimizer = "sgd"
    c.nesterov = True
    c.momentum = 0.9
    c.learning_rate = 0.4
    c.weight_decay = 5e-4
    c.schedule = "cosine"
    c.warmup_epochs = 1.0
    c.label_smoothing = 0.1
    c.half_precision = True
    c.log_every_steps = 88
    return c
