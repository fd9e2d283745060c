#!/usr/bin/env python3
"""Reference for the segmentation scores of "Revisiting Contrastive Methods" (the SemsegMeter of
evaluation/segmentation and of Unsupervised-Semantic-Segmentation), and the synthetic PASCAL VOC
segmentation fixture of the segment-retrieval tests.

Usage:
  miou_reference.py miou IN.safetensors CLASSES
      IN holds `pred` and `gt` (all images' pixels concatenated, uint8) and `sizes` (N×2 int64,
      height and width of each image). Accumulates TP/FP/FN per class over the images as the
      meter does (ground truth 255 ignored) and prints JSON: {"tp", "fp", "fn", "iou", "mIoU",
      "mIoUPresent", "pixelAccuracy"}, scores as fractions. mIoU is the meter's mean over all
      classes with TP/max(TP+FP+FN, 1e-8) (an absent class scores 0); mIoUPresent averages the
      classes with TP+FP+FN > 0.
  miou_reference.py voc-seg-fixture FASHION_MNIST_DIR ROOT TRAIN VAL
      Writes a synthetic PASCAL VOC segmentation root (JPEGImages/*.jpg,
      SegmentationClass/*.png palette PNGs, ImageSets/Segmentation/{train,val}.txt): real
      Fashion-MNIST items pasted onto a background, with exact masks (not VOC content). TRAIN
      images come from the training split, VAL from the test split; VAL = 0 makes val.txt list
      the training images again.
  miou_reference.py cityscapes-fixture FASHION_MNIST_DIR ROOT TRAIN VAL
      Writes a synthetic Cityscapes root in the exact on-disk layout
      (leftImg8bit/{train,val}/<city>/<city>_<frame>_000019_leftImg8bit.png, RGB, and
      gtFine/{train,val}/<city>/…_gtFine_labelIds.png, 8-bit grey label ids, with a
      …_gtFine_color.png beside it that readers must skip): 96×48 street-like frames, sky (id 23)
      above road (id 7), a Fashion-MNIST item pasted as one of ten evaluated classes, a band of
      ego vehicle (id 1, not evaluated) at the bottom. TRAIN frames from the training split over
      two cities, VAL from the test split in a third (not Cityscapes content).
"""
import gzip
import json
import os
import sys

import numpy as np

IGNORE = 255


# --- the meter ------------------------------------------------------------------------------

def cmd_miou(src, classes):
    from safetensors.numpy import load_file

    classes = int(classes)
    d = load_file(src)
    pred, gt, sizes = d["pred"], d["gt"], d["sizes"]
    tp, fp, fn = [0] * classes, [0] * classes, [0] * classes
    offset = 0
    for h, w in sizes:
        n = int(h) * int(w)
        p = pred[offset:offset + n].reshape(int(h), int(w))
        g = gt[offset:offset + n].reshape(int(h), int(w))
        offset += n
        valid = g != IGNORE
        for c in range(classes):
            tmp_gt = g == c
            tmp_pred = p == c
            tp[c] += int(np.sum(tmp_gt & tmp_pred & valid))
            fp[c] += int(np.sum(~tmp_gt & tmp_pred & valid))
            fn[c] += int(np.sum(tmp_gt & ~tmp_pred & valid))
    assert offset == pred.size == gt.size, "sizes do not cover the pixels"
    iou = [float(tp[c]) / max(float(tp[c] + fp[c] + fn[c]), 1e-8) for c in range(classes)]
    present = [iou[c] for c in range(classes) if tp[c] + fp[c] + fn[c] > 0]
    valid_pixels = int(np.sum(gt != IGNORE))
    json.dump({
        "tp": tp, "fp": fp, "fn": fn, "iou": iou,
        "mIoU": float(np.mean(iou)),
        "mIoUPresent": float(np.mean(present)) if present else 0.0,
        "pixelAccuracy": sum(tp) / valid_pixels if valid_pixels else 0.0,
    }, sys.stdout)


# --- the synthetic VOC segmentation fixture --------------------------------------------------

