#!/usr/bin/env python3
"""Times training steps of the PyTorch MoCo reference (moco_reference.MoCo) for
`cargo bench -p kontrast-worker --bench train_step`, which writes the initial weights, the batches
and config.json, and runs this script once per round.

Modes:
  check  one step with the reference's own forward pass (as moco_reference.py runs it) from the
         initial state and batch 0; reports its losses, plus the total of the phase-by-phase step
         below from the same state, which proves that step computes the same thing.
  time   `warmup` untimed steps, `steps` timed steps of the reference's forward pass + backward +
         SGD (step_s: seconds per step), then `phase_steps` steps spelled out phase by phase with
         a timer (and a CUDA synchronisation) around each phase (phases: seconds per step).

Every step reads the total loss as a number, as the Rust step does (its divergence check).

Usage: train_step_bench.py check|time --init INIT --batches BATCHES --config CONFIG --out OUT.json
"""
import argparse
import contextlib
import json
import os
import sys
import time

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from moco_reference import MoCo, at_least_f32, encode  # noqa: E402

PHASES = ["forward_query", "momentum_update", "key_forward", "loss", "backward", "optimizer", "enqueue"]


def build(cfg, init, device):
    model = MoCo(cfg)
    model.load_state_dict(init, strict=True)
    model.to(device)
    if cfg["channels_last"]:
        # Converts the 4-d tensors (the convolution weights), as the Rust side's layout does.
        model.to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.SGD(
        model.encoder_q.parameters(),
        lr=cfg["lr"],
        momentum=cfg["sgd_momentum"],
        weight_decay=cfg["weight_decay"],
    )
    return model, opt


def autocast(cfg, device):
    if cfg.get("autocast") == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reference_step(model, opt, cfg, device, batch):
    """One step exactly as moco_reference.py's main loop runs it."""
    im_q, im_k, small = batch
    # The reference creates its labels without a device: make that the model's device.
    with torch.device(device), autocast(cfg, device):
        info_nce, knn, total = model(im_q, im_k, small, True)
    value = float(total.detach())
    opt.zero_grad()
    total.backward()
    opt.step()
    return float(info_nce.detach()), (None if knn is None else float(knn.detach())), value


def phased_step(model, opt, cfg, device, batch, times):
    """MoCo.forward's computation split into phases, each timed; the queue is written after the
    optimiser step (as in the Rust step) rather than inside the forward pass, which changes no
    value of this step."""
    im_q, im_k, small = batch
    T = cfg["temperature"]
    clock = [time.perf_counter()]

    def lap(phase):
        sync(device)
        now = time.perf_counter()
        times[phase] += now - clock[0]
        clock[0] = now

    opt.zero_grad()
    with autocast(cfg, device):
        b = im_q.shape[0]
        h_large, z_large = encode(model.encoder_q, im_q)
        hs, zs = [h_large], [z_large]
        if small is not None:
            h_small, z_small = encode(model.encoder_q, small)
            hs.append(h_small)
            zs.append(z_small)
        q = F.normalize(torch.cat(zs), dim=1)
        lap("forward_query")
        with torch.no_grad():
            model.momentum_update_key_encoder()
        lap("momentum_update")
        with torch.no_grad():
            kh, kz = encode(model.encoder_k, im_k)
            k = F.normalize(kz, dim=1)
            kf = F.normalize(kh, dim=1)
        lap("key_forward")
        per_image = q.shape[0] // b
        k_rows = torch.cat([k] + ([k.repeat_interleave(per_image - 1, dim=0)] if per_image > 1 else []))
        queue = model.queue.clone().detach()
        l_pos = torch.einsum("nc,nc->n", [q, k_rows]).unsqueeze(-1)
        l_neg = torch.einsum("nc,ck->nk", [q, queue])
        logits = at_least_f32(torch.cat([l_pos, l_neg], dim=1) / T)
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        total = F.cross_entropy(logits, labels)
        if cfg["knn"] is not None:
            with torch.no_grad():
                hq = F.normalize(torch.cat(hs), dim=1)
                sim = hq @ model.queue_backbone.clone()
                _, idx = sim.topk(cfg["knn"]["top_k"], dim=1)
            z = at_least_f32(l_neg) / T
            z = z - z.max(dim=1, keepdim=True)[0].detach()
            log_p = F.log_softmax(z, dim=1)
            knn = -torch.gather(log_p, 1, idx).mean(dim=1).mean()
            total = total + cfg["knn"]["weight"] * knn
    value = float(total.detach())
    lap("loss")
    total.backward()
    lap("backward")
    opt.step()
    lap("optimizer")
    model.dequeue_and_enqueue(k, kf if cfg["knn"] is not None else None)
    lap("enqueue")
    return value


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["check", "time"])
    ap.add_argument("--init", required=True)
    ap.add_argument("--batches", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    with open(args.config) as f:
        cfg = json.load(f)
    torch.set_num_threads(cfg["threads"])
    device = torch.device(cfg["device"])
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("device cuda: torch sees no CUDA device")
    if cfg.get("autocast") not in (None, "bf16"):
        raise SystemExit(f"unknown autocast {cfg['autocast']!r}")
    init = load_file(args.init)
    raw = load_file(args.batches)
    batches = []
    for i in range(cfg["batches"]):
        small = raw.get(f"step{i}.small")
        batches.append(
            (
                raw[f"step{i}.query"].to(device),
                raw[f"step{i}.key"].to(device),
                None if small is None else small.to(device),
            )
        )
    out = {}
    if args.mode == "check":
        model, opt = build(cfg, init, device)
        info_nce, knn, total = reference_step(model, opt, cfg, device, batches[0])
        out.update(info_nce=info_nce, knn=knn, total=total)
        model, opt = build(cfg, init, device)
        times = dict.fromkeys(PHASES, 0.0)
        out["phased_total"] = phased_step(model, opt, cfg, device, batches[0], times)
    else:
        model, opt = build(cfg, init, device)
        step = 0
        for _ in range(cfg["warmup"]):
            reference_step(model, opt, cfg, device, batches[step % len(batches)])
            step += 1
        sync(device)
        start = time.perf_counter()
        for _ in range(cfg["steps"]):
            reference_step(model, opt, cfg, device, batches[step % len(batches)])
            step += 1
        sync(device)
        out["step_s"] = (time.perf_counter() - start) / cfg["steps"]
        times = dict.fromkeys(PHASES, 0.0)
        for i in range(cfg["phase_steps"]):
            phased_step(model, opt, cfg, device, batches[i % len(batches)], times)
        out["phases"] = {k: v / max(cfg["phase_steps"], 1) for k, v in times.items()}
    with open(args.out, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
