"""Training-step throughput: inception_jax's real train step vs the PyTorch reference,
same device, one run.

    python benchmarks/throughput.py --model inception_cifar --batch-size 128
    python benchmarks/throughput.py --model googlenet,inception_v3 --batch-size 128 --json out.json

JAX runs ``inception_jax.training.train_on_batch`` (the step train.py uses) through
the same shard_map runner, on a fixed synthetic batch already on the device.
PyTorch runs the reference model (torchvision / timm / Cadene, or the design
doc's CIFAR model) with the same loss (main + 0.3 x aux) and SGD momentum; on GPU
with bfloat16 autocast, channels_last and cudnn.benchmark, eagerly and under
torch.compile; on CPU in float32, eagerly. Warm-up steps are excluded; each step
is timed to completion (``block_until_ready`` / ``cuda.synchronize``) and the
median is reported. Prints a table; ``--json`` writes the records.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))  # torch reference builders


def _versions():
    import jax
    out = {"jax": jax.__version__}
    try:
        import torch
        out["torch"] = torch.__version__
    except ImportError:
        pass
    return out


def bench_jax(name, batch, size, steps, warmup, half):
    import jax
    import optax

    from inception_jax import config as config_lib
    from inception_jax import models, training
    from inception_jax.models.stats import count_macs

    c = config_lib.base_config()
    c.model, c.image_size, c.optimizer, c.learning_rate = name, size, "sgd", 0.01
    c.half_precision = half
    info = models.get_info(name)
    num_classes = info.num_classes
    model = training.build_model(c, num_classes)
    tx = training.make_optimizer(c, optax.constant_schedule(c.learning_rate))
    state = training.create_train_state(model, jax.random.PRNGKey(0), size, tx)
    runner = training.Runner(model, training.step_config(c, streaming=True), "shard_map",
                             streaming=True)
    state = runner.put_replicated(state)
    rng = np.random.RandomState(0)
    images = runner.put_local_batch(rng.randint(0, 256, (batch, size, size, 3)).astype(np.uint8))
    labels = runner.put_local_batch(rng.randint(0, num_classes, batch).astype(np.int32))
    weights = runner.put_local_batch(np.ones(batch, np.float32))
    key = runner.put_replicated(jax.random.PRNGKey(1))
    t0 = time.perf_counter()
    state, m = runner.train(state, images, labels, weights, key)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        state, m = runner.train(state, images, labels, weights, key)
        jax.block_until_ready(m)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    step = statistics.median(times)
    macs = count_macs(models.create(name), size)
    return {"framework": "inception_jax", "step_ms": 1e3 * step, "img_per_s": batch / step,
            "compile_s": compile_s, "device": str(jax.devices()[0].device_kind),
            "dtype": "bfloat16" if half else "float32", "train_gflop_per_img": 6 * macs / 1e9}


def _torch_model(name):
    import torch_refs
    if name == "inception_cifar":
        from design_doc_torch import InceptionCIFAR
        return InceptionCIFAR()
    if name == "googlenet_paper":
        from design_doc_torch import GoogLeNet
        return GoogLeNet()
    kw = {"aux_logits": True} if name in ("googlenet", "inception_v3") else {}
    return torch_refs.build(name, **kw)


def bench_torch(name, batch, size, steps, warmup, compile_model):
    import torch

    cuda = torch.cuda.is_available()
    dev = torch.device("cuda" if cuda else "cpu")
    model = _torch_model(name).to(dev).train()
    if cuda:
        torch.backends.cudnn.benchmark = True
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    crit = torch.nn.CrossEntropyLoss()
    x = torch.randn(batch, 3, size, size, device=dev)
    if cuda:
        x = x.to(memory_format=torch.channels_last)
    num_classes = 10 if name == "inception_cifar" else 1000
    y = torch.randint(0, num_classes, (batch,), device=dev)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            out = model(x)
            outs = tuple(out) if isinstance(out, tuple) else (out,)
            loss = crit(outs[0], y)
            for aux in outs[1:]:
                if aux is not None:
                    loss = loss + 0.3 * crit(aux, y)
        loss.backward()
        opt.step()
        return loss

    fn = torch.compile(step) if compile_model else step
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    t0 = time.perf_counter()
    fn()
    sync()
    compile_s = time.perf_counter() - t0
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        fn()
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    s = statistics.median(times)
    return {"framework": "torch-compile" if compile_model else "torch", "step_ms": 1e3 * s,
            "img_per_s": batch / s, "compile_s": compile_s,
            "device": torch.cuda.get_device_name() if cuda else "cpu",
            "dtype": "bfloat16" if cuda else "float32"}


def main(argv=None):
    from inception_jax import models

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="inception_cifar", help="comma-separated registry names")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--image-size", type=int, default=0, help="default: the model's")
    p.add_argument("--steps", type=int, default=0, help="timed steps (default 30 on GPU, 10 on CPU)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--frameworks", default="inception_jax,torch,torch-compile")
    p.add_argument("--peak-tflops", type=float, default=0.0,
                   help="device peak for model FLOP utilisation (e.g. 989 for H100/H200 bf16 dense)")
    p.add_argument("--json", default="", help="write the records here")
    args = p.parse_args(argv)

    import jax
    on_gpu = jax.devices()[0].platform == "gpu"
    steps = args.steps or (30 if on_gpu else 10)
    frameworks = args.frameworks.split(",")
    records = []
    for name in args.model.split(","):
        info = models.get_info(name)
        size = args.image_size or info.default_input_size
        common = {"model": name, "batch_size": args.batch_size, "image_size": size, **_versions(),
                  "date": time.strftime("%Y-%m-%d")}
        gflop = None
        if "inception_jax" in frameworks:
            r = bench_jax(name, args.batch_size, size, steps, args.warmup, half=on_gpu)
            gflop = r["train_gflop_per_img"]
            records.append({**common, **r})
        for fw in ("torch", "torch-compile"):
            if fw not in frameworks or (fw == "torch-compile" and not on_gpu):
                continue
            try:
                records.append({**common, **bench_torch(name, args.batch_size, size, steps,
                                                        args.warmup, fw == "torch-compile")})
            except Exception as e:  # a missing reference package should not hide the others
                print(f"{fw} {name}: skipped ({type(e).__name__}: {e})", file=sys.stderr)
        for r in records:
            if r["model"] == name and gflop:
                r["achieved_tflops"] = r["img_per_s"] * gflop / 1e3
                if args.peak_tflops:
                    r["mfu"] = r["achieved_tflops"] / args.peak_tflops
    print(f"{'framework':<15}{'model':<20}{'batch':>6}{'size':>6}{'img/s':>11}{'step ms':>9}"
          f"{'compile s':>10}{'TFLOP/s':>9}  device")
    for r in records:
        print(f"{r['framework']:<15}{r['model']:<20}{r['batch_size']:>6}{r['image_size']:>6}"
              f"{r['img_per_s']:>11,.0f}{r['step_ms']:>9.1f}{r['compile_s']:>10.1f}"
              f"{r.get('achieved_tflops', float('nan')):>9.2f}  {r['device']}")
    for name in args.model.split(","):
        jx = [r for r in records if r["model"] == name and r["framework"] == "inception_jax"]
        best_torch = max((r["img_per_s"] for r in records
                          if r["model"] == name and r["framework"] != "inception_jax"), default=None)
        if jx and best_torch:
            print(f"{name}: inception_jax / best PyTorch = {jx[0]['img_per_s'] / best_torch:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)


if __name__ == "__main__":
    main()
