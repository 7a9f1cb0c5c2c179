"""Fine-tune ImageNet-pretrained GoogLeNet on CIFAR-10.

Starts from torchvision's GoogLeNet weights (``init_from``: its .pth, a .safetensors
file, or a directory written by ``inception_jax.weights.save_pretrained``); the
1000-class classifier and the two aux classifiers are replaced by fresh 10-class
heads, every other weight and BatchNorm statistic is loaded. CIFAR's 32x32 images
(random crop with 4 px padding + flip, at 32x32) are resized on the device to the
model's 224x224 input and normalised with ImageNet's mean/std, which
``transform_input=True`` turns into what torchvision's weights expect. SGD with
momentum 0.9, lr 0.01 with a cosine decay and 1 epoch of warm-up, 5 epochs.

    python -c "import torchvision; torchvision.models.googlenet(weights='IMAGENET1K_V1')"  # downloads it
    python train.py --config configs/finetune_cifar10.py --workdir workdirs/finetune_cifar10 \\
        --config.init_from=~/.cache/torch/hub/checkpoints/googlenet-1378be20.pth

With a CIFAR-10 copy that holds only the training split, hold out a slice:

    python train.py --config configs/finetune_cifar10.py --workdir workdirs/finetune_cifar10 \\
        --config.data_dir=~/tensorflow_datasets \\
        --config.train_split='train[:45000]' --config.eval_split='train[45000:]'

A smaller input (``--config.resize_to=96``) trains ~5x faster for a few points of
accuracy. The workdir's own checkpoints win over ``init_from`` when it resumes.
"""

from inception_jax.config import base_config


def get_config():
    c = base_config()
    c.model = "googlenet"
    c.model_kwargs.transform_input = True  # torchvision's pretrained GoogLeNet expects it
    c.model_kwargs.aux_logits = True
    c.init_from = "~/.cache/torch/hub/checkpoints/googlenet-1378be20.pth"
    c.dataset = "cifar10"
    c.num_classes = 10
    c.image_size = 32
    c.resize_to = 224
    c.mean = (0.485, 0.456, 0.406)  # ImageNet's, as the weights were trained with
    c.std = (0.229, 0.224, 0.225)
    c.crop_padding = 4
    c.random_flip = True
    c.optimizer = "sgd"
    c.learning_rate = 0.01
    c.momentum = 0.9
    c.weight_decay = 5e-4
    c.schedule = "cosine"
    c.warmup_epochs = 1.0
    c.num_epochs = 5
    c.batch_size = 128
    c.eval_batch_size = 200
    c.half_precision = True  # bfloat16 compute on accelerators
    c.log_every_steps = 50
    return c
