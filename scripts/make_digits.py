"""Write the embedded digits data set, ``src/effnet/data/digits.npz``, from scikit-learn's copy.

Run once (``python scripts/make_digits.py``); the output is committed so ``effnet train`` needs no
scikit-learn and no download.  Source: the UCI "Optical Recognition of Handwritten Digits" data set
(E. Alpaydin, C. Kaynak, 1998; https://doi.org/10.24432/C50P49), licensed CC BY 4.0, as shipped in
``sklearn.datasets.load_digits`` (its 1,797-image test part).  The file keeps the pixels exactly as
published: 8x8 images with integer values 0..16 (16 = full ink), and the digit 0..9 of each.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

OUT = Path(__file__).resolve().parents[1] / "src" / "effnet" / "data" / "digits.npz"


def main() -> None:
    bunch = load_digits()
    images = bunch.images.astype(np.uint8)  # values are integers 0..16, so uint8 loses nothing
    assert np.array_equal(images, bunch.images), "digits pixels are not integers any more"
    targets = bunch.target.astype(np.uint8)
    tmp = OUT.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, images=images, targets=targets)
    tmp.replace(OUT)
    digest = hashlib.sha256(OUT.read_bytes()).hexdigest()[:16]
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(images)} images, sha256 {digest}...)")


if __name__ == "__main__":
    main()
