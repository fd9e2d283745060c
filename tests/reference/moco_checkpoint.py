#!/usr/bin/env python3
"""Writes a PyTorch MoCo checkpoint as the reference training code does, for `kontrast import`.

The model is moco_reference.py's MoCo (torchvision ResNet encoders under `encoder_q`/`encoder_k`,
`queue`, `queue_ptr`, `queue_backbone`), wrapped the way DistributedDataParallel wraps it so every
state-dict key carries the `module.` prefix, and saved with `torch.save` (zip container) as
`{epoch, arch, state_dict, optimizer}` after one real SGD step, so the file also holds an
optimiser state. Every tensor is made distinct — random BN statistics, a key encoder that differs
from the query encoder, random queues — so an import that drops or swaps one is caught.
The unprefixed state dict is also written as safetensors: what the import must reproduce.

Usage: moco_checkpoint.py --config CONFIG.json --out FILE --expected EXPECTED.safetensors
                          [--epoch N] [--bare] [--queue-ptr P]
  --bare: save the bare state dict (no wrapper dict, no prefix, no epoch).
"""
import argparse
import json
import os
import sys

import torch
import torch.nn as nn
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from moco_reference import MoCo  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--expected", required=True)
    ap.add_argument("--epoch", type=int, default=3)
    ap.add_argument("--bare", action="store_true")
    ap.add_argument("--queue-ptr", type=int, default=0)
    args = ap.parse_args()
    with open(args.config) as f:
        cfg = json.load(f)
    torch.manual_seed(7)
    model = MoCo(cfg)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.fill_(5)
            elif name == "queue_ptr":
                t.fill_(args.queue_ptr)
            elif name.endswith("running_var"):
                t.uniform_(0.5, 1.5)
            elif name.endswith("running_mean") or name.startswith("queue"):
                t.normal_()
            elif name.startswith("encoder_k."):
                t.copy_(t + 0.01 * torch.randn_like(t))
    opt = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4)
    loss = sum(p.square().sum() for p in model.encoder_q.parameters())
    loss.backward()
    opt.step()

    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(state, args.expected)
    if args.bare:
        torch.save(model.state_dict(), args.out)
        return
    wrapper = nn.Module()
    wrapper.module = model  # the key layout DistributedDataParallel gives: module.<name>
    torch.save(
        {
            "epoch": args.epoch,
            "arch": cfg["arch"],
            "state_dict": wrapper.state_dict(),
            "optimizer": opt.state_dict(),
        },
        args.out,
    )


if __name__ == "__main__":
    main()
