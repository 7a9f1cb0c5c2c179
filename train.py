"""Training entry point: ``python train.py --config configs/X.py --workdir DIR``.

Not implemented yet (see the training issue); the models are usable through
``import inception_jax``.
"""

import sys

if __name__ == "__main__":
    sys.exit("train.py: training is not implemented yet; see README.md for what works now")
