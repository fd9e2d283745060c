"""The torchvision + Pillow side of the data pipeline benchmark (`cargo bench -p kontrast-data`).

  images OUT N      N JPEGs of 640 x 480 (quality 90) cut from sklearn's two sample photos
  run DIR SECONDS   single-core images/s of decode alone, MoCo v2 (2 x 224) and Revisiting
                    (2 x 160 + 4 x 96, constrained, AutoAugment on crops 0, 2..5 with p = 0.5),
                    each including ToTensor + Normalize; prints one JSON object
"""

import importlib.util
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter


def cmd_images(out, n):
    images = Path(importlib.util.find_spec("sklearn").submodule_search_locations[0]) / "datasets" / "images"
    photos = [Image.open(images / f"{name}.jpg").convert("RGB") for name in ["china", "flower"]]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    for i in range(int(n)):
        p = photos[i % 2]
        # A random 4:3 window of at least half the photo, resized to 640 x 480.
        w = rng.randint(320, 569)
        h = w * 3 // 4
        x, y = rng.randint(0, p.width - w), rng.randint(0, p.height - h)
        img = p.crop((x, y, x + w, y + h)).resize((640, 480), Image.BILINEAR)
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        img.save(out / f"{i:04d}.jpg", quality=90)


def pipelines():
    import torch
    from torchvision import transforms as T

    torch.set_num_threads(1)
    normalize = T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])

    class GaussianBlur:  # MoCo v2's
        def __call__(self, x):
            return x.filter(ImageFilter.GaussianBlur(radius=random.uniform(0.1, 2.0)))

    def standard():
        return [
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.RandomApply([GaussianBlur()], p=0.5),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            normalize,
        ]

    moco = T.Compose([T.RandomResizedCrop(224, scale=(0.2, 1.0))] + standard())
    t_std = T.Compose(standard())
    t_aa = T.Compose([T.RandomHorizontalFlip(), T.AutoAugment(T.AutoAugmentPolicy.IMAGENET), T.ToTensor(), normalize])

    def crop_params(width, height, scale, key=None):
        area = width * height
        for _ in range(10):
            target = random.uniform(*scale) * area
            ratio = math.exp(random.uniform(math.log(3 / 4), math.log(4 / 3)))
            w, h = int(round(math.sqrt(target * ratio))), int(round(math.sqrt(target / ratio)))
            if 0 < w <= width and 0 < h <= height:
                i, j = random.randint(0, height - h), random.randint(0, width - w)
                if key is None:
                    return i, j, h, w
                ki, kj, kh, kw = key
                ox = max(0, min(j + w, kj + kw) - max(j, kj))
                oy = max(0, min(i + h, ki + kh) - max(i, ki))
                if ox * oy >= 0.1 * target:
                    return i, j, h, w
        if key is not None:
            return crop_params(width, height, scale)
        return (height - min(height, width)) // 2, (width - min(height, width)) // 2, min(height, width), min(height, width)

    def revisiting(img):
        import torchvision.transforms.functional as F

        params = [crop_params(img.width, img.height, (0.2, 1.0)) for _ in range(2)]
        params += [crop_params(img.width, img.height, (0.05, 0.14), params[1]) for _ in range(4)]
        out = []
        for c, (i, j, h, w) in enumerate(params):
            size = 160 if c < 2 else 96
            crop = F.resized_crop(img, i, j, h, w, [size, size], T.InterpolationMode.BILINEAR)
            use_aa = c != 1 and random.random() < 0.5
            out.append((t_aa if use_aa else t_std)(crop))
        return out

    return {"moco_v2": lambda img: (moco(img), moco(img)), "revisiting": revisiting}


def rate(files, fn, seconds):
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for f in files:
            fn(f)
            n += 1
            if time.perf_counter() - start >= seconds:
                break
    return n / (time.perf_counter() - start)


def cmd_run(directory, seconds):
    random.seed(0)
    seconds = float(seconds)
    files = sorted(Path(directory).glob("*.jpg"))
    load = lambda f: Image.open(f).convert("RGB")
    result = {"decode": rate(files, load, seconds)}
    for name, fn in pipelines().items():
        result[name] = rate(files, lambda f, fn=fn: fn(load(f)), seconds)
    print(json.dumps(result))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"images": cmd_images, "run": cmd_run}[cmd](*args)
