"""Training-step throughput: inception_jax's real train step vs the PyTorch reference,
same device, one run.

    python benchmarks/throughput.py --model inception_cifar --batch-size 128
    python benchmarks/throughput.py --model googlenet,inception_v3 --batch-size 128 --json out.json

JAX runs ``inception_jax.train.train_step`` (the step train.py uses) through
the same shard_map runner, on a fixed synthetic batch already on the device.
PyTorch runs the reference model (torchvision / timm / Cadene, or the design
doc's CIFAR model) with the same loss (main + 0.3 x aux) and SGD momentum; on GPU
with bfloat16 autocast, channels_last and cudnn.benchmark, eagerly and under
torch.compile; on CPU in float32, eagerly. Warm-up steps are excluded; each step
is timed to completion (``block_until_ready`` / ``cuda.synchronize``) and the
median is reported. Prints a table; ``--json`` writes the records.

Each measurement runs in its own Python process: JAX set up as train.py sets it
up (``inception_jax.hostmem.reuse_freed_memory``, which matters on CPU), PyTorch
with its defaults unless ``--torch-malloc tuned`` gives it the same malloc
setting. The ``host_malloc`` field of each record says which it had.
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


def _versions(framework):
    if framework == "inception_jax":
        import jax

        return {"jax": jax.__version__}
    import torch

    return {"torch": torch.__version__}


def jax_train_case(name, batch, size, half=False, weight_decay=0.0):
    """What the JAX measurements run: the trainer's ``Runner`` (shard_map) for ``name``
    with SGD (momentum 0.9, lr 0.01, ``weight_decay``), its initial state on the
    devices, and one fixed synthetic batch there: ``(runner, state, (images, labels,
    weights, example_ids, key))``, the arguments ``runner.train`` takes after the state."""
    import jax
    import optax

    from inception_jax import config as config_lib
    from inception_jax import models
    from inception_jax import train as training

    c = config_lib.base_config()
    c.model, c.image_size, c.optimizer, c.learning_rate = name, size, "sgd", 0.01
    c.half_precision, c.weight_decay = half, weight_decay
    num_classes = models.get_info(name).num_classes
    model = training.build_model(c, num_classes)
    tx = training.make_optimizer(c, optax.constant_schedule(c.learning_rate))
    state = training.create_train_state(model, jax.random.PRNGKey(0), size, tx)
    runner = training.Runner(model, training.step_config(c, streaming=True), "shard_map")
    rng = np.random.RandomState(0)
    args = (
        runner.put_local_batch(rng.randint(0, 256, (batch, size, size, 3)).astype(np.uint8)),
        runner.put_local_batch(rng.randint(0, num_classes, batch).astype(np.int32)),
        runner.put_local_batch(np.ones(batch, np.float32)),
        runner.put_local_batch(np.arange(batch, dtype=np.int32)),
        runner.put_replicated(jax.random.PRNGKey(1)),
    )
    return runner, runner.put_replicated(state), args


def bench_jax(name, batch, size, steps, warmup, half):
    import jax

    from inception_jax import models
    from inception_jax.models.stats import count_macs

    runner, state, (images, labels, weights, ids, key) = jax_train_case(name, batch, size, half)
    t0 = time.perf_counter()
    state, m = runner.train(state, images, labels, weights, ids, key)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        state, m = runner.train(state, images, labels, weights, ids, key)
        jax.block_until_ready(m)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    step = statistics.median(times)
    macs = count_macs(models.create(name), size)
    return {
        "framework": "inception_jax",
        "step_ms": 1e3 * step,
        "img_per_s": batch / step,
        "compile_s": compile_s,
        "device": str(jax.devices()[0].device_kind),
        "dtype": "bfloat16" if half else "float32",
        "train_gflop_per_img": 6 * macs / 1e9,
    }


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
    return {
        "framework": "torch-compile" if compile_model else "torch",
        "step_ms": 1e3 * s,
        "img_per_s": batch / s,
        "compile_s": compile_s,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "dtype": "bfloat16" if cuda else "float32",
    }


def _run_one(args, name, size, framework):
    """One (model, framework) measurement in a fresh Python process, so that each
    framework runs as its users run it: JAX the way train.py sets the process up
    (``hostmem.reuse_freed_memory``), PyTorch with its defaults (or the same malloc
    setting with ``--torch-malloc tuned``), and neither sees the other's threads,
    caches or GPU memory."""
    import subprocess

    spec = {
        "model": name,
        "batch_size": args.batch_size,
        "image_size": size,
        "steps": args.steps,
        "warmup": args.warmup,
        "framework": framework,
        "torch_malloc": args.torch_malloc,
    }
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--one", json.dumps(spec)],
        stdout=subprocess.PIPE,
        text=True,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        print(
            f"{framework} {name}: failed (exit code {proc.returncode}); its error is above", file=sys.stderr
        )
        return None
    return json.loads(lines[-1])


def _one(spec):
    """The child process of :func:`_run_one`: measures and prints one JSON record."""
    framework = spec["framework"]
    tuned = framework == "inception_jax" or spec["torch_malloc"] == "tuned"
    malloc = "default"
    if tuned:
        from inception_jax import hostmem

        malloc = "tuned" if hostmem.reuse_freed_memory() else "default"
    name, batch, size, warmup = spec["model"], spec["batch_size"], spec["image_size"], spec["warmup"]
    if framework == "inception_jax":
        import jax

        on_gpu = jax.devices()[0].platform == "gpu"
        r = bench_jax(name, batch, size, spec["steps"] or (30 if on_gpu else 10), warmup, half=on_gpu)
    else:
        import torch

        on_gpu = torch.cuda.is_available()
        if framework == "torch-compile" and not on_gpu:
            print(json.dumps({"skipped": "torch.compile is measured on GPU only"}))
            return
        r = bench_torch(
            name, batch, size, spec["steps"] or (30 if on_gpu else 10), warmup, framework == "torch-compile"
        )
    print(
        json.dumps(
            {
                "model": name,
                "batch_size": batch,
                "image_size": size,
                **_versions(framework),
                "date": time.strftime("%Y-%m-%d"),
                "host_malloc": malloc,
                **r,
            }
        )
    )


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="inception_cifar", help="comma-separated registry names")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--image-size", type=int, default=0, help="default: the model's")
    p.add_argument("--steps", type=int, default=0, help="timed steps (default 30 on GPU, 10 on CPU)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--frameworks", default="inception_jax,torch,torch-compile")
    p.add_argument(
        "--torch-malloc",
        choices=["default", "tuned"],
        default="default",
        help="tuned: give PyTorch's process the malloc setting train.py gives JAX's "
        "(inception_jax/hostmem.py)",
    )
    p.add_argument(
        "--peak-tflops",
        type=float,
        default=0.0,
        help="device peak for model FLOP utilisation (e.g. 989 for H100/H200 bf16 dense)",
    )
    p.add_argument("--json", default="", help="write the records here (rewritten after each measurement)")
    return p


def _add_utilisation(model_records, peak_tflops):
    """TFLOP/s (and MFU) for one model's records, from the FLOPs its JAX record counted."""
    gflop = next((r["train_gflop_per_img"] for r in model_records if r.get("train_gflop_per_img")), None)
    for r in model_records:
        if gflop:
            r["achieved_tflops"] = r["img_per_s"] * gflop / 1e3
            if peak_tflops:
                r["mfu"] = r["achieved_tflops"] / peak_tflops


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--one"]:
        return _one(json.loads(argv[1]))
    from inception_jax import models

    p = build_parser()
    args = p.parse_args(argv)

    frameworks = args.frameworks.split(",")
    unknown = set(frameworks) - {"inception_jax", "torch", "torch-compile"}
    if unknown:
        p.error(f"--frameworks: unknown {sorted(unknown)}; expected inception_jax, torch, torch-compile")
    names = args.model.split(",")
    sizes = {}
    for name in names:
        try:
            info = models.get_info(name)
        except (KeyError, ValueError) as e:
            p.error(f"--model {name}: {e}")
        sizes[name] = args.image_size or info.default_input_size
    records = []
    try:
        for name in names:
            for fw in frameworks:
                r = _run_one(args, name, sizes[name], fw)
                if r is None or "skipped" in r:
                    continue
                records.append(r)
                _add_utilisation([x for x in records if x["model"] == name], args.peak_tflops)
                if args.json:  # after each measurement, so that an interrupted run keeps it
                    with open(args.json, "w") as f:
                        json.dump(records, f, indent=1)
    except KeyboardInterrupt:
        print("interrupted: the table and --json hold the measurements that finished", file=sys.stderr)
    print(
        f"{'framework':<15}{'model':<20}{'batch':>6}{'size':>6}{'img/s':>11}{'step ms':>9}"
        f"{'compile s':>10}{'TFLOP/s':>9}  {'malloc':<8}device"
    )
    for r in records:
        print(
            f"{r['framework']:<15}{r['model']:<20}{r['batch_size']:>6}{r['image_size']:>6}"
            f"{r['img_per_s']:>11,.0f}{r['step_ms']:>9.1f}{r['compile_s']:>10.1f}"
            f"{r.get('achieved_tflops', float('nan')):>9.2f}  {r['host_malloc']:<8}{r['device']}"
        )
    for name in names:
        jx = [r for r in records if r["model"] == name and r["framework"] == "inception_jax"]
        best_torch = max(
            (r["img_per_s"] for r in records if r["model"] == name and r["framework"] != "inception_jax"),
            default=None,
        )
        if jx and best_torch:
            print(f"{name}: inception_jax / best PyTorch = {jx[0]['img_per_s'] / best_torch:.2f}x")


if __name__ == "__main__":
    main()
