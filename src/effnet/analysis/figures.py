"""The one way effnet writes a chart: matplotlib without a display, PNG bytes through the atomic writer."""

from __future__ import annotations

import io
from pathlib import Path

from effnet.io import write_atomic


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend: files only, no display needed (servers, CI).

    Imported on first use: matplotlib takes a moment to load and most commands draw nothing.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_png(fig, path: str | Path, *, dpi: int = 130) -> Path:
    """Save a matplotlib figure as a PNG at ``path`` atomically (temp file beside it, then rename), and close it."""
    try:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        return write_atomic(path, buf.getvalue())
    finally:
        pyplot().close(fig)  # pyplot keeps every open figure alive until closed
