#!/usr/bin/python3
"""Redoes bitrobust's CIFAR-10 training augmentation (crop with mean fill, flip, AutoAugment) with
Pillow 9.4 on real CIFAR-10 images, from the random choices our kernel made, and compares the bytes.
Run by scripts/check_autoaugment_pipeline.sh, which builds the dump tool and prepares the inputs.
Usage: check_autoaugment_pipeline.py IMAGES.u8 DUMP_PREFIX [PREVIEW.png]
With PREVIEW.png, also writes the first 64 originals next to our augmented images (8 x 8 grids,
scaled 2x) to look at.
"""
import os
import sys

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_autoaugment_fixture import FILL, POLICY, RANGES, apply  # noqa: E402


def grid(chw_images):
    n = len(chw_images)
    out = np.zeros((8 * 34, 8 * 34, 3), dtype=np.uint8)
    for k in range(n):
        y, x = divmod(k, 8)
        out[y * 34 + 1:y * 34 + 33, x * 34 + 1:x * 34 + 33] = chw_images[k].transpose(1, 2, 0)
    return out


def write_preview(originals, augmented, path):
    both = np.concatenate([grid(originals), np.full((8 * 34, 10, 3), 255, np.uint8), grid(augmented)], axis=1)
    Image.fromarray(both).resize((both.shape[1] * 2, both.shape[0] * 2), Image.NEAREST).save(path)
    print("preview written to", path)


def main():
    images = np.fromfile(sys.argv[1], dtype=np.uint8).reshape(-1, 3, 32, 32)
    ours = np.fromfile(sys.argv[2] + ".u8", dtype=np.uint8).reshape(-1, 3, 32, 32)
    choices = [list(map(int, line.split())) for line in open(sys.argv[2] + ".txt")]
    mismatched, applied = [], 0
    for i, (dy, dx, flip, sub, apply0, apply1, neg0, neg1) in enumerate(choices):
        img = Image.fromarray(np.ascontiguousarray(images[i].transpose(1, 2, 0)), "RGB")
        padded = Image.new("RGB", (40, 40), FILL)  # torchvision RandomCrop(32, padding=4, fill=FILL)
        padded.paste(img, (4, 4))
        img = padded.crop((4 + dx, 4 + dy, 4 + dx + 32, 4 + dy + 32))
        if flip:
            img = ImageOps.mirror(img)
        p1, n1, i1, p2, n2, i2 = POLICY[sub]
        if apply0:
            img = apply(img, n1, RANGES[n1][i1], -1 if neg0 else 1)
        if apply1:
            img = apply(img, n2, RANGES[n2][i2], -1 if neg1 else 1)
        applied += apply0 + apply1
        expected = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
        if not np.array_equal(expected, ours[i]):
            mismatched.append((i, sub, apply0, apply1, int((expected != ours[i]).sum())))
    print(f"{len(choices)} images, {applied} operations applied, {len(mismatched)} differ from Pillow")
    if len(sys.argv) > 3:
        write_preview(images[:64], ours[:64], sys.argv[3])
    for m in mismatched[:10]:
        print("  image %d sub-policy %d applied %d/%d: %d bytes differ" % m)
    return 1 if mismatched else 0


if __name__ == "__main__":
    sys.exit(main())
