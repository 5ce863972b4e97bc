"""Write src/effnet/data/photos.npz: 15 public-domain / CC0 photographs bundled with scikit-image.

Run once by a maintainer (scikit-image is needed here only, never at run time):

    pip install scikit-image && python scripts/make_photos.py

Each photograph becomes one grey 256x256 uint8 image: the centre square of the short side,
area-resampled with PIL.  Grey, so that the proxy task is about shape and texture rather than
a colour histogram.  The licence of each image is listed in src/effnet/data/PHOTOS.md.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import skimage
import skimage.data
from PIL import Image

SIDE = 256
# (name, skimage.data function) -- all CC0 or public domain per scikit-image's docstrings.
NAMES = ("astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins", "grass", "gravel",
         "hubble_deep_field", "immunohistochemistry", "retina", "rocket", "text")


def grey_square(image: np.ndarray) -> np.ndarray:
    pil = Image.fromarray(image)
    pil = pil.convert("L")
    w, h = pil.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return np.asarray(pil.crop((left, top, left + s, top + s)).resize((SIDE, SIDE), Image.Resampling.BOX))


def main() -> None:
    images = np.stack([grey_square(getattr(skimage.data, n)()) for n in NAMES])
    out = Path(__file__).resolve().parents[1] / "src" / "effnet" / "data" / "photos.npz"
    buf = io.BytesIO()
    np.savez_compressed(buf, images=images, names=np.array(NAMES), skimage_version=np.array(skimage.__version__))
    out.write_bytes(buf.getvalue())
    print(f"wrote {out}: {images.shape} uint8, {out.stat().st_size / 1e6:.2f} MB (scikit-image {skimage.__version__})")


if __name__ == "__main__":
    main()
