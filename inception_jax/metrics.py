"""What the user sees: a progress line, the per-epoch line in the reference recipe's format,
metrics as JSON lines, TensorBoard event files (tensorboardX, no TensorFlow) and a
PNG of the curves (matplotlib) at the end."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Dict, List, Optional

# ----------------------------------------------------------------------------
# TensorBoard event files and the curves plot
# ----------------------------------------------------------------------------


class EventWriter:
    """Scalars for TensorBoard, written by tensorboardX's SummaryWriter.

    tensorboardX imports PyTorch (and boto3) when they are installed: 1.5-4 s. So
    nothing is imported before the first write: that starts a background thread which
    imports it and opens the writer while training goes on, and writes are queued
    until the writer is open. An error opening it is raised by the next write (or
    ``close``)."""

    def __init__(self, logdir: str):
        self._logdir = logdir
        self._writer = None
        self._error: Optional[BaseException] = None
        self._pending: List[tuple] = []
        self._thread: Optional[threading.Thread] = None

    def _open(self) -> None:
        try:
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(self._logdir, flush_secs=10)
        except BaseException as e:  # noqa: BLE001 (raised again by the next write)
            self._error = e

    def _ready(self, wait: bool) -> bool:
        if self._thread is None:
            self._thread = threading.Thread(target=self._open, name="tensorboard-writer", daemon=True)
            self._thread.start()
        if wait:
            self._thread.join()
        if self._thread.is_alive():
            return False
        if self._error is not None:
            raise self._error
        for step, tag, value in self._pending:
            self._writer.add_scalar(tag, value, step)
        self._pending.clear()
        return True

    def scalars(self, step: int, values: Dict[str, float]) -> None:
        self._pending.extend((step, tag, float(value)) for tag, value in values.items())
        self._ready(wait=False)

    def close(self) -> None:
        if self._thread is not None and self._ready(wait=True):
            self._writer.close()


# (record key, label) per panel; accuracies are plotted in percent
_PANELS = (
    ("loss", (("train_loss", "train"), ("eval_loss", "eval"))),
    ("accuracy (%)", (("train_accuracy", "train"), ("eval_accuracy", "eval"))),
    ("learning rate", (("learning_rate", "learning rate"),)),
)


def plot_curves(history: List[dict], path: str) -> None:
    """Train and eval loss, train and eval accuracy and the learning rate per epoch
    (the epoch records of metrics.jsonl), as a PNG with axes and legends."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or state
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(13, 3.8), layout="constrained")
    axes = fig.subplots(1, len(_PANELS))
    for ax, (title, series) in zip(axes, _PANELS):
        for key, label in series:
            points = [
                (r["epoch"], r[key] * (100 if "accuracy" in key else 1))
                for r in history
                if r.get(key) is not None and r[key] == r[key]
            ]
            if points:
                ax.plot(*zip(*points), marker="o", markersize=3, label=label)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.savefig(path, dpi=100)


# ----------------------------------------------------------------------------
# The logger train_and_evaluate uses
# ----------------------------------------------------------------------------


def _fmt_time(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class MetricsLogger:
    """Progress and epoch lines on stdout; metrics.jsonl, TensorBoard events and
    curves.png in the workdir (``write_files``: process 0 only). A failing write
    (full disk) is reported once and the run goes on; checkpoints decide whether
    it can continue."""

    def __init__(
        self,
        workdir: str,
        total_steps: int,
        batch_size: int,
        resumed: bool = False,
        stream=None,
        write_files: bool = True,
        quiet: bool = False,
    ):
        self.workdir = workdir
        self.total_steps = total_steps
        self.batch_size = batch_size
        self.stream = stream or sys.stdout
        self.quiet = quiet
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
        self.history: List[dict] = []
        self.write_files = write_files
        if resumed and write_files and os.path.exists(self.jsonl_path):
            with open(self.jsonl_path) as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut by a kill
                    if rec.get("kind") == "epoch":
                        self.history.append(rec)
        self._jsonl = open(self.jsonl_path, "a") if write_files else None
        self.events = EventWriter(os.path.join(workdir, "tensorboard")) if write_files else None
        self.t_start = time.time()
        self._first_step: Optional[int] = None
        self._progress_open = False

    def _files(self, fn) -> None:
        if not self.write_files:
            return
        try:
            fn()
        except OSError as e:
            self.write_files = False
            self.line(
                f"warning: could not write metrics in {self.workdir!r} ({e}); "
                "metrics files stop here, training goes on"
            )

    def _write(self, record: dict) -> None:
        def write():
            self._jsonl.write(json.dumps(record) + "\n")
            self._jsonl.flush()

        self._files(write)

    def line(self, text: str) -> None:
        if self.quiet:
            return
        if self._progress_open:
            self.stream.write("\n")
            self._progress_open = False
        print(text, file=self.stream, flush=True)

    def progress(self, step: int, loss: float, images_per_s: float) -> None:
        if self._first_step is None:
            self._first_step = step
            self._t_first = time.time()
        done = step / max(self.total_steps, 1)
        bar = "#" * int(24 * done) + "-" * (24 - int(24 * done))
        rate_steps = (step - self._first_step) / max(time.time() - self._t_first, 1e-9)
        eta = (self.total_steps - step) / rate_steps if rate_steps > 0 else float("nan")
        eta_s = _fmt_time(eta) if eta == eta else "?"
        text = f"[{bar}] step {step}/{self.total_steps} loss {loss:.4f} {images_per_s:,.0f} img/s ETA {eta_s}"
        if self.quiet:
            pass
        elif self.tty:
            self.stream.write("\r" + text)
            self.stream.flush()
            self._progress_open = True
        else:
            print(text, file=self.stream, flush=True)
        self._write(
            {"kind": "train", "step": step, "loss": loss, "images_per_s": images_per_s, "time": time.time()}
        )
        self._files(
            lambda: self.events.scalars(step, {"train/loss": loss, "train/images_per_s": images_per_s})
        )

    def epoch(
        self,
        epoch: int,
        step: int,
        train_loss: float,
        train_acc: float,
        eval_acc: float,
        eval_loss: float,
        lr: float,
        partial: bool = False,
    ) -> None:
        suffix = f" (stopped at step {step}, mid-epoch)" if partial else ""
        self.line(
            f"Epoch {epoch}: Train Loss: {train_loss:.4f}, Train Acc: {100 * train_acc:.2f}%, "
            f"Test Acc: {100 * eval_acc:.2f}%{suffix}"
        )
        rec = {
            "kind": "epoch",
            "epoch": epoch,
            "step": step,
            "train_loss": train_loss,
            "train_accuracy": train_acc,
            "eval_accuracy": eval_acc,
            "eval_loss": eval_loss,
            "learning_rate": lr,
            "partial": partial,
            "wall_s": time.time() - self.t_start,
            "time": time.time(),
        }
        self._write(rec)
        self.history.append(rec)
        self._files(
            lambda: self.events.scalars(
                step,
                {
                    "epoch/train_loss": train_loss,
                    "epoch/train_accuracy": train_acc,
                    "epoch/eval_accuracy": eval_acc,
                    "epoch/eval_loss": eval_loss,
                    "epoch/learning_rate": lr,
                },
            )
        )

    def close(self) -> None:
        if self._progress_open:
            self.stream.write("\n")
        if self._jsonl is not None:
            try:
                self._jsonl.close()
            except OSError:
                pass
        if self.events is not None:
            try:
                self.events.close()
            except OSError:
                pass
        if self.history:
            self._files(lambda: plot_curves(self.history, os.path.join(self.workdir, "curves.png")))
