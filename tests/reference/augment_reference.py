"""Reference outputs of the data pipeline's transforms, computed with torchvision + Pillow.

Called by the `kontrast-data` tests through the project virtualenv. Data is exchanged through
`.npy` files (decoded pixels, so decoder differences never enter a comparison):

  fixtures OUT            sample photos (sklearn) as .npy / .png / .jpg (q90), and malformed files
  ops SPEC OUTDIR IN.npy...  apply each line of SPEC (one operation) to each IN -> OUTDIR/<stem>_<i>.npy
  crops W H N LO HI OUT   N draws of RandomResizedCrop.get_params -> OUT (N x 2: area ratio, w/h)
  decode FILE OUT.npy     Image.open(FILE).convert("RGB")
"""

import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

# torchvision is imported only by the commands that need it (it takes seconds to import).
F = InterpolationMode = RandomResizedCrop = None


def _torchvision():
    global F, InterpolationMode, RandomResizedCrop
    import torchvision.transforms.functional as F  # noqa: F811
    from torchvision.transforms import InterpolationMode, RandomResizedCrop  # noqa: F811


def pil(a):
    return Image.fromarray(np.ascontiguousarray(a, dtype=np.uint8), "RGB")


def apply(img, words):
    """One operation, spelled `name arg...` (the Rust side writes the same spelling)."""
    name, args = words[0], [float(w) for w in words[1:]]
    if name == "posterize":
        return F.posterize(img, int(args[0]))
    if name == "solarize":
        return F.solarize(img, args[0])
    if name == "invert":
        return F.invert(img)
    if name == "equalize":
        return F.equalize(img)
    if name == "autocontrast":
        return F.autocontrast(img)
    if name == "rotate":
        return F.rotate(img, args[0], interpolation=InterpolationMode.NEAREST, fill=None)
    if name == "shear_x":
        # The method's AutoAugment: shear=[degrees(m), 0] about the image centre.
        return F.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=[args[0], 0.0],
                        interpolation=InterpolationMode.NEAREST, fill=None)
    if name == "color":
        return F.adjust_saturation(img, args[0])
    if name == "contrast":
        return F.adjust_contrast(img, args[0])
    if name == "sharpness":
        return F.adjust_sharpness(img, args[0])
    if name == "brightness":
        return F.adjust_brightness(img, args[0])
    if name == "hue":
        return F.adjust_hue(img, args[0])
    if name == "grayscale":
        return F.rgb_to_grayscale(img, num_output_channels=3)
    if name == "hflip":
        return F.hflip(img)
    if name == "blur":
        return img.filter(ImageFilter.GaussianBlur(radius=args[0]))
    if name == "jitter":
        # order (4 ints) then brightness, contrast, saturation, hue, as ColorJitter.forward.
        order, (b, c, s, h) = [int(x) for x in args[:4]], args[4:]
        for fn_id in order:
            img = [lambda i: F.adjust_brightness(i, b), lambda i: F.adjust_contrast(i, c),
                   lambda i: F.adjust_saturation(i, s), lambda i: F.adjust_hue(i, h)][fn_id](img)
        return img
    if name == "resized_crop":
        top, left, h, w, size = (int(x) for x in args)
        return F.resized_crop(img, top, left, h, w, [size, size], InterpolationMode.BILINEAR)
    if name == "eval":
        resize, crop = (int(x) for x in args)
        return F.center_crop(F.resize(img, resize, InterpolationMode.BILINEAR), crop)
    if name == "resize":
        size = int(args[0])
        return F.resize(img, [size, size], InterpolationMode.BILINEAR)
    raise ValueError(f"unknown operation {name}")


def cmd_ops(spec, outdir, *inputs):
    _torchvision()
    outdir = Path(outdir)
    lines = Path(spec).read_text().splitlines()
    for src in inputs:
        img = np.load(src)
        for i, line in enumerate(lines):
            out = apply(pil(img), line.split())
            np.save(outdir / f"{Path(src).stem}_{i}.npy", np.asarray(out.convert("RGB"), dtype=np.uint8))


def cmd_crops(w, h, n, lo, hi, out):
    _torchvision()
    import torch

    torch.manual_seed(0)
    img = Image.new("RGB", (int(w), int(h)))
    rows = []
    for _ in range(int(n)):
        i, j, hh, ww = RandomResizedCrop.get_params(img, (float(lo), float(hi)), (3 / 4, 4 / 3))
        rows.append((hh * ww / (int(w) * int(h)), ww / hh))
    np.save(out, np.array(rows, dtype=np.float64))


def cmd_decode(src, out):
    np.save(out, np.asarray(Image.open(src).convert("RGB"), dtype=np.uint8))


def cmd_fixtures(out):
    import importlib.util

    # sklearn's two sample photos (what `load_sample_images()` returns), read without importing
    # sklearn itself, which is slow.
    images = Path(importlib.util.find_spec("sklearn").submodule_search_locations[0]) / "datasets" / "images"
    out = Path(out)
    photos = [np.asarray(Image.open(images / f"{n}.jpg").convert("RGB")) for n in ["china", "flower"]]
    for name, a in zip(["china", "flower"], photos):
        np.save(out / f"{name}.npy", a)
        # Small crops keep the per-pixel comparisons fast.
        np.save(out / f"{name}_small.npy", np.ascontiguousarray(a[100:196, 200:328]))
        Image.fromarray(a).save(out / f"{name}.png")
        Image.fromarray(a).save(out / f"{name}.jpg", quality=90)
    a = photos[0]
    # Malformed and unusual inputs.
    jpg = (out / "china.jpg").read_bytes()
    bad = out / "malformed"
    bad.mkdir(exist_ok=True)
    (bad / "truncated.jpg").write_bytes(jpg[: len(jpg) // 3])
    (bad / "zero.jpg").write_bytes(b"")
    (bad / "text.jpg").write_text("this is not an image\n")
    # A valid JPEG header declaring 65000 x 65000 pixels, body cut off.
    hdr = bytearray(jpg[:2000])
    sof = hdr.find(b"\xff\xc0")
    hdr[sof + 5 : sof + 9] = (65000).to_bytes(2, "big") + (65000).to_bytes(2, "big")
    (bad / "huge.jpg").write_bytes(bytes(hdr))
    odd = out / "odd"
    odd.mkdir(exist_ok=True)
    Image.fromarray(a[:1, :1]).save(odd / "one_pixel.png")
    Image.fromarray(a[:1, :1]).save(odd / "one_pixel.jpg", quality=90)
    Image.fromarray(a[:200, :300]).convert("CMYK").save(odd / "cmyk.jpg", quality=90)
    Image.fromarray(a[:200, :300]).convert("L").save(odd / "gray.jpg", quality=90)
    rgb16 = (a[:120, :160].astype(np.uint16) * 257)
    import zlib, struct  # 16-bit RGB PNG written by hand (Pillow cannot write RGB;16).

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rgb16)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 160, 120, 16, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    (odd / "rgb16.png").write_bytes(png)
    np.save(odd / "rgb16.npy", a[:120, :160])
    gray16 = Image.fromarray(a[:50, :70, 0].astype(np.uint16) * 257)
    gray16.save(odd / "gray16.png")
    Image.fromarray(a[:80, :90]).convert("P", palette=Image.Palette.ADAPTIVE).save(odd / "palette.png")
    Image.fromarray(a[:80, :90]).convert("RGBA").save(odd / "rgba.png")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"ops": cmd_ops, "crops": cmd_crops, "decode": cmd_decode, "fixtures": cmd_fixtures}[cmd](*args)
