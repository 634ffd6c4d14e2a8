"""Train codec v2 from a portable snapshot with PyTorch, for a wall-clock budget, and write a snapshot back.

    python -m training.gpu.train --snapshot snapshots/codec-v2 --pack <pack dir> --out <dir> \
        --minutes 8 [--batch 16 --crop 128 --lr 3e-4 --lr-decay 22400 --save-every 2000]

For the lent GPU machine (PyTorch, no TensorFlow, a few minutes): the run starts from the snapshot's
weights and step, trains on random crops of the pack (`training.gpu.pack`) with Adam (Keras's ε),
global gradient clipping at 1.0, the CPU recipe's rate schedule (`--lr`, divided by 10 from step
`--lr-decay` on) and the snapshot's λ ladder and level weights (its model arguments), and writes the
snapshot again every `--save-every` steps and at the end, so that a run cut short still hands back its
progress; it never writes weights that are not finite. Steps count training crops as the CPU run
does (steps × batch / 8), for `--lr-decay` here and when the run comes back; the epoch follows (400
steps of 8). `python -m training.snapshot restore` turns the result into a checkpoint here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from training.gpu import snapshot_files
from training.gpu.codec_cc_torch import ChannelCodecTorch

CPU_BATCH = 8  # the CPU run's batch: a recorded step is 8 training crops
STEPS_PER_EPOCH = 400


def load_pack(directory: Path, device: torch.device) -> list[torch.Tensor]:
    """The pack's crops as uint8 CHW tensors on `device`."""
    index = json.loads((directory / "pack.json").read_text())
    crops = []
    for entry in index["crops"]:
        with Image.open(directory / entry["file"]) as img:
            crops.append(torch.from_numpy(np.asarray(img.convert("RGB")).copy()).permute(2, 0, 1).to(device))
    if not crops:
        raise SystemExit(f"{directory}: the pack holds no crops")
    return crops


def random_batch(crops: list[torch.Tensor], batch: int, size: int, generator: np.random.Generator) -> torch.Tensor:
    """`batch` random size² crops (random flips too) of random pack crops, float NCHW in [0, 1]."""
    out = []
    for i in generator.integers(len(crops), size=batch):
        crop = crops[int(i)]
        y = int(generator.integers(crop.shape[1] - size + 1))
        x = int(generator.integers(crop.shape[2] - size + 1))
        piece = crop[:, y:y + size, x:x + size]
        if generator.random() < 0.5:
            piece = piece.flip(2)
        out.append(piece)
    return torch.stack(out).float() / 255.0


def train(snapshot: Path, pack: Path, out: Path, minutes: float, batch: int = 16, crop: int = 128, lr: float = 3e-4,
          save_every: int = 2000, max_steps: int | None = None, seed: int = 0, log_every: int = 200,
          lr_decay: int | None = 22400) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    arrays, meta = snapshot_files.read(snapshot)
    model = ChannelCodecTorch(**meta["model_args"]).to(device)
    model.load_weights(arrays)
    params = [p for _, p in model.named_weights()]
    optimizer = torch.optim.Adam(params, lr=lr, eps=1e-7)
    crops = [c for c in load_pack(pack, device) if min(c.shape[1:]) >= crop]
    if not crops:
        raise SystemExit(f"no crop of {pack} is at least {crop}x{crop}")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    start_step, start = int(meta["step"]), time.monotonic()
    steps, history = 0, []

    def recorded_step() -> int:
        return start_step + steps * batch // CPU_BATCH

    def save() -> None:
        if not all(bool(torch.isfinite(p).all()) for p in params):
            raise SystemExit(f"weights are not finite at GPU step {steps}: not saved ({out} keeps the last good ones)")
        step = recorded_step()
        snapshot_files.write(out, model.weight_arrays(), {
            **{k: meta[k] for k in ("architecture", "model_args")}, "step": step, "epoch": step // STEPS_PER_EPOCH,
            "from": f"{snapshot} step {start_step} + {steps} GPU steps of batch {batch}", "history": history})

    print(f"{device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'no GPU'}); {len(crops)} crops; "
          f"from step {start_step}", flush=True)
    running: dict[str, torch.Tensor] = {}
    while time.monotonic() - start < minutes * 60 and (max_steps is None or steps < max_steps):
        rate = lr / 10 if lr_decay is not None and recorded_step() >= lr_decay else lr
        for group in optimizer.param_groups:
            group["lr"] = rate
        losses = model.losses(random_batch(crops, batch, crop, rng).to(device))
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        steps += 1
        for key, value in losses.items():  # summed on the device: one sync per log line, not per step
            running[key] = running.get(key, 0.0) + value.detach()
        if steps % log_every == 0:
            row = {k: float(v) / log_every for k, v in running.items()} | {
                "steps": steps, "lr": rate, "seconds": round(time.monotonic() - start, 1)}
            history.append(row)
            running = {}
            print(json.dumps(row), flush=True)
            if not np.isfinite(row["loss"]):
                raise SystemExit("the loss is not finite: stopped without saving")
        if steps % save_every == 0:
            save()
    save()
    seconds = time.monotonic() - start
    print(f"{steps} steps of batch {batch} in {seconds:.0f} s ({steps / seconds:.1f} steps/s); snapshot in {out}")
    return {"steps": steps, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.gpu.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--snapshot", type=Path, required=True)
    parser.add_argument("--pack", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--minutes", type=float, required=True, help="wall-clock budget of the training loop")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-4, help="the CPU recipe's LR")
    parser.add_argument("--lr-decay", type=int, default=22400, help="the CPU recipe's LR_DECAY (a recorded step)")
    parser.add_argument("--save-every", type=int, default=2000)
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=200)
    args = parser.parse_args(argv)
    train(args.snapshot, args.pack, args.out, args.minutes, args.batch, args.crop, args.lr, args.save_every,
          args.max_steps, args.seed, args.log_every, args.lr_decay)
    return 0


if __name__ == "__main__":
    sys.exit(main())
