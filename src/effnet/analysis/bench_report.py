"""Reading, merging, tabulating and drawing ``effnet bench`` results: markdown tables and the MACs-vs-latency chart.

Results files are plain JSON (nothing is unpickled); every file is written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.ticker

from effnet.analysis import bench
from effnet.analysis.figures import pyplot, write_png
from effnet.io import write_atomic


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` atomically (temp file in the same folder, then rename)."""
    return write_atomic(path, text.encode())


def write_json(data: dict, path: str | Path) -> Path:
    """Write ``data`` as JSON atomically."""
    return write_text(path, json.dumps(data, indent=1))


def merge_by_device(datasets: list[dict]) -> list[dict]:
    """Results files of the same device (e.g. an eager run and a compile run) merged into one dataset."""
    merged: dict[tuple[str, str], dict] = {}
    for data in datasets:
        key = (data["env"]["device_name"], data["env"]["device"])
        if key not in merged:
            merged[key] = {**data, "results": list(data["results"]), "skipped": list(data.get("skipped", [])),
                           "ceilings": dict(data.get("ceilings", {}))}
            continue
        m = merged[key]
        m["env"] = {**m["env"], "command": f"{m['env']['command']}; {data['env']['command']}"}
        m["results"] += data["results"]
        m["skipped"] += [s for s in data.get("skipped", []) if s not in m["skipped"]]
        m["ceilings"].update(data.get("ceilings", {}))
    return list(merged.values())


def load_results(path: str | Path) -> dict:
    """A results JSON written by :func:`run_bench` (plain JSON: nothing is unpickled)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read bench results from {path}: {e}") from e
    if not isinstance(data, dict) or "results" not in data or "env" not in data:
        raise ValueError(f"{path} is not an effnet bench results file (no 'env'/'results')")
    return data


def _ok(data: dict) -> list[dict]:
    return [r for r in data["results"] if r.get("median_s")]


def _best(rows: list[dict]) -> dict[tuple[str, int], dict]:
    """Fastest case per (model, batch size) over modes and dtypes."""
    best: dict[tuple[str, int], dict] = {}
    for r in rows:
        k = (r["model"], r["batch_size"])
        if k not in best or r["median_s"] < best[k]["median_s"]:
            best[k] = r
    return best


def markdown_report(data: dict) -> str:
    """Markdown tables: per dtype and batch size, every model and mode, with ratios to ResNet-50."""
    env = data["env"]
    lines = [f"### {env['device_name']} ({env['device']})", "",
             f"torch {env['torch']}" + "".join(f", {k} {env[k]}" for k in ("torchvision", "cuda", "triton")
                                               if env.get(k)) + f"; Python {env['python']}; "
             f"{env['threads']} CPU threads; load average {env.get('load_average', 'n/a')}; {env['date']}", "",
             f"Command: `{env['command']}`", ""]
    lines += [f"Skipped: {s}" for s in data.get("skipped", [])]
    for name, c in data.get("ceilings", {}).items():
        lines.append(f"Measured ceilings, {name}: {c['peak_flops'] / 1e12:.3g} TFLOP/s matmul "
                     f"({c['peak_flops'] / 2e9:.1f} GMAC/s), {c['bandwidth'] / 1e9:.1f} GB/s copy.  ")
    rows = data["results"]
    keys = sorted({(r["dtype"], r["batch_size"]) for r in rows}, key=lambda k: (k[0] != "float32", k[0], k[1]))
    for dtype, batch in keys:
        lines += ["", f"#### {dtype}, batch {batch}", "",
                  ("| model | mode | GMACs/img | median ms | IQR ms | img/s | img/s vs resnet50 | achieved GMAC/s "
                   "| MAC rate vs resnet50 |"), "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        order = {m: i for i, m in enumerate(dict.fromkeys(r["model"] for r in rows))}
        modes = (*bench.MODES, *bench.ENGINE_MODES)
        sel = sorted((r for r in rows if r["dtype"] == dtype and r["batch_size"] == batch),
                     key=lambda r: (order[r["model"]], modes.index(r["mode"]) if r["mode"] in modes else 9))
        base = {r["mode"]: r for r in sel if r["model"] == bench.BASELINE and r.get("median_s")}
        for r in sel:
            if not r.get("median_s"):
                lines.append(f"| {r['model']} | {r['mode']} | {r['macs'] / 1e9:.3f} | failed: {r['error']} "
                             "| | | | | |")
                continue
            b = base.get(r["mode"]) or (base.get("compile") if r["mode"] in bench.ENGINE_MODES else None)
            ratio_t = f"{r['throughput'] / b['throughput']:.2f}x" if b else "-"
            ratio_m = f"{r['mac_rate'] / b['mac_rate']:.2f}x" if b else "-"
            lines.append(f"| {r['model']} | {r['mode']} | {r['macs'] / 1e9:.3f} | {r['median_s'] * 1e3:.3f} | "
                         f"{r['iqr_s'] * 1e3:.3f} | {r['throughput']:.1f} | {ratio_t} | "
                         f"{r['mac_rate'] / 1e9:.1f} | {ratio_m} |")
    return "\n".join(lines) + "\n"


def plot_macs_vs_latency(datasets: list[dict], path: str | Path) -> Path:
    """MACs per image against measured time per image, one panel per results file (e.g. CPU and GPU)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(datasets), figsize=(6.5 * len(datasets), 6), squeeze=False)
    markers = "osD^vPX*<>hp"
    for ax, data in zip(axes[0], datasets):
        best = _best(_ok(data))
        models = list(dict.fromkeys(m for m, _ in best))
        batches = sorted({b for _, b in best})
        for colour, batch in zip(("tab:blue", "tab:red", "tab:green", "tab:purple"), batches):
            pts = [r for (_, b), r in best.items() if b == batch]
            for r in pts:
                ax.scatter(r["macs"] / 1e9, r["median_s"] / batch * 1e3, color=colour, s=36,
                           marker=markers[models.index(r["model"]) % len(markers)])
            base = next((r for r in pts if r["model"] == bench.BASELINE), None)
            if base:  # where the models would sit if time were proportional to MACs
                k = base["median_s"] / batch * 1e3 / (base["macs"] / 1e9)
                xs = [r["macs"] / 1e9 for r in pts]
                grid = [min(xs) / 1.5, max(xs) * 1.5]
                ax.plot(grid, [k * g for g in grid], ls="--", color=colour, lw=0.8)
            ax.plot([], [], color=colour, marker="o", ls="--", lw=0.8,
                    label=f"batch {batch} (dashed: time proportional to MACs, through {bench.BASELINE})")
        for i, name in enumerate(models):  # legend entries for the marker shapes
            ax.scatter([], [], color="black", marker=markers[i % len(markers)], label=name)
        env = data["env"]
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):  # plain numbers, and no labels on minor ticks to collide
            axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("GMACs per image (analytic)")
        ax.set_ylabel("measured ms per image (median, fastest mode and dtype)")
        ax.set_title(f"{env['device_name']} ({env['device']}), torch {env['torch']}", fontsize=9)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)
        ax.grid(True, which="both", alpha=0.2)
    return write_png(fig, path)
