#!/usr/bin/env python3
"""Reference for the VOC07 linear-SVM protocol of "Revisiting Contrastive Methods"
(evaluation/voc_svm, adapted from PCL): one scikit-learn LinearSVC per class with the protocol's
exact settings, scored by the protocol's average precision.

Usage:
  svm_reference.py svm IN.safetensors COST MAX_ITER RANDOM_STATE
      IN holds train_x (N×D float32), train_y (N×C int8 in {1,-1,0}), test_x, test_y.
      Prints JSON: {"seed": the seed LinearSVC hands liblinear, "classes": [{"ap", "coef",
      "intercept", "n_iter", "fit_seconds"}, ...]}; AP in 0-100 units.
  svm_reference.py voc-fixture FASHION_MNIST_DIR ROOT TRAINVAL TEST
      Writes a synthetic PASCAL VOC root (JPEGImages/, Annotations/, ImageSets/Main/) built from
      real Fashion-MNIST images: TRAINVAL training images and TEST test images, labelled for the
      20 VOC classes by the rule in `voc_labels` (not real VOC content).
"""
import gzip
import json
import os
import sys
import time

import numpy as np

VOC_CLASSES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
]


# --- the protocol's average precision, as in evaluation/voc_svm/metrics.py --------------------

def calculate_ap(rec, prec):
    rec, prec = rec.reshape(rec.size, 1), prec.reshape(prec.size, 1)
    z, o = np.zeros((1, 1)), np.ones((1, 1))
    mrec, mpre = np.vstack((z, rec, o)), np.vstack((z, prec, z))
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    indices = np.where(mrec[1:] != mrec[0:-1])[0] + 1
    ap = 0
    for i in indices:
        ap = ap + (mrec[i] - mrec[i - 1]) * mpre[i]
    return ap


def get_precision_recall(targets, preds):
    targets = np.array(targets > 0, dtype=np.float32)
    tog = np.hstack((
        targets[:, np.newaxis].astype(np.float64),
        preds[:, np.newaxis].astype(np.float64)
    ))
    ind = np.argsort(preds)
    ind = ind[::-1]
    score = np.array([tog[i, 1] for i in ind])
    sortcounts = np.array([tog[i, 0] for i in ind])
    tp = sortcounts
    fp = sortcounts.copy()
    for i in range(sortcounts.shape[0]):
        if sortcounts[i] >= 1:
            fp[i] = 0.
        elif sortcounts[i] < 1:
            fp[i] = 1.
    P = np.cumsum(tp) / (np.cumsum(tp) + np.cumsum(fp))
    numinst = np.sum(targets)
    R = np.cumsum(tp) / numinst
    ap = calculate_ap(R, P)
    return P, R, score, ap


def cmd_svm(src, cost, max_iter, random_state):
    from safetensors.numpy import load_file
    from sklearn.svm import LinearSVC

    cost, max_iter, random_state = float(cost), int(max_iter), int(random_state)
    d = load_file(src)
    train_x, test_x = d["train_x"], d["test_x"]
    train_y, test_y = d["train_y"].astype(np.int64), d["test_y"].astype(np.int64)
    # Difficult (0) counts as negative, in training and in AP.
    train_y[train_y == 0] = -1
    test_y[test_y == 0] = -1
    seed = int(np.random.RandomState(random_state).randint(np.iinfo("i").max))
    classes = []
    for c in range(train_y.shape[1]):
        clf = LinearSVC(C=cost, class_weight={1: 2, -1: 1}, intercept_scaling=1.0,
                        penalty="l2", loss="squared_hinge", tol=1e-4, dual=True,
                        max_iter=max_iter, random_state=random_state)
        start = time.perf_counter()
        clf.fit(train_x, train_y[:, c])
        seconds = time.perf_counter() - start
        prediction = clf.decision_function(test_x)
        _, _, _, ap = get_precision_recall(test_y[:, c], prediction)
        classes.append({
            "ap": float(np.asarray(ap).reshape(-1)[0]) * 100,
            "coef": clf.coef_[0].tolist(),
            "intercept": float(clf.intercept_[0]),
            "n_iter": int(np.max(clf.n_iter_)),
            "fit_seconds": seconds,
        })
    json.dump({"seed": seed, "classes": classes}, sys.stdout)


