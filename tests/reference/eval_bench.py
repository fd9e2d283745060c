#!/usr/bin/env python3
"""Timing side of `cargo bench -p kontrast-worker --bench eval`: the evaluation kernels in their
Python reference form, on the inputs the bench writes, one process per round (the import and
the loading of the input are not timed).

Modes:
  svm  one scikit-learn LinearSVC per class, sequentially, with the VOC07 protocol's settings
       (squared hinge, dual coordinate descent, C, class_weight {1: 2, -1: 1}, tol 1e-4,
       intercept_scaling 1, max_iter, random_state 0): fit seconds, iterations and the test AP
       (the protocol's `get_precision_recall`, untimed) per class.
       IN holds train_x (N×D float32), train_y (N int64 class), test_x, test_y.
  knn  the kNN monitor of InstDisc / MoCo: test rows in chunks of 512, similarities to the whole
       bank with torch.mm, top-k, votes exp(s / T) summed per class over one-hot labels, arg-max.
       IN holds train (N×D, L2-normalised), train_labels, test; `threads` intra-op threads.
       Reports the seconds and the predictions.

Usage: eval_bench.py svm IN.safetensors COST MAX_ITER OUT.json
       eval_bench.py knn IN.safetensors K T CLASSES THREADS OUT.json
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def cmd_svm(src, cost, max_iter, dst):
    import numpy as np
    from safetensors.numpy import load_file
    from sklearn.svm import LinearSVC

    from svm_reference import get_precision_recall

    d = load_file(src)
    train_x, test_x = d["train_x"], d["test_x"]
    train_y, test_y = d["train_y"], d["test_y"]
    classes = []
    for c in range(int(max(train_y.max(), test_y.max())) + 1):
        y = np.where(train_y == c, 1, -1)
        clf = LinearSVC(C=float(cost), class_weight={1: 2, -1: 1}, intercept_scaling=1.0,
                        penalty="l2", loss="squared_hinge", tol=1e-4, dual=True,
                        max_iter=int(max_iter), random_state=0)
        # Timed as the Rust side's `svm::train`: the fit, including scikit-learn's conversion
        # of the float32 rows to liblinear's float64 sparse rows.
        start = time.perf_counter()
        clf.fit(train_x, y)
        seconds = time.perf_counter() - start
        scores = clf.decision_function(test_x)
        _, _, _, ap = get_precision_recall(np.where(test_y == c, 1, -1), scores)
        classes.append({
            "seconds": seconds,
            "n_iter": int(np.max(clf.n_iter_)),
            "ap": float(np.asarray(ap).reshape(-1)[0]) * 100,
        })
    with open(dst, "w") as f:
        json.dump({"classes": classes}, f)


def cmd_knn(src, k, t, classes, threads, dst):
    import torch
    from safetensors.torch import load_file

    torch.set_num_threads(int(threads))
    k, t, classes = int(k), float(t), int(classes)
    d = load_file(src)
    bank, labels, test = d["train"].t().contiguous(), d["train_labels"], d["test"]
    start = time.perf_counter()
    predictions = []
    with torch.no_grad():
        for chunk in test.split(512):
            sim = torch.mm(chunk, bank)
            sim_weight, sim_indices = sim.topk(k=k, dim=-1)
            sim_labels = torch.gather(labels.expand(chunk.size(0), -1), dim=-1, index=sim_indices)
            sim_weight = (sim_weight / t).exp()
            one_hot = torch.zeros(chunk.size(0) * k, classes)
            one_hot.scatter_(dim=-1, index=sim_labels.view(-1, 1), value=1.0)
            one_hot = one_hot.view(chunk.size(0), -1, classes)
            scores = torch.sum(one_hot * sim_weight.unsqueeze(-1), dim=1)
            predictions.append(scores.argmax(dim=-1))
    predictions = torch.cat(predictions)
    seconds = time.perf_counter() - start
    with open(dst, "w") as f:
        json.dump({"seconds": seconds, "predictions": predictions.tolist()}, f)


if __name__ == "__main__":
    commands = {"svm": (cmd_svm, 4), "knn": (cmd_knn, 6)}
    mode = sys.argv[1] if len(sys.argv) > 1 else None
    if mode not in commands or len(sys.argv) != commands[mode][1] + 2:
        sys.exit(__doc__)
    commands[mode][0](*sys.argv[2:])
