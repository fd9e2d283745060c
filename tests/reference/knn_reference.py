#!/usr/bin/env python3
"""Reference weighted kNN classification (the kNN monitor of instance-discrimination papers):
each test row takes its k most cosine-similar training rows (features are L2-normalised), each
voting for its label with weight exp(similarity / T); the prediction is the arg-max of the votes.

Usage: knn_reference.py IN.safetensors OUT.safetensors K T CLASSES
IN holds train, train_labels, test; OUT gets predictions (int64).
"""
import sys

import torch
from safetensors.torch import load_file, save_file


def main():
    src, dst, k, t, classes = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
    d = load_file(src)
    train, labels, test = d["train"], d["train_labels"], d["test"]
    sim = test @ train.T
    values, index = sim.topk(min(k, train.shape[0]), dim=1, largest=True, sorted=True)
    weights = (values / t).exp()
    votes = torch.zeros(test.shape[0], classes).scatter_add_(1, labels[index], weights)
    save_file({"predictions": votes.argmax(dim=1)}, dst)


if __name__ == "__main__":
    main()
