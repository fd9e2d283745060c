#!/usr/bin/env python3
"""Writes the first N images of Fashion-MNIST's train and test splits as IDX files (what the
`fashionMnist` data-set format reads) into a directory: small real data for demos."""
import argparse
import gzip
import os
import struct

SOURCE = "/usr/share/datasets/fashion-mnist"


def subset(prefix, n, out):
    with gzip.open(os.path.join(SOURCE, f"{prefix}-images-idx3-ubyte.gz")) as f:
        magic, count, rows, cols = struct.unpack(">IIII", f.read(16))
        n = min(n, count)
        images = f.read(n * rows * cols)
    with gzip.open(os.path.join(SOURCE, f"{prefix}-labels-idx1-ubyte.gz")) as f:
        f.read(8)
        labels = f.read(n)
    with open(os.path.join(out, f"{prefix}-images-idx3-ubyte"), "wb") as f:
        f.write(struct.pack(">IIII", magic, n, rows, cols) + images)
    with open(os.path.join(out, f"{prefix}-labels-idx1-ubyte"), "wb") as f:
        f.write(struct.pack(">II", 2049, n) + labels)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=2048)
    ap.add_argument("--test", type=int, default=512)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    subset("train", args.train, args.out)
    subset("t10k", args.test, args.out)


if __name__ == "__main__":
    main()
