"""What the user sees: a progress line, the per-epoch line in the design doc's format,
metrics as JSON lines and TensorBoard event files (written without TensorFlow), and
a PNG of the curves at the end."""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import time
from typing import Dict, List, Optional

# ----------------------------------------------------------------------------
# TensorBoard event files: TFRecord framing + a hand-encoded Event protobuf
# ----------------------------------------------------------------------------

_CRC_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC_TABLE.append(_c)


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum TFRecord files use."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field_bytes(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_event(wall_time: float, step: int, scalars: Optional[Dict[str, float]] = None,
                 file_version: Optional[str] = None) -> bytes:
    """A ``tensorflow.Event`` message with scalar summaries, protobuf-encoded."""
    msg = b"\x09" + struct.pack("<d", wall_time) + b"\x10" + _varint(step)
    if file_version is not None:
        msg += _field_bytes(3, file_version.encode())
    if scalars:
        values = b"".join(
            _field_bytes(1, _field_bytes(1, tag.encode()) + b"\x15" + struct.pack("<f", float(v)))
            for tag, v in scalars.items())
        msg += _field_bytes(5, values)
    return msg


def tfrecord(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", _masked_crc(header)) + data + struct.pack("<I", _masked_crc(data))


class EventWriter:
    def __init__(self, logdir: str):
        os.makedirs(logdir, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
        self.path = os.path.join(logdir, name)
        self._f = open(self.path, "ab")
        self._f.write(tfrecord(encode_event(time.time(), 0, file_version="brain.Event:2")))
        self._f.flush()

    def scalars(self, step: int, values: Dict[str, float]) -> None:
        self._f.write(tfrecord(encode_event(time.time(), step, values)))
        self._f.flush()

    def close(self) -> None:
        self._f.close()


# ----------------------------------------------------------------------------
# A small PNG plot with pillow
# ----------------------------------------------------------------------------


def plot_curves(history: List[dict], path: str) -> None:
    """Train loss (left) and train/test accuracy (right) per epoch, as a PNG."""
    from PIL import Image, ImageDraw

    w, h, pad = 900, 380, 50
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    epochs = [r["epoch"] for r in history]
    panels = [("train loss", [("train_loss", (200, 40, 40))]),
              ("accuracy %", [("train_accuracy", (40, 40, 200)), ("eval_accuracy", (30, 150, 30))])]
    for p, (title, series) in enumerate(panels):
        x0, x1 = pad + p * w // 2, (p + 1) * w // 2 - 20
        y0, y1 = 30, h - pad
        draw.rectangle([x0, y0, x1, y1], outline="black")
        draw.text((x0, 10), title + "  (" + ", ".join(s for s, _ in series) + ")", fill="black")
        vals = [r[k] * (100 if "acc" in k else 1) for k, _ in series for r in history
                if r.get(k) is not None]
        if not vals or len(epochs) < 1:
            continue
        lo, hi = min(vals), max(vals)
        hi = hi if hi > lo else lo + 1
        e_lo, e_hi = min(epochs), max(max(epochs), min(epochs) + 1)
        draw.text((x0 - 45, y0), f"{hi:.3g}", fill="black")
        draw.text((x0 - 45, y1 - 10), f"{lo:.3g}", fill="black")
        draw.text((x0, y1 + 5), f"epoch {e_lo}", fill="black")
        draw.text((x1 - 60, y1 + 5), f"epoch {e_hi}", fill="black")
        for key, colour in series:
            pts = [(x0 + (r["epoch"] - e_lo) / (e_hi - e_lo) * (x1 - x0),
                    y1 - ((r[key] * (100 if "acc" in key else 1)) - lo) / (hi - lo) * (y1 - y0))
                   for r in history if r.get(key) is not None]
            if len(pts) > 1:
                draw.line(pts, fill=colour, width=2)
            for x, y in pts:
                draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
    img.save(path)


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

    def __init__(self, workdir: str, total_steps: int, batch_size: int, resumed: bool = False,
                 stream=None, write_files: bool = True, quiet: bool = False):
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
            self.line(f"warning: could not write metrics in {self.workdir!r} ({e}); "
                      "metrics files stop here, training goes on")

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
        text = (f"[{bar}] step {step}/{self.total_steps} loss {loss:.4f} "
                f"{images_per_s:,.0f} img/s ETA {eta_s}")
        if self.quiet:
            pass
        elif self.tty:
            self.stream.write("\r" + text)
            self.stream.flush()
            self._progress_open = True
        else:
            print(text, file=self.stream, flush=True)
        self._write({"kind": "train", "step": step, "loss": loss, "images_per_s": images_per_s,
                     "time": time.time()})
        self._files(lambda: self.events.scalars(step, {"train/loss": loss,
                                                        "train/images_per_s": images_per_s}))

    def epoch(self, epoch: int, step: int, train_loss: float, train_acc: float, eval_acc: float,
              eval_loss: float, lr: float, partial: bool = False) -> None:
        suffix = f" (stopped at step {step}, mid-epoch)" if partial else ""
        self.line(f"Epoch {epoch}: Train Loss: {train_loss:.4f}, Train Acc: {100 * train_acc:.2f}%, "
                  f"Test Acc: {100 * eval_acc:.2f}%{suffix}")
        rec = {"kind": "epoch", "epoch": epoch, "step": step, "train_loss": train_loss,
               "train_accuracy": train_acc, "eval_accuracy": eval_acc, "eval_loss": eval_loss,
               "learning_rate": lr, "partial": partial, "wall_s": time.time() - self.t_start,
               "time": time.time()}
        self._write(rec)
        self.history.append(rec)
        self._files(lambda: self.events.scalars(
            step, {"epoch/train_loss": train_loss, "epoch/train_accuracy": train_acc,
                   "epoch/eval_accuracy": eval_acc, "epoch/eval_loss": eval_loss,
                   "epoch/learning_rate": lr}))

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
