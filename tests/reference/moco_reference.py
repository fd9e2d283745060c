#!/usr/bin/env python3
"""PyTorch reference of one or more MoCo v2 / "Revisiting" training steps.

Written from the method's description (facebookresearch/moco's builder and main loop, and the
Revisiting kNN loss), on torchvision's ResNets, so the Rust implementation can be compared with
it tensor by tensor: both start from the same weights and queues (a safetensors file in PyTorch
state_dict names, loaded with strict=True, which also proves the layout matches torchvision's)
and see the same batches; this script writes every tensor of the model after the steps, plus the
losses of each step.

With `"autocast": "bf16"` in the config, each step's forward pass (encoders, momentum update,
losses; not the backward pass or the optimiser step) runs under
`torch.autocast("cpu", dtype=torch.bfloat16)`, as the worker's bf16 precision does.

Usage: moco_reference.py --init INIT --batches BATCHES --config CONFIG.json --out OUT
"""
import argparse
import contextlib
import json

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from safetensors.torch import load_file, save_file


def at_least_f32(t):
    """t in float32 when autocast produced it in a reduced precision, else t itself."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def make_encoder(cfg):
    net = getattr(torchvision.models, cfg["arch"])(num_classes=cfg["dim"])
    if cfg["cifar_stem"]:
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    if cfg["mlp"]:
        hidden = net.fc.weight.shape[1]
        net.fc = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), net.fc)
    return net


def encode(net, x):
    """Returns (pooled backbone features, projection)."""
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    x = net.layer4(net.layer3(net.layer2(net.layer1(x))))
    h = torch.flatten(net.avgpool(x), 1)
    return h, net.fc(h)


class MoCo(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.encoder_q = make_encoder(cfg)
        self.encoder_k = make_encoder(cfg)
        for p in self.encoder_k.parameters():
            p.requires_grad = False
        feat = self.encoder_q.fc[0].weight.shape[1] if cfg["mlp"] else self.encoder_q.fc.weight.shape[1]
        self.register_buffer("queue", torch.zeros(cfg["dim"], cfg["queue_size"]))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        if cfg["knn"] is not None:
            self.register_buffer("queue_backbone", torch.zeros(feat, cfg["queue_size"]))

    @torch.no_grad()
    def momentum_update_key_encoder(self):
        m = self.cfg["momentum"]
        for q, k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            k.data = k.data * m + q.data * (1.0 - m)

    @torch.no_grad()
    def dequeue_and_enqueue(self, keys, feats):
        batch = keys.shape[0]
        ptr = int(self.queue_ptr)
        assert self.cfg["queue_size"] % batch == 0
        self.queue[:, ptr:ptr + batch] = keys.T
        if feats is not None:
            self.queue_backbone[:, ptr:ptr + batch] = feats.T
        self.queue_ptr[0] = (ptr + batch) % self.cfg["queue_size"]

    def forward(self, im_q, im_k, small, knn_active):
        cfg = self.cfg
        T = cfg["temperature"]
        b = im_q.shape[0]
        h_large, z_large = encode(self.encoder_q, im_q)
        hs, zs = [h_large], [z_large]
        if small is not None:
            h_small, z_small = encode(self.encoder_q, small)  # image-major (b*S) rows
            hs.append(h_small)
            zs.append(z_small)
        q = F.normalize(torch.cat(zs), dim=1)
        with torch.no_grad():
            self.momentum_update_key_encoder()
            kh, kz = encode(self.encoder_k, im_k)
            k = F.normalize(kz, dim=1)
            kf = F.normalize(kh, dim=1)
        per_image = q.shape[0] // b
        k_rows = torch.cat([k] + ([k.repeat_interleave(per_image - 1, dim=0)] if per_image > 1 else []))

        queue = self.queue.clone().detach()
        l_pos = torch.einsum("nc,nc->n", [q, k_rows]).unsqueeze(-1)
        l_neg = torch.einsum("nc,ck->nk", [q, queue])
        logits = at_least_f32(torch.cat([l_pos, l_neg], dim=1) / T)
        labels = torch.zeros(logits.shape[0], dtype=torch.long)
        info_nce = F.cross_entropy(logits, labels)
        knn = None
        total = info_nce
        if cfg["knn"] is not None and knn_active:
            with torch.no_grad():
                hq = F.normalize(torch.cat(hs), dim=1)
                sim = hq @ self.queue_backbone.clone()
                _, idx = sim.topk(cfg["knn"]["top_k"], dim=1)
            z = at_least_f32(l_neg) / T
            z = z - z.max(dim=1, keepdim=True)[0].detach()
            log_p = F.log_softmax(z, dim=1)
            knn = -torch.gather(log_p, 1, idx).mean(dim=1).mean()
            total = info_nce + cfg["knn"]["weight"] * knn
        self.dequeue_and_enqueue(k, kf if cfg["knn"] is not None else None)
        return info_nce, knn, total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--init", required=True)
    ap.add_argument("--batches", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    with open(args.config) as f:
        cfg = json.load(f)
    torch.set_num_threads(cfg.get("threads", 1))
    model = MoCo(cfg)
    model.load_state_dict(load_file(args.init), strict=True)
    dtype = getattr(torch, cfg.get("dtype", "float32"))
    model.to(dtype)
    model.train()
    opt = torch.optim.SGD(
        model.encoder_q.parameters(),
        lr=cfg["lr"],
        momentum=cfg["sgd_momentum"],
        weight_decay=cfg["weight_decay"],
    )
    batches = load_file(args.batches)
    autocast = cfg.get("autocast")
    if autocast not in (None, "bf16"):
        raise SystemExit(f"unknown autocast {autocast!r}")
    out = {}
    for step in range(cfg["steps"]):
        small = batches.get(f"step{step}.small")
        small = small.to(dtype) if small is not None else None
        im_q = batches[f"step{step}.query"].to(dtype)
        im_k = batches[f"step{step}.key"].to(dtype)
        forward = (
            torch.autocast("cpu", dtype=torch.bfloat16)
            if autocast == "bf16"
            else contextlib.nullcontext()
        )
        with forward:
            info_nce, knn, total = model(im_q, im_k, small, True)
        opt.zero_grad()
        total.backward()
        opt.step()
        for name, p in model.encoder_q.named_parameters():
            out[f"grad.step{step}.encoder_q.{name}"] = p.grad.detach().clone()
        out[f"loss.step{step}.info_nce"] = info_nce.detach().double().reshape(1).clone()
        out[f"loss.step{step}.total"] = total.detach().double().reshape(1).clone()
        if knn is not None:
            out[f"loss.step{step}.knn"] = knn.detach().double().reshape(1).clone()
    for name, t in model.state_dict().items():
        out[name] = t.contiguous()
    save_file(out, args.out)


if __name__ == "__main__":
    main()
