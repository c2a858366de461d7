#!/usr/bin/python3
"""Writes tests/kernels/autoaugment_pil_digests.inc: digests of Pillow's results for every
operation of the CIFAR-10 AutoAugment policy, as the reference applies them (its SubPolicy:
Pillow ops on RGB images, translate/shear filled with the data mean, rotate through RGBA and a
composite with grey 128), on five synthetic 32x32 images, singly and as whole sub-policies.

Our AutoAugment kernels must reproduce these bit for bit (tests/kernels/autoaugment_test.cpp).
Run with Debian 12's python3-pil (Pillow 9.4.0) and python3-numpy:
    /usr/bin/python3 scripts/make_autoaugment_fixture.py > tests/kernels/autoaugment_pil_digests.inc
With --dump DIR it also writes every output image as raw CHW bytes, for debugging a mismatch.
"""
import sys

import numpy as np
import PIL
from PIL import Image, ImageEnhance, ImageOps

H = W = 32
FILL = (125, 122, 113)  # int(255 * mean) of the reference's CIFAR-10 mean

# The reference's CIFAR10Policy: (p1, op1, magnitude index 1, p2, op2, magnitude index 2).
POLICY = [
    (0.1, "invert", 7, 0.2, "contrast", 6), (0.7, "rotate", 2, 0.3, "translateX", 9),
    (0.8, "sharpness", 1, 0.9, "sharpness", 3), (0.5, "shearY", 8, 0.7, "translateY", 9),
    (0.5, "autocontrast", 8, 0.9, "equalize", 2), (0.2, "shearY", 7, 0.3, "posterize", 7),
    (0.4, "color", 3, 0.6, "brightness", 7), (0.3, "sharpness", 9, 0.7, "brightness", 9),
    (0.6, "equalize", 5, 0.5, "equalize", 1), (0.6, "contrast", 7, 0.6, "sharpness", 5),
    (0.7, "color", 7, 0.5, "translateX", 8), (0.3, "equalize", 7, 0.4, "autocontrast", 8),
    (0.4, "translateY", 3, 0.2, "sharpness", 6), (0.9, "brightness", 6, 0.2, "color", 8),
    (0.5, "solarize", 2, 0.0, "invert", 3), (0.2, "equalize", 0, 0.6, "autocontrast", 0),
    (0.2, "equalize", 8, 0.6, "equalize", 4), (0.9, "color", 9, 0.6, "equalize", 6),
    (0.8, "autocontrast", 4, 0.2, "solarize", 8), (0.1, "brightness", 3, 0.7, "color", 0),
    (0.4, "solarize", 5, 0.9, "autocontrast", 3), (0.9, "translateY", 9, 0.7, "translateY", 9),
    (0.9, "autocontrast", 2, 0.8, "solarize", 3), (0.8, "equalize", 8, 0.1, "invert", 3),
    (0.7, "translateY", 9, 0.9, "autocontrast", 1),
]

RANGES = {
    "shearX": np.linspace(0, 0.3, 10), "shearY": np.linspace(0, 0.3, 10),
    "translateX": np.linspace(0, 150 / 331, 10), "translateY": np.linspace(0, 150 / 331, 10),
    "rotate": np.linspace(0, 30, 10), "color": np.linspace(0.0, 0.9, 10),
    "posterize": np.round(np.linspace(8, 4, 10), 0).astype(int), "solarize": np.linspace(256, 0, 10),
    "contrast": np.linspace(0.0, 0.9, 10), "sharpness": np.linspace(0.0, 0.9, 10),
    "brightness": np.linspace(0.0, 0.9, 10), "autocontrast": [0] * 10, "equalize": [0] * 10, "invert": [0] * 10,
}
SIGNED = {"shearX", "shearY", "translateX", "translateY", "color", "contrast", "sharpness", "brightness"}


def rotate_with_fill(img, magnitude):
    rot = img.convert("RGBA").rotate(magnitude)
    return Image.composite(rot, Image.new("RGBA", rot.size, (128,) * 4), rot).convert(img.mode)


