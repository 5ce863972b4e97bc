"""One candidate: train it on the proxy with the search's fixed recipe, count it, time it.

:func:`run_candidate` is the function every executor runs (a top-level function, so a process
pool and Ray can ship it).  Its result is also written to ``<output>/candidates/<id>.json``, so a
killed search skips what finished; a candidate killed mid-training resumes from its last epoch.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from effnet.analysis.profile import profile
from effnet.analysis.timing import time_fn
from effnet.config import ModelConfig
from effnet.io import write_atomic
from effnet.model import EfficientConvNet
from effnet.train import checkpoint as ckpt
from effnet.train.config import TrainConfig
from effnet.train.run import train


@dataclass(frozen=True)
class SearchRecipe:
    """The one training recipe every candidate of a search gets (same seed, same budget)."""

    data: str = "photos"  # "photos" (the shipped proxy), "digits", or an image folder
    epochs: int = 8  # the fixed budget: the base reaches ~60% on the photos proxy (docs/search.md)
    batch_size: int = 32
    optimizer: str = "adamw"
    lr: float = 0.004
    warmup_epochs: float = 0.5
    label_smoothing: float = 0.1
    seed: int = 0  # initial weights, data order; the same for every candidate
    latency_batch: int = 1  # batch of the measured inference latency
    latency_runs: int = 20


def candidate_id(width: float, depth: float, resolution: int, spec_key: str | None = None) -> str:
    """A name fixed by what is trained, so the same network is trained once however many roles it has."""
    if spec_key:
        return f"spec-{spec_key}_r{resolution}"
    return f"w{width:.4f}_d{depth:.4f}_r{resolution}"


def job(*, output: str, base: str, width: float, depth: float, resolution: int, recipe: SearchRecipe,
        spec: dict | None = None, spec_key: str | None = None) -> dict:
    """The JSON-ready description of one candidate for an executor."""
    return {"id": candidate_id(width, depth, resolution, spec_key), "output": output, "base": base,
            "width": width, "depth": depth, "resolution": resolution, "recipe": asdict(recipe), "spec": spec}


def result_path(output: str | Path, cid: str) -> Path:
    return Path(output, "candidates", f"{cid}.json")


def finished(output: str | Path, cid: str) -> dict | None:
    """The stored result of a finished candidate, or None."""
    p = result_path(output, cid)
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError:  # cannot happen with atomic writes; re-run rather than trust it
        return None


def measure_model(config: ModelConfig, device: str, batch: int, runs: int) -> dict:
    """Parameters and MACs (analytic) and median inference latency at ``config.resolution`` on ``device``."""
    r = config.resolution
    with torch.device("meta"):
        meta = EfficientConvNet(config)
    totals = profile(meta, r).totals()
    model = EfficientConvNet(config).to(device).eval()
    x = torch.randn(batch, config.in_chans, r, r, device=device)
    with torch.inference_mode():
        timing = time_fn(lambda: model(x), warmup=5, runs=runs, device=device)
    # The fastest run is the latency: on a shared machine other processes only ever add time.
    return {"params": totals["params"], "macs": totals["macs"], "latency_ms": timing.min * 1e3,
            "latency_median_ms": timing.median * 1e3, "latency_batch": batch, "latency_device": device_name(device)}


def remeasure(output: str | Path, cid: str, device: str, batch: int, runs: int) -> dict:
    """Time a finished candidate again on ``device`` (no training) and rewrite its result."""
    result = finished(output, cid)
    assert result is not None, f"candidate {cid} has not finished"
    config = ModelConfig.from_dict(json.loads(Path(output, "runs", cid, "config.json").read_text())["model"])
    result.update(measure_model(config, device, batch, runs))
    write_atomic(result_path(output, cid), json.dumps(result, indent=1).encode())
    return result


def device_name(device: str) -> str:
    d = torch.device(device)
    return torch.cuda.get_device_name(d) if d.type == "cuda" else "cpu"


def run_candidate(job: dict, device: str) -> dict:
    """Train, count and time one candidate on ``device``; write and return its result."""
    done = finished(job["output"], job["id"])
    if done is not None:
        return done
    recipe = SearchRecipe(**job["recipe"])
    run_dir = Path(job["output"], "runs", job["id"])
    shape = {"spec": job["spec"]} if job.get("spec") else {"width": job["width"], "depth": job["depth"]}
    config = TrainConfig.for_data(
        recipe.data, model=job["base"], **shape, image_size=job["resolution"],
        eval_size=job["resolution"], stages=1, epochs=recipe.epochs, batch_size=recipe.batch_size,
        optimizer=recipe.optimizer, lr=recipe.lr, warmup_epochs=recipe.warmup_epochs, augment="none",
        ema_decay=0.0, label_smoothing=recipe.label_smoothing, drop_path_rate=0.0, seed=recipe.seed,
        device=device, output=str(run_dir), resume=(run_dir / ckpt.POINTER).exists(), progress=False,
        plots=False, randaug_start=0, randaug_end=0)
    start = time.perf_counter()
    run = train(config)
    seconds = time.perf_counter() - start
    model_config = ModelConfig.from_dict(json.loads((run_dir / "config.json").read_text())["model"])
    result = {**{k: job[k] for k in ("id", "base", "width", "depth", "resolution")}, "spec": job.get("spec"),
              "val_acc": run.best_acc, "final_val_acc": run.history[-1]["val_acc"], "train_s": seconds,
              "device": device_name(device), "recipe": job["recipe"],
              **measure_model(model_config, device, recipe.latency_batch, recipe.latency_runs)}
    path = result_path(job["output"], job["id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(result, indent=1).encode())
    return result
