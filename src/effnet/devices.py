"""The one device resolver: ``--device`` of train, evaluate, predict, bench and profile, checked here.

A name torch cannot parse, a device kind this machine lacks, or a CUDA index past the last card is
one ``ValueError`` line that lists what exists here (``cpu``, ``cuda:0``, ...), never torch's own
multi-line RuntimeError from deep inside the first ``.to(device)``.
"""

from __future__ import annotations

import torch

from effnet.suggest import did_you_mean

_ALIASES = {"gpu": "cuda"}  # names people type that torch does not know


def available_devices() -> list[str]:
    """The devices this process can use: ``cpu``, then ``cuda:0``... and ``mps`` where present."""
    here = ["cpu"]
    if torch.cuda.is_available():
        here += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        here.append("mps")
    return here


def _listing() -> str:
    return f"available here: {', '.join(available_devices())} (or auto)"


def resolve_device(name: str | torch.device = "auto", local_rank: int | None = None) -> torch.device:
    """``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` as a ``torch.device`` that exists here.

    ``"auto"`` is CUDA when present, else the CPU.  A CUDA device without an index gets one:
    ``local_rank`` under torchrun, else the current device.
    """
    if not isinstance(name, (str, torch.device)):
        raise TypeError(f"device must be a string such as 'cpu' or 'cuda:0', got {type(name).__name__}")
    text = str(name).strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(_ALIASES.get(text, text))
    except (RuntimeError, ValueError):
        raise ValueError(f"unknown device {text!r}{did_you_mean(text, available_devices())}; "
                         f"{_listing()}") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {text!r} asked for, but torch sees no CUDA device; {_listing()}")
        index = device.index
        if index is None:
            index = local_rank if local_rank is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise ValueError(f"device cuda:{index} does not exist; {_listing()}")
        return torch.device("cuda", index)
    if device.type == "mps" and "mps" in available_devices():
        return device
    raise ValueError(f"device {text!r} is not available{did_you_mean(text, available_devices())}; {_listing()}")


def set_threads(threads: int | None) -> None:
    """``--threads``: how many CPU threads torch uses (None keeps torch's choice, one per core)."""
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"--threads must be a positive integer, got {threads!r}")
    torch.set_num_threads(threads)