# --- the synthetic VOC fixture ------------------------------------------------------------------

# Fashion-MNIST: 0 T-shirt/top, 1 Trouser, 2 Pullover, 3 Dress, 4 Coat, 5 Sandal, 6 Shirt,
# 7 Sneaker, 8 Bag, 9 Ankle boot. VOC class k < 10 is "label == k"; the other ten are groups, so
# that an image can carry several classes as in VOC.
GROUPS = [
    {0, 2, 4, 6},  # diningtable: tops
    {5, 7, 9},  # dog: footwear
    {1, 3},  # horse: long garments
    {0, 6},  # motorbike: shirts
    {2, 4},  # person: warm clothes
    {8, 9},  # pottedplant
    {3, 4},  # sheep
    {5, 9},  # sofa
    {7, 8},  # train
    {1, 8},  # tvmonitor
]


def voc_labels(label, index):
    """The 20 labels of image `index` with Fashion-MNIST label `label`: 1, -1, or 0 for every
    tenth positive ("difficult")."""
    out = []
    for k in range(20):
        positive = label == k if k < 10 else label in GROUPS[k - 10]
        if not positive:
            out.append(-1)
        else:
            out.append(0 if (index + k) % 10 == 3 else 1)
    return out


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def annotation(image_id, labels):
    objects = "".join(
        f"<object><name>{VOC_CLASSES[k]}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>{1 if l == 0 else 0}</difficult><bndbox><xmin>1</xmin><ymin>1</ymin>"
        f"<xmax>28</xmax><ymax>28</ymax></bndbox></object>"
        for k, l in enumerate(labels) if l != -1)
    return (f"<annotation><folder>VOC2007</folder><filename>{image_id}.jpg</filename>"
            "<source><database>synthetic, from Fashion-MNIST</database></source>"
            "<size><width>28</width><height>28</height><depth>3</depth></size>"
            f"<segmented>0</segmented>{objects}</annotation>\n")


def cmd_voc_fixture(fashion, root, trainval, test):
    from PIL import Image

    trainval, test = int(trainval), int(test)
    for sub in ["JPEGImages", "Annotations", "ImageSets/Main"]:
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    splits = [("trainval", "train", trainval, 1), ("test", "t10k", test, trainval + 1)]
    for split, prefix, n, first_id in splits:
        images = read_idx(os.path.join(fashion, f"{prefix}-images-idx3-ubyte.gz"))[:n]
        labels = read_idx(os.path.join(fashion, f"{prefix}-labels-idx1-ubyte.gz"))[:n]
        ids, rows = [], []
        for i, (pixels, label) in enumerate(zip(images, labels)):
            image_id = f"{first_id + i:06d}"
            row = voc_labels(int(label), first_id + i)
            Image.fromarray(pixels).convert("RGB").save(
                os.path.join(root, "JPEGImages", image_id + ".jpg"), quality=90)
            with open(os.path.join(root, "Annotations", image_id + ".xml"), "w") as f:
                f.write(annotation(image_id, row))
            ids.append(image_id)
            rows.append(row)
        with open(os.path.join(root, "ImageSets", "Main", split + ".txt"), "w") as f:
            f.writelines(i + "\n" for i in ids)
        for k, name in enumerate(VOC_CLASSES):
            # The devkit's `%s %2d`: two spaces before a positive label.
            with open(os.path.join(root, "ImageSets", "Main", f"{name}_{split}.txt"), "w") as f:
                f.writelines(f"{i} {r[k]:2d}\n" for i, r in zip(ids, rows))


if __name__ == "__main__":
    commands = {"svm": cmd_svm, "voc-fixture": cmd_voc_fixture}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](*sys.argv[2:])