def apply(img, name, magnitude, sign):
    if name == "shearX":
        return img.transform(img.size, Image.AFFINE, (1, magnitude * sign, 0, 0, 1, 0), Image.BICUBIC, fillcolor=FILL)
    if name == "shearY":
        return img.transform(img.size, Image.AFFINE, (1, 0, 0, magnitude * sign, 1, 0), Image.BICUBIC, fillcolor=FILL)
    if name == "translateX":
        return img.transform(img.size, Image.AFFINE, (1, 0, magnitude * img.size[0] * sign, 0, 1, 0), fillcolor=FILL)
    if name == "translateY":
        return img.transform(img.size, Image.AFFINE, (1, 0, 0, 0, 1, magnitude * img.size[1] * sign), fillcolor=FILL)
    if name == "rotate":
        return rotate_with_fill(img, magnitude)
    if name == "color":
        return ImageEnhance.Color(img).enhance(1 + magnitude * sign)
    if name == "posterize":
        return ImageOps.posterize(img, int(magnitude))
    if name == "solarize":
        return ImageOps.solarize(img, magnitude)
    if name == "contrast":
        return ImageEnhance.Contrast(img).enhance(1 + magnitude * sign)
    if name == "sharpness":
        return ImageEnhance.Sharpness(img).enhance(1 + magnitude * sign)
    if name == "brightness":
        return ImageEnhance.Brightness(img).enhance(1 + magnitude * sign)
    if name == "autocontrast":
        return ImageOps.autocontrast(img)
    if name == "equalize":
        return ImageOps.equalize(img)
    if name == "invert":
        return ImageOps.invert(img)
    raise ValueError(name)


def hash8(i):
    return ((i * 2654435761) & 0xFFFFFFFF) >> 24


def synthetic_image(k):
    """Image k as CHW uint8; the same formulas are in tests/kernels/autoaugment_test.cpp."""
    out = np.zeros((3, H, W), dtype=np.uint8)
    for c in range(3):
        for y in range(H):
            for x in range(W):
                i = (k * 3 + c) * H * W + y * W + x
                if k == 0:    # full-range noise
                    v = hash8(i)
                elif k == 1:  # ramps with a little noise in [40, 199]
                    v = 40 + (x * 4 + y * 2 + c * 17 + (hash8(i) & 15)) % 160
                elif k == 2:  # blocks of 7 grey levels
                    v = 60 + ((x // 8) + (y // 8) * 4 + c) % 7 * 9
                elif k == 3:  # two levels, 70% / 30%
                    v = 30 if (x + y * 3 + c) % 10 < 7 else 200
                else:         # constant
                    v = 77
                out[c, y, x] = v
    return out


def digest(chw):
    h = 0xCBF29CE484222325
    for b in chw.tobytes():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def to_pil(chw):
    return Image.fromarray(np.ascontiguousarray(chw.transpose(1, 2, 0)), "RGB")


def to_chw(img):
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))


def main():
    dump = sys.argv[sys.argv.index("--dump") + 1] if "--dump" in sys.argv else None
    images = [synthetic_image(k) for k in range(5)]
    print(f"// Generated by scripts/make_autoaugment_fixture.py with Pillow {PIL.__version__} and numpy {np.__version__}.")
    print("// Do not edit. Digests are FNV-1a 64 over the CHW bytes of the result.")
    print("// kSingleOps: {operation, magnitude index, sign, image, digest}")
    print("const PilSingleOp kSingleOps[] = {")
    cases = sorted({(name, idx) for p in POLICY for name, idx in ((p[1], p[2]), (p[4], p[5]))})
    for name, idx in cases:
        for sign in ((1, -1) if name in SIGNED else (1,)):
            for k, image in enumerate(images):
                out = to_chw(apply(to_pil(image), name, RANGES[name][idx], sign))
                if dump:
                    out.tofile(f"{dump}/{name}_{idx}_{sign}_{k}.chw")
                print(f'    {{"{name}", {idx}, {sign}, {k}, 0x{digest(out):016x}ull}},')
    print("};")
    print("// kSubPolicies: {sub-policy, sign of op 1, sign of op 2, image, digest}, both ops applied")
    print("const PilSubPolicy kSubPolicies[] = {")
    for s, (p1, n1, i1, p2, n2, i2) in enumerate(POLICY):
        for s1 in (1, -1):
            for s2 in (1, -1):
                for k, image in enumerate(images):
                    img = apply(apply(to_pil(image), n1, RANGES[n1][i1], s1), n2, RANGES[n2][i2], s2)
                    print(f"    {{{s}, {s1}, {s2}, {k}, 0x{digest(to_chw(img)):016x}ull}},")
    print("};")


if __name__ == "__main__":
    main()
