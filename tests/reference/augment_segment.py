"""Reference outputs of the paired segmentation transforms, computed with torchvision + Pillow.

Called by the `kontrast-data` segmentation tests through the project virtualenv; data is
exchanged as `.npy` (decoded pixels):

  ops SPEC OUTDIR IMAGE.npy MASK.npy   apply each line of SPEC to the image (RGB) and to the mask
                                       (as an `L` and as a `P` image) -> OUTDIR/<i>_{image,mask_L,mask_P}.npy
  masks OUTDIR                         label-mask PNGs (VOC palette 8-bit, 4-bit palette, greyscale,
                                       RGB) and what Pillow reads from each (`np.array(Image.open(f))`)
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image

IGNORE = 255


def voc_palette():
    """The VOC colour map (bit-interleaved class index)."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def as_mask(a, mode):
    m = Image.fromarray(np.ascontiguousarray(a, dtype=np.uint8), "L")
    if mode == "P":
        m = Image.fromarray(np.asarray(m), "P")
        m.putpalette(voc_palette())
    return m


def apply(F, I, img, mask, words, is_mask):
    """One operation on the image (`is_mask` False) or on the mask, with the mask's rules:
    nearest interpolation and IGNORE fill."""
    name, args = words[0], words[1:]
    if name == "resize":
        w, h = int(args[0]), int(args[1])
        interp = I.NEAREST if is_mask else {"bilinear": I.BILINEAR, "bicubic": I.BICUBIC}[args[2]]
        return F.resize(img if not is_mask else mask, [h, w], interp)
    if name == "hflip":
        return F.hflip(mask if is_mask else img)
    if name == "padcrop":
        left, top, w, h = (int(x) for x in args[:4])
        fill = IGNORE if is_mask else tuple(int(x) for x in args[4:7])
        x = mask if is_mask else img
        pl, pt = max(0, -left), max(0, -top)
        pr, pb = max(0, left + w - x.width), max(0, top + h - x.height)
        if pl or pt or pr or pb:
            x = F.pad(x, [pl, pt, pr, pb], fill=fill)
        return F.crop(x, top + pt, left + pl, h, w)
    if name == "center":
        w, h = int(args[0]), int(args[1])
        if not is_mask:
            return F.center_crop(img, [h, w])
        # torchvision pads with 0 here; invert the labels around it so the padding reads as
        # IGNORE and the content is unchanged.
        inv = Image.fromarray(255 - np.asarray(mask), "L")
        return Image.fromarray(255 - np.asarray(F.center_crop(inv, [h, w])), "L")
    if name == "affine":
        angle, scale = float(args[0]), float(args[1])
        if is_mask:
            return F.affine(mask, angle=angle, translate=[0, 0], scale=scale, shear=[0.0, 0.0],
                            interpolation=I.NEAREST, fill=IGNORE)
        interp = {"bilinear": I.BILINEAR, "bicubic": I.BICUBIC}[args[2]]
        fill = [int(x) for x in args[3:6]]
        return F.affine(img, angle=angle, translate=[0, 0], scale=scale, shear=[0.0, 0.0],
                        interpolation=interp, fill=fill)
    raise ValueError(f"unknown operation {name}")


def cmd_ops(spec, outdir, image, mask):
    import torchvision.transforms.functional as F
    from torchvision.transforms import InterpolationMode as I

    outdir = Path(outdir)
    img = Image.fromarray(np.load(image), "RGB")
    m = np.load(mask)
    for i, line in enumerate(Path(spec).read_text().splitlines()):
        words = line.split()
        out = apply(F, I, img, None, words, False)
        np.save(outdir / f"{i}_image.npy", np.asarray(out.convert("RGB"), dtype=np.uint8))
        for mode in ["L", "P"]:
            if mode == "P" and words[0] == "center":
                continue
            out = apply(F, I, None, as_mask(m, mode), words, True)
            assert out.mode == mode, (line, out.mode)
            np.save(outdir / f"{i}_mask_{mode}.npy", np.asarray(out, dtype=np.uint8))


def cmd_masks(outdir):
    outdir = Path(outdir)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 21, size=(37, 53)).astype(np.uint8)
    a[5:9, :] = IGNORE  # VOC draws object outlines with 255
    voc = Image.fromarray(a, "P")
    voc.putpalette(voc_palette())
    voc.save(outdir / "voc.png")
    small = Image.fromarray(rng.integers(0, 16, size=(19, 23)).astype(np.uint8), "P")
    small.putpalette(voc_palette()[: 16 * 3])
    small.save(outdir / "four_bit.png", bits=4)
    Image.fromarray(rng.integers(0, 19, size=(17, 29)).astype(np.uint8), "L").save(outdir / "gray.png")
    voc.convert("RGB").save(outdir / "rgb.png")
    for name in ["voc", "four_bit", "gray"]:
        np.save(outdir / f"{name}.npy", np.asarray(Image.open(outdir / f"{name}.png"), dtype=np.uint8))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"ops": cmd_ops, "masks": cmd_masks}[cmd](*args)
