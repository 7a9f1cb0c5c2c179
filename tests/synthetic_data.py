"""A small, deterministic tfds ``cifar10`` for the tests that need CIFAR-shaped records
but not CIFAR's accuracy, so that they run on a clone with no data beside it.

It has tfds cifar10's features (``id``, ``image`` uint8 32x32x3, ``label`` of the 10
CIFAR classes; split ``train``), stored as the real copy in ../shared/data/tfds is:
ArrayRecord files of JPEGs. tfds writes it without TensorFlow because the images are
handed over already encoded (as ``inception_jax.data.imagenet_like`` does).

The images are drawn, not random noise: a two-colour gradient background, one
anti-aliased object with a shading and a texture, mild pixel noise. The object's shape
and colour depend on the label, so a model can learn them; position, size, tints and
angles are random. Upscaled to photo sizes they have edges, gradients and texture for
the resize and crop comparisons against torchvision.
"""

from __future__ import annotations

import io
import os

import numpy as np

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SIZE = 32
QUALITY = 95
# one colour per class (RGB); the shape is label % 5, so colour and shape together tell
# all ten apart
PALETTE = np.array(
    [
        (220, 40, 40),
        (40, 160, 60),
        (40, 70, 210),
        (230, 200, 40),
        (160, 60, 200),
        (40, 190, 200),
        (240, 130, 30),
        (120, 80, 40),
        (230, 230, 230),
        (30, 30, 30),
    ],
    np.float32,
)


def draw(rng: np.random.Generator, label: int) -> np.ndarray:
    """One 32x32x3 uint8 image of class ``label``."""
    yy, xx = (np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5) / SIZE
    # background: a gradient between two random colours along a random direction
    angle = rng.uniform(0, 2 * np.pi)
    t = np.clip(0.5 + np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5), 0, 1)[..., None]
    low, high = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    image = low + t * (high - low)

    # the object, its signed distance from the edge (negative inside); the mask is
    # one pixel of soft edge, as a camera's would be, so resizing sees no aliasing
    cy, cx = rng.uniform(0.35, 0.65, 2)
    r = rng.uniform(0.18, 0.32)
    dy, dx = yy - cy, xx - cx
    dist = np.hypot(dy, dx)
    kind = label % 5
    if kind == 0:  # disk
        edge = dist - r
    elif kind == 1:  # square, turned by a random angle
        a = rng.uniform(0, np.pi / 2)
        u, v = np.cos(a) * dx + np.sin(a) * dy, -np.sin(a) * dx + np.cos(a) * dy
        edge = np.maximum(np.abs(u), np.abs(v)) - 0.85 * r
    elif kind == 2:  # ring
        edge = np.abs(dist - 0.7 * r) - 0.3 * r
    elif kind == 3:  # triangle, apex up
        edge = np.maximum(dy - 0.8 * r, np.abs(dx) * 1.7 - dy * 0.85 - 0.8 * r)
    else:  # horizontal bar
        edge = np.maximum(np.abs(dx) - 1.2 * r, np.abs(dy) - 0.45 * r)
    mask = np.clip(0.5 - edge * SIZE, 0, 1)[..., None]
    colour = PALETTE[label] + rng.normal(0, 18, 3)
    shading = 1.0 + 0.35 * ((cx - xx) + (cy - yy))[..., None]  # lit from the top left
    image = image * (1 - mask) + colour * shading * mask

    # texture over everything (a low-frequency wave) and sensor-like noise
    f = rng.uniform(1.5, 4.0, 2)
    wave = np.sin(2 * np.pi * (f[0] * xx + f[1] * yy) + rng.uniform(0, 2 * np.pi))
    image = image + 12.0 * wave[..., None] + rng.normal(0, 5.0, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _jpeg(image: np.ndarray) -> io.BytesIO:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=QUALITY)
    buf.seek(0)
    return buf


def labels(num_examples: int, seed: int = 0) -> np.ndarray:
    """Each run of ten consecutive records holds every class once (shuffled), so every
    slice the tests take is close to balanced."""
    rng = np.random.default_rng([seed, 1])
    blocks = [rng.permutation(10) for _ in range((num_examples + 9) // 10)]
    return np.concatenate(blocks)[:num_examples].astype(np.int64)


def write_cifar10(data_dir: str, num_examples: int = 512, seed: int = 0) -> str:
    """Writes ``cifar10`` (split ``train`` of ``num_examples`` records) into the tfds
    ``data_dir`` and returns ``data_dir``. The same arguments give the same records."""
    import tensorflow_datasets as tfds

    base = tfds.builder_cls("cifar10")
    ys = labels(num_examples, seed)

    class SyntheticCifar10(base, skip_registration=True):
        name = "cifar10"
        # a one-part module name: tfds then skips locating the builder's source file in
        # the package, which needs importlib_resources, a module tfds does not install
        __module__ = "synthetic_cifar10"

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                description=f"synthetic CIFAR-10 look-alike for tests: {num_examples} drawn images",
                features=tfds.features.FeaturesDict(
                    {
                        "id": tfds.features.Text(),
                        "image": tfds.features.Image(shape=(SIZE, SIZE, 3), encoding_format="jpeg"),
                        "label": tfds.features.ClassLabel(names=list(CLASS_NAMES)),
                    }
                ),
                supervised_keys=("image", "label"),
                # record i is example i (tfds otherwise orders records by a hash of the key)
                disable_shuffling=True,
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):  # noqa: D401  (tfds's signature is free)
            for i in range(num_examples):
                # one generator per record: a record does not depend on how many came before
                rng = np.random.default_rng([seed, 0, i])
                label = int(ys[i])
                yield i, {"id": f"train_{i:05d}", "image": _jpeg(draw(rng, label)), "label": label}

    builder = SyntheticCifar10(data_dir=os.path.expanduser(data_dir), file_format="array_record")
    builder.download_and_prepare()
    return data_dir
