"""``python tests/fid_sharding_check.py OUT.npz``: FID activations of 10 fixed images
with random FID weights (dims 2048 at 75 px), written to OUT.npz as ``acts``; with
more than one local device also ``one_device`` (the same, on the first device alone);
and ``mu``, ``sigma`` from ``fid.streaming_statistics`` (merged over the processes).
Run it with fake CPU devices or as one of several jax.distributed processes."""

import sys

import jax
import numpy as np

from inception_jax import fid

if __name__ == "__main__":
    if len(sys.argv) > 2:  # process index, process count, coordinator port
        jax.distributed.initialize(f"localhost:{sys.argv[4]}", int(sys.argv[3]), int(sys.argv[2]))
    rng = np.random.RandomState(0)
    images = [rng.randint(0, 256, (40 + i, 50, 3)).astype(np.uint8) for i in range(10)]
    net = fid.FIDNetwork.random(seed=0)
    kw = dict(dims=2048, batch_size=4, size=75)
    out = {"acts": fid.activations(net, images, **kw), "devices": len(jax.local_devices())}
    out["mu"], out["sigma"] = fid.streaming_statistics(net, images, **kw)
    if len(jax.local_devices()) > 1:
        out["one_device"] = fid.activations(net, images, devices=jax.local_devices()[:1], **kw)
    np.savez(sys.argv[1], **out)
