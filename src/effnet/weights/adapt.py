"""Fitting a checkpoint's first convolution to another number of input channels.

A stem trained on RGB sees a grey image as three equal channels.  For ``in_chans`` = 1 the three
RGB filters are summed (timm's ``adapt_input_conv`` does the same), so a grey image gives exactly
the output the RGB model gives on that image replicated to RGB.  For more channels the RGB filters
are repeated in turn (R, G, B, R, ...) and each copy is divided by the number of times its filter
is used, so that the filters over all channels still sum to the original ones: a grey image
replicated to ``in_chans`` channels again gives exactly the RGB model's output.  timm divides every
copy by ``in_chans / 3`` instead, which is the same when ``in_chans`` is a multiple of 3 and keeps
the sum only on average otherwise (for 4 channels it counts R twice).
"""

from __future__ import annotations

import torch


def channel_map(src: int, dst: int) -> torch.Tensor:
    """(dst, src) matrix taking ``src``-channel filters to ``dst`` channels; every column sums to 1."""
    if src < 1 or dst < 1:
        raise ValueError(f"channel counts must be positive, got {src} -> {dst}")
    m = torch.zeros(dst, src, dtype=torch.float64)
    if dst < src:  # fold: source channel s goes to channel s mod dst (all of RGB into 1 channel)
        for s in range(src):
            m[s % dst, s] = 1.0
    else:  # repeat: channel c takes source channel c mod src, shared by the copies of that channel
        for c in range(dst):
            m[c, c % src] = 1.0
        m /= m.sum(0, keepdim=True)
    return m


def adapt_stem_weight(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """A conv weight (out, src, kh, kw) refitted to ``in_chans`` input channels (see the module doc)."""
    if weight.ndim != 4:
        raise ValueError(f"expected a conv weight (out, in, kh, kw), got shape {tuple(weight.shape)}")
    src = weight.shape[1]
    if src == in_chans:
        return weight
    m = channel_map(src, in_chans).to(torch.float64)
    out = torch.einsum("ds,oshw->odhw", m, weight.to(torch.float64))
    return out.to(weight.dtype).contiguous()
