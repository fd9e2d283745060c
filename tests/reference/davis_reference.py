#!/usr/bin/env python3
"""Reference for the DAVIS-2017 semi-supervised scores, written from the published definition
(davis2017-evaluation: `metrics.py` db_eval_iou, f_measure, _seg2bmap; `utils.py`
db_statistics; `evaluation.py` _evaluate_semisupervised and the first/last-frame rule;
`evaluation_method.py` J&F-Mean), with numpy only: skimage's `disk` and OpenCV's `dilate` are
re-implemented below with their documented semantics.

Usage:
  davis_reference.py metrics IN.json OUT.json
      IN: {"pairs": [{"height", "width", "gt": [0/1 per pixel], "pred": [...]}],
           "sequences": [{"height", "width", "gt": [[label per pixel] per frame],
                          "pred": [[...] per frame]}]}
      OUT: {"pairs": [{"J", "F"}], "sequences": [{"J": [[per frame] per object], "F": ...,
            "J_M": [per object], "F_M": [...]}], "summary": {"J-Mean", "F-Mean", "J&F-Mean"}}
  davis_reference.py layer3 IN.safetensors ARCH OUT.safetensors
      IN holds a torchvision ARCH (resnet18 | resnet50) state dict under `encoder_q.` (its fc
      ignored) and `image` (N×3×H×W); writes `features`: the image through the network as
      videowalk modifies it for label propagation (every convolution of layer3 and layer4 at
      stride 1, layer4, avgpool and fc removed), L2-normalised per location.
  davis_reference.py fixture FASHION_MNIST_DIR ROOT
      Writes a synthetic DAVIS-2017 root (JPEGImages/480p, Annotations/480p, ImageSets/2017/
      val.txt) of two short sequences: real Fashion-MNIST items (t10k split) pasted on a
      textured background, with exact palette-PNG masks. Not DAVIS content.
"""
import gzip
import json
import os
import sys

import numpy as np

BOUND_TH = 0.008


# --- the published metrics -------------------------------------------------------------------

def db_eval_iou(annotation, segmentation):
    annotation = annotation.astype(bool)
    segmentation = segmentation.astype(bool)
    inters = np.sum(segmentation & annotation, axis=(-2, -1))
    union = np.sum(segmentation | annotation, axis=(-2, -1))
    j = inters / np.where(union == 0, 1, union)
    return np.where(np.isclose(union, 0), 1.0, j)


def seg2bmap(seg):
    seg = seg.astype(bool)
    h, w = seg.shape
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = seg ^ e | seg ^ s | seg ^ se
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = 0
    return b


def disk(radius):
    """skimage.morphology.disk: the offsets with x² + y² ≤ r²."""
    r = int(radius)
    grid = np.arange(-r, r + 1)
    x, y = np.meshgrid(grid, grid)
    return (x ** 2 + y ** 2) <= radius ** 2


def dilate(image, kernel):
    """cv2.dilate of a binary image with a centred kernel; pixels outside the image never
    contribute (OpenCV's default border for dilation)."""
    h, w = image.shape
    r = kernel.shape[0] // 2
    padded = np.zeros((h + 2 * r, w + 2 * r), dtype=bool)
    padded[r:r + h, r:r + w] = image.astype(bool)
    out = np.zeros((h, w), dtype=bool)
    for dy, dx in np.argwhere(kernel):
        out |= padded[dy:dy + h, dx:dx + w]
    return out


def f_measure(foreground_mask, gt_mask, bound_th=BOUND_TH):
    bound_pix = bound_th if bound_th >= 1 else \
        np.ceil(bound_th * np.linalg.norm(foreground_mask.shape))
    fg_boundary = seg2bmap(foreground_mask)
    gt_boundary = seg2bmap(gt_mask)
    fg_dil = dilate(fg_boundary, disk(bound_pix))
    gt_dil = dilate(gt_boundary, disk(bound_pix))
    gt_match = gt_boundary * fg_dil
    fg_match = fg_boundary * gt_dil
    n_fg = np.sum(fg_boundary)
    n_gt = np.sum(gt_boundary)
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1, 0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0, 1
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1, 1
    else:
        precision = np.sum(fg_match) / float(n_fg)
        recall = np.sum(gt_match) / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def db_eval_boundary(annotation, segmentation):
    return np.array([f_measure(segmentation[t], annotation[t])
                     for t in range(annotation.shape[0])])


def one_hot(masks, num_objects):
    tmp = np.ones((num_objects, *masks.shape)) * np.arange(1, num_objects + 1)[:, None, None, None]
    return (tmp == masks[None, ...]) > 0


def evaluate_sequence(gt, pred):
    """gt, pred: (frames, H, W) label maps of a whole sequence. Returns per object the J and F
    of every scored frame."""
    masks = gt.copy()
    masks[masks == 255] = 0  # void is background in the semi-supervised task
    num_objects = int(np.max(masks[0, ...]))
    all_gt = one_hot(masks, num_objects)[:, 1:-1]
    res = pred[1:-1]
    all_res = one_hot(res, int(np.max(res)))
    if all_res.shape[0] > all_gt.shape[0]:
        raise ValueError("a prediction holds an index higher than the number of objects")
    if all_res.shape[0] < all_gt.shape[0]:
        padding = np.zeros((all_gt.shape[0] - all_res.shape[0], *all_res.shape[1:]), dtype=bool)
        all_res = np.concatenate([all_res, padding], axis=0)
    j = np.zeros(all_gt.shape[:2])
    f = np.zeros(all_gt.shape[:2])
    for o in range(all_gt.shape[0]):
        j[o] = db_eval_iou(all_gt[o], all_res[o])
        f[o] = db_eval_boundary(all_gt[o], all_res[o])
    return j, f


