#!/usr/bin/env python3
"""One rank of the torch.distributed side of `cargo bench -p kontrast-worker --bench allreduce`,
which starts two of these per round with RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set and
KONTRAST_ALLREDUCE_BENCH_OUT naming where rank 0 writes its medians (seconds, JSON).

Over torchvision's ResNet-50 parameters (25.6 M fp32 values), with a barrier before every timed
iteration, it times the same operations as the Rust ranks:
  bucketed_s     the Rust GradReducer's steps: gradients packed into 25 MiB flat buckets in
                 reverse parameter order, one all_reduce(async_op=True) per bucket, wait, divide
                 by the world size, copy back (bucketed_comm_s: first launch to last wait);
  flat_s         one all_reduce of all values in one flat tensor, then the division;
  step_s         forward + backward of a small batch (backward_s: the backward alone);
  step_reduce_s  the same followed by the bucketed reduction;
  ddp_step_s     forward + backward under DistributedDataParallel (gloo, bucket_cap_mb=25),
                 whose backward returns once its overlapped reduction is done (ddp_backward_s);
  reduce_added_s, ddp_added_s
                 the median per-iteration difference of step_reduce_s and ddp_step_s to step_s.

Usage: allreduce_bench.py --warmup W --iters N --batch B --size S --threads T
"""
import argparse
import copy
import json
import os
import statistics
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
import torchvision
from torch.nn.parallel import DistributedDataParallel

BUCKET_BYTES = 25 * 1024 * 1024


class Reducer:
    """GradReducer's plan and steps: consecutive parameters (last first) fill a bucket while
    they fit in BUCKET_BYTES."""

    def __init__(self, params):
        self.params = [p for p in params if p.requires_grad]
        self.buckets = []
        for i in reversed(range(len(self.params))):
            n = self.params[i].numel()
            last = self.buckets[-1] if self.buckets else None
            if last is None or (last["numel"] + n) * 4 > BUCKET_BYTES:
                last = {"slots": [], "numel": 0}
                self.buckets.append(last)
            last["slots"].append((i, last["numel"], n))
            last["numel"] += n
        for b in self.buckets:
            b["flat"] = torch.zeros(b["numel"])

    @torch.no_grad()
    def reduce(self):
        works = []
        started = None
        for b in self.buckets:
            for i, off, n in b["slots"]:
                g = self.params[i].grad
                if g is None:
                    b["flat"][off : off + n].zero_()
                else:
                    b["flat"][off : off + n].copy_(g.reshape(-1))
            if started is None:
                started = time.perf_counter()
            works.append((dist.all_reduce(b["flat"], async_op=True), b["flat"]))
        world = dist.get_world_size()
        for work, flat in works:
            work.wait()
            flat.div_(world)
        comm = time.perf_counter() - started
        for b in self.buckets:
            for i, off, n in b["slots"]:
                p = self.params[i]
                mean = b["flat"][off : off + n].view_as(p)
                if p.grad is None:
                    p.grad = mean.clone()
                else:
                    p.grad.copy_(mean)
        return comm


def timed(warmup, iters, f):
    for _ in range(warmup):
        dist.barrier()
        f()
    times = []
    for _ in range(iters):
        dist.barrier()
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}",
        rank=rank,
        world_size=world,
    )
    torch.manual_seed(rank)
    model = torchvision.models.resnet50()
    model.train()
    params = list(model.parameters())
    numel = sum(p.numel() for p in params)
    x = torch.randn(args.batch, 3, args.size, args.size)
    y = torch.randint(1000, (args.batch,))

    def zero_grads(m):
        for p in m.parameters():
            if p.grad is not None:
                p.grad.zero_()

    F.cross_entropy(model(x), y).backward()
    reducer = Reducer(params)

    flat = torch.full((numel,), float(rank))
    dist.all_reduce(flat)
    flat.div_(world)
    assert flat.min().item() == 0.5 and flat.max().item() == 0.5, "the flat average is not 0.5"

    comm = []
    bucketed = timed(args.warmup, args.iters, lambda: comm.append(reducer.reduce()))

    def flat_reduce():
        dist.all_reduce(flat)
        flat.div_(world)

    flat_s = timed(args.warmup, args.iters, flat_reduce)

    # No buffer synchronisation in forward: the Rust step synchronises no BN statistics either, so
    # both time the gradient reduction alone.
    ddp = DistributedDataParallel(
        copy.deepcopy(model), bucket_cap_mb=25, forward_sync_buffers=False
    )
    step, backward, step_reduce, ddp_step, ddp_backward = [], [], [], [], []
    # The cost of a reduction is its per-iteration difference to the plain step, so that slow
    # load changes cancel.
    reduce_added, ddp_added = [], []
    for i in range(args.warmup + args.iters):
        for variant in ("plain", "reduce", "ddp"):
            m = ddp if variant == "ddp" else model
            zero_grads(m)
            dist.barrier()
            start = time.perf_counter()
            loss = F.cross_entropy(m(x), y)
            mid = time.perf_counter()
            loss.backward()
            bwd = time.perf_counter() - mid
            if variant == "reduce":
                reducer.reduce()
            total = time.perf_counter() - start
            if i < args.warmup:
                continue
            if variant == "plain":
                step.append(total)
                backward.append(bwd)
            elif variant == "reduce":
                step_reduce.append(total)
                reduce_added.append(total - step[-1])
            else:
                ddp_step.append(total)
                ddp_added.append(total - step[-1])
                ddp_backward.append(bwd)

    if rank == 0:
        result = {
            "params": numel,
            "tensors": len(params),
            "buckets": len(reducer.buckets),
            "bucketed_s": bucketed,
            "bucketed_comm_s": statistics.median(comm[args.warmup :]),
            "flat_s": flat_s,
            "step_s": statistics.median(step),
            "backward_s": statistics.median(backward),
            "step_reduce_s": statistics.median(step_reduce),
            "ddp_step_s": statistics.median(ddp_step),
            "ddp_backward_s": statistics.median(ddp_backward),
            "reduce_added_s": statistics.median(reduce_added),
            "ddp_added_s": statistics.median(ddp_added),
        }
        with open(os.environ["KONTRAST_ALLREDUCE_BENCH_OUT"], "w") as f:
            json.dump(result, f, indent=2)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