# Fashion-MNIST label → VOC class (1–20): 0 T-shirt → person, 1 Trouser → horse,
# 2 Pullover → sheep, 3 Dress → cat, 4 Coat → dog, 5 Sandal → boat, 6 Shirt → cow,
# 7 Sneaker → car, 8 Bag → bottle, 9 Ankle boot → bus. Arbitrary but fixed.
VOC_CLASS_OF = [15, 13, 17, 8, 12, 4, 10, 7, 5, 6]
SIDE = 48


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def voc_palette():
    """The devkit's `labelcolormap`: index bits spread over the high bits of R, G and B."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette


def scene(item, label, index):
    """The item pasted onto a background gradient, and its exact mask: the class on the item's
    pixels of grey level ≥ 32, 255 on a one-pixel ring around them (VOC's boundary), 0 elsewhere."""
    left, top = 2 + index * 7 % 17, 3 + index * 5 % 15
    ys, xs = np.mgrid[0:SIDE, 0:SIDE]
    image = np.stack([
        (xs * 3 + index * 11) % 256, (ys * 3 + index * 29) % 256, np.full_like(xs, 60 + index % 90),
    ], axis=-1).astype(np.uint8)
    obj = np.zeros((SIDE, SIDE), dtype=bool)
    obj[top:top + 28, left:left + 28] = item >= 32
    patch = image[top:top + 28, left:left + 28]
    grey = item[..., None].astype(np.int32)
    patch[:] = np.where(item[..., None] >= 32, np.concatenate([grey, grey // 2, 255 - grey], -1), patch)
    grown = obj.copy()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            shifted = np.zeros_like(obj)
            shifted[max(dy, 0):SIDE + min(dy, 0), max(dx, 0):SIDE + min(dx, 0)] = \
                obj[max(-dy, 0):SIDE + min(-dy, 0), max(-dx, 0):SIDE + min(-dx, 0)]
            grown |= shifted
    mask = np.zeros((SIDE, SIDE), dtype=np.uint8)
    mask[grown] = IGNORE
    mask[obj] = VOC_CLASS_OF[label]
    return image, mask


def cmd_voc_seg_fixture(fashion, root, train, val):
    from PIL import Image

    train, val = int(train), int(val)
    for sub in ["JPEGImages", "SegmentationClass", "ImageSets/Segmentation"]:
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    palette = voc_palette()
    lists = {}
    for split, prefix, n, first in [("train", "train", train, 0), ("val", "t10k", val, train)]:
        images = read_idx(os.path.join(fashion, f"{prefix}-images-idx3-ubyte.gz"))[:n]
        labels = read_idx(os.path.join(fashion, f"{prefix}-labels-idx1-ubyte.gz"))[:n]
        ids = []
        for i, (item, label) in enumerate(zip(images, labels)):
            image_id = f"2008_{first + i:06d}"
            image, mask = scene(item, int(label), first + i)
            Image.fromarray(image).save(os.path.join(root, "JPEGImages", image_id + ".jpg"), quality=90)
            png = Image.fromarray(mask, mode="P")
            png.putpalette(palette)
            png.save(os.path.join(root, "SegmentationClass", image_id + ".png"))
            ids.append(image_id)
        lists[split] = ids
    if val == 0:
        lists["val"] = lists["train"]
    for split, ids in lists.items():
        with open(os.path.join(root, "ImageSets", "Segmentation", split + ".txt"), "w") as f:
            f.writelines(i + "\n" for i in ids)


# --- the synthetic Cityscapes fixture -------------------------------------------------------

# Fashion-MNIST label → Cityscapes label id of an evaluated class: person, pole, vegetation,
# rider, car, bicycle, truck, motorcycle, traffic sign, bus. Arbitrary but fixed.
CITY_ID_OF = [24, 17, 21, 25, 26, 33, 27, 32, 20, 28]
CITY_W, CITY_H = 96, 48


def street(item, label, index):
    """A 96×48 frame: sky over road, the item pasted on the road, an ego-vehicle band."""
    ys, xs = np.mgrid[0:CITY_H, 0:CITY_W]
    horizon = CITY_H // 3
    sky = np.stack([np.full_like(xs, 110), np.full_like(xs, 150 + index % 40), 230 - ys], -1)
    road = np.stack([70 + xs % 9, 70 + xs % 9, np.full_like(xs, 80 + index % 30)], -1)
    image = np.where((ys < horizon)[..., None], sky, road).astype(np.uint8)
    ids = np.where(ys < horizon, 23, 7).astype(np.uint8)
    left, top = 4 + index * 13 % (CITY_W - 32), 8 + index * 3 % 8
    obj = np.zeros((CITY_H, CITY_W), dtype=bool)
    obj[top:top + 28, left:left + 28] = item >= 32
    grey = item[..., None].astype(np.int32)
    patch = image[top:top + 28, left:left + 28]
    patch[:] = np.where(item[..., None] >= 32, np.concatenate([255 - grey, grey, grey // 3], -1), patch)
    ids[obj] = CITY_ID_OF[label]
    ids[CITY_H - 3:] = 1
    return image, ids


def cmd_cityscapes_fixture(fashion, root, train, val):
    from PIL import Image

    train, val = int(train), int(val)
    for split, prefix, n, cities in [("train", "train", train, ["aachen", "bochum"]),
                                     ("val", "t10k", val, ["frankfurt"])]:
        images = read_idx(os.path.join(fashion, f"{prefix}-images-idx3-ubyte.gz"))[:n]
        labels = read_idx(os.path.join(fashion, f"{prefix}-labels-idx1-ubyte.gz"))[:n]
        for i, (item, label) in enumerate(zip(images, labels)):
            city = cities[i % len(cities)]
            stem = f"{city}_{i:06d}_000019"
            image_dir = os.path.join(root, "leftImg8bit", split, city)
            label_dir = os.path.join(root, "gtFine", split, city)
            os.makedirs(image_dir, exist_ok=True)
            os.makedirs(label_dir, exist_ok=True)
            image, ids = street(item, int(label), i)
            Image.fromarray(image).save(os.path.join(image_dir, stem + "_leftImg8bit.png"))
            Image.fromarray(ids, mode="L").save(os.path.join(label_dir, stem + "_gtFine_labelIds.png"))
            Image.fromarray(image).save(os.path.join(label_dir, stem + "_gtFine_color.png"))


if __name__ == "__main__":
    commands = {"miou": cmd_miou, "voc-seg-fixture": cmd_voc_seg_fixture,
                "cityscapes-fixture": cmd_cityscapes_fixture}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](*sys.argv[2:])