def cmd_metrics(src, dst):
    with open(src) as fh:
        data = json.load(fh)
    pairs = []
    for p in data["pairs"]:
        shape = (p["height"], p["width"])
        gt = np.array(p["gt"], dtype=bool).reshape(shape)
        pred = np.array(p["pred"], dtype=bool).reshape(shape)
        pairs.append({"J": float(db_eval_iou(gt, pred)), "F": f_measure(pred, gt)})
    sequences, all_j, all_f = [], [], []
    for s in data["sequences"]:
        shape = (-1, s["height"], s["width"])
        gt = np.array(s["gt"], dtype=np.uint8).reshape(shape)
        pred = np.array(s["pred"], dtype=np.uint8).reshape(shape)
        j, f = evaluate_sequence(gt, pred)
        j_m = [float(np.nanmean(v)) for v in j]
        f_m = [float(np.nanmean(v)) for v in f]
        all_j += j_m
        all_f += f_m
        sequences.append({"J": j.tolist(), "F": f.tolist(), "J_M": j_m, "F_M": f_m})
    summary = {"J-Mean": float(np.mean(all_j)), "F-Mean": float(np.mean(all_f))}
    summary["J&F-Mean"] = (summary["J-Mean"] + summary["F-Mean"]) / 2.0
    with open(dst, "w") as fh:
        json.dump({"pairs": pairs, "sequences": sequences, "summary": summary}, fh)


# --- videowalk's layer3 features ----------------------------------------------------------------

def cmd_layer3(src, arch, dst):
    import torch
    import torchvision
    from safetensors.torch import load_file, save_file

    tensors = load_file(src)
    net = getattr(torchvision.models, arch)()
    state = {k[len("encoder_q."):]: v for k, v in tensors.items()
             if k.startswith("encoder_q.") and not k.startswith("encoder_q.fc.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith("fc.") for k in missing), (missing, unexpected)
    # videowalk's ResNet.modify(remove_layers=['layer4'])
    for layer in [net.layer3, net.layer4]:
        for m in layer.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.stride = tuple(1 for _ in m.stride)
    net.eval()
    with torch.no_grad():
        x = tensors["image"]
        x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        x = net.layer3(net.layer2(net.layer1(x)))
        features = torch.nn.functional.normalize(x, dim=1)
    save_file({"features": features.contiguous()}, dst)


# --- the synthetic fixture -------------------------------------------------------------------

HEIGHT, WIDTH = 96, 128
# name → (frames, objects); an object is (t10k item, RGB tint, start (y, x), step (dy, dx) per
# frame). Later objects are drawn over earlier ones; a pixel's id is the topmost object there.
SEQUENCES = {
    "static-pair": (5, [(0, (230, 120, 60), (21, 6), (0, 0)),
                        (2, (70, 140, 240), (25, 67), (0, 0))]),
    "moving-pair": (8, [(1, (240, 200, 70), (4, 4), (2, 5)),
                        (4, (90, 220, 120), (32, 68), (1, -3))]),
}
SCALE = 2         # items are drawn at 56 × 56
THRESHOLD = 64    # item pixels at least this bright belong to the object


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def davis_palette():
    """The DAVIS/PASCAL colour map: index bits interleaved into R, G, B from the top bit."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def background():
    """A fixed texture: a gradient with seeded noise (the camera does not move)."""
    rng = np.random.default_rng(2017)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = 70 + 40 * np.sin(x / 9.0) * np.cos(y / 13.0)
    noise = rng.integers(-12, 13, size=(HEIGHT, WIDTH, 3))
    return np.clip(base[..., None] + noise, 0, 255)


def cmd_fixture(fashion, root):
    from PIL import Image

    items = read_idx(os.path.join(fashion, "t10k-images-idx3-ubyte.gz"))
    bg = background()
    palette = davis_palette()
    with_names = []
    for name, (frames, objects) in SEQUENCES.items():
        image_dir = os.path.join(root, "JPEGImages", "480p", name)
        mask_dir = os.path.join(root, "Annotations", "480p", name)
        os.makedirs(image_dir, exist_ok=True)
        os.makedirs(mask_dir, exist_ok=True)
        for t in range(frames):
            image = bg.copy()
            mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
            for obj_id, (item, tint, (y0, x0), (dy, dx)) in enumerate(objects, start=1):
                pixels = np.kron(items[item].astype(np.float64), np.ones((SCALE, SCALE)))
                inside = pixels >= THRESHOLD
                y, x = y0 + dy * t, x0 + dx * t
                h, w = pixels.shape
                assert 0 <= y and y + h <= HEIGHT and 0 <= x and x + w <= WIDTH, name
                colour = pixels[..., None] / 255.0 * np.array(tint, dtype=np.float64)
                region = image[y:y + h, x:x + w]
                region[inside] = colour[inside]
                mask[y:y + h, x:x + w][inside] = obj_id
            Image.fromarray(np.uint8(np.round(image))).save(
                os.path.join(image_dir, f"{t:05d}.jpg"), quality=95)
            annotation = Image.frombytes("P", (WIDTH, HEIGHT), mask.tobytes())
            annotation.putpalette(palette)
            annotation.save(os.path.join(mask_dir, f"{t:05d}.png"))
        with_names.append(name)
    os.makedirs(os.path.join(root, "ImageSets", "2017"), exist_ok=True)
    with open(os.path.join(root, "ImageSets", "2017", "val.txt"), "w") as fh:
        fh.writelines(n + "\n" for n in with_names)


if __name__ == "__main__":
    commands = {"metrics": cmd_metrics, "layer3": cmd_layer3, "fixture": cmd_fixture}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](*sys.argv[2:])
