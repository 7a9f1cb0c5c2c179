"""The reference PyTorch CIFAR-10 recipe, exactly.

inception_cifar; Adam lr 1e-3; batch 128; 50 epochs; StepLR(step_size=30 epochs,
gamma=0.1); aux loss weight 0.3 (used only by models with aux heads);
RandomCrop(32, padding=4) + horizontal flip + Normalize((0.4914, 0.4822, 0.4465),
(0.2023, 0.1994, 0.2010)); eval batch 100.

    python train.py --config configs/cifar10.py --workdir workdirs/cifar10

With a CIFAR-10 copy that holds only the training split, hold out a slice:

    python train.py --config configs/cifar10.py --workdir workdirs/cifar10 \
        --config.data_dir=~/tensorflow_datasets \
        --config.train_split='train[:45000]' --config.eval_split='train[45000:]'
"""

from inception_jax.config import base_config


def get_config():
    c = base_config()
    c.model = "inception_cifar"
    c.dataset = "cifar10"
    c.optimizer = "adam"
    c.learning_rate = 1e-3
    c.batch_size = 128
    c.eval_batch_size = 100
    c.num_epochs = 50
    c.schedule = "step"
    c.step_size_epochs = 30.0
    c.gamma = 0.1
    c.aux_loss_weight = 0.3
    c.crop_padding = 4
    c.random_flip = True
    c.mean = (0.4914, 0.4822, 0.4465)
    c.std = (0.2023, 0.1994, 0.2010)
    return c
