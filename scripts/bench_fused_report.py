"""Tables and chart for docs/benchmarks/fused.md from the JSON lines scripts/bench_fused.py wrote.

    python scripts/bench_fused_report.py docs/benchmarks/fused/run3_h100.jsonl [more.jsonl ...]

Prints markdown tables (speed, per-block, depthwise, checks) and writes docs/benchmarks/fused.png (speed
ratios of the first file's ``speed_final`` rows).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

WHO = ("torchvision_compile", "effnet_folded_compile", "effnet_fused")
BARS = {("efficientnet_b0", 256): 2.0, ("mobilenet_v2_100", 256): 1.8, ("efficientnet_v2_s", 256): 1.5}


def load(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def speed_table(rows: list[dict]) -> tuple[str, list[tuple]]:
    t = {(r["model"], r["batch"], r["who"]): r["ms"] for r in rows if r["part"] == "speed_final" and "ms" in r}
    lines = [("| model | px | batch | torchvision + compile ms | effnet BN-folded + compile ms | effnet fused ms "
              "| fused vs torchvision | fused vs folded | bar |"), "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    res = {r["model"]: r["res"] for r in rows if r["part"] == "speed_final" and "res" in r}
    chart = []
    for model, batch in sorted({(m, b) for m, b, _ in t}, key=lambda k: (k[0], -k[1])):
        ms = [t.get((model, batch, w)) for w in WHO]
        if None in ms:
            continue
        tv, fo, fu = ms
        if batch == 1:
            bar = f"<= 0.45 ms: {'met' if fu <= 0.45 else 'not met'}"
        else:
            need = BARS.get((model, batch))
            bar = f">= {need}x: {'met' if tv / fu >= need else 'not met'}" if need else ""
        lines.append(f"| {model} | {res[model]} | {batch} | {tv:.3f} | {fo:.3f} | {fu:.3f} | {tv / fu:.2f}x "
                     f"| {fo / fu:.2f}x | {bar} |")
        chart.append((f"{model}\nb{batch}", tv / tv, tv / fo, tv / fu))
    return "\n".join(lines), chart


def per_block_table(rows: list[dict]) -> str:
    copy = next(r["gb_s"] for r in rows if r["part"] == "copy")
    lines = [("| block | type | k | s | e | input (C, H, W) | fused ms | no expand fusion ms | eager effnet ms "
              "| block I/O MB | fused GB/s | % of copy BW |"), "|---:|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    tot = [0.0, 0.0, 0.0]
    for r in rows:
        if r["part"] != "per_block":
            continue
        tot = [tot[0] + r["fused_ms"], tot[1] + r["no_expand_fusion_ms"], tot[2] + r["eager_ms"]]
        lines.append(f"| {r['index']} | {r['block']} | {r['kernel']} | {r['stride']} | {r['expand']:g} "
                     f"| {tuple(r['in_shape'])} | {r['fused_ms']:.3f} | {r['no_expand_fusion_ms']:.3f} "
                     f"| {r['eager_ms']:.3f} | {r['io_mb']:.1f} | {r['fused_gb_s']:.0f} "
                     f"| {100 * r['fused_gb_s'] / copy:.1f} |")
    lines.append(f"| all | | | | | | {tot[0]:.3f} | {tot[1]:.3f} | {tot[2]:.3f} | | | |")
    return "\n".join(lines)


def depthwise_table(rows: list[dict]) -> str:
    lines = ["| block | k | s | H=W in | C | ours ms | cuDNN conv alone ms | ours % of copy BW | cuDNN % of copy BW |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["part"] == "depthwise":
            lines.append(f"| {r['block']} | {r['k']} | {r['stride']} | {r['hw']} | {r['channels']} | {r['ours_ms']:.3f} "
                         f"| {r['cudnn_ms']:.3f} | {r['ours_pct_copy']:.0f} | {r['cudnn_pct_copy']:.0f} |")
        if r["part"] == "depthwise_total":
            lines.append(f"| all | | | | | {r['ours_ms']:.3f} | {r['cudnn_ms']:.3f} | | |")
    return "\n".join(lines)


def check_tables(rows: list[dict]) -> str:
    out = ["| block | path | rel. error bf16 vs fp32 | <= 2e-2 |", "|---|---|---:|---|"]
    for r in rows:
        if r["part"] == "check_block":
            out.append(f"| {r['block']} | {r.get('path', r.get('fuse_expand'))} | {r['rel_err']:.2e} | "
                       f"{'yes' if r['ok'] else 'NO'} |")
    out += ["", ("| model | px | fused bf16 rel. err | top-1 agree | top-5 overlap mean / min | torch bf16 autocast "
                 "rel. err | torch bf16 top-1 agree | torch bf16 top-5 mean / min |"), "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["part"] == "check_model":
            out.append(f"| {r['model']} | {r['res']} | {r['rel_err']:.3f} | {r['top1_agree']:.3f} "
                       f"| {r['top5_overlap_mean']:.2f} / {r['top5_overlap_min']} | {r.get('torch_bf16_rel_err', float('nan')):.3f} "
                       f"| {r.get('torch_bf16_top1_agree', float('nan')):.3f} "
                       f"| {r.get('torch_bf16_top5_overlap_mean', float('nan')):.2f} / {r.get('torch_bf16_top5_overlap_min', '')} |")
    out += ["", "| checkpoint | model | images | acc. PyTorch fp32 | acc. fused bf16 | top-1 agree | top-5 overlap mean / min |",
            "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["part"] == "check_trained":
            out.append(f"| {r['checkpoint']} | {r['model']} | {r['images']} | {r['acc_torch_fp32']:.4f} "
                       f"| {r['acc_fused_bf16']:.4f} | {r['top1_agree']:.4f} | {r['top5_overlap_mean']:.2f} / {r['top5_overlap_min']} |")
    return "\n".join(out)


def chart(data: list[tuple], env: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.27
    for i, label in enumerate(("torchvision + torch.compile", "effnet BN-folded + torch.compile", "effnet fused (Triton)")):
        xs = [j + (i - 1) * width for j in range(len(data))]
        ax.bar(xs, [d[i + 1] for d in data], width, label=label)
    ax.axhline(1.0, color="grey", lw=0.5)
    ax.set_xticks(range(len(data)), [d[0] for d in data], fontsize=8)
    ax.set_ylabel("speed vs torchvision + compile (x)")
    ax.set_title(f"{env['gpu']}, bf16 channels_last, torch {env['torch']}, triton {env['triton']}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def report(*paths: str) -> None:
    rows, first = [r for p in paths for r in load(p)], load(paths[0])
    env = next(r for r in first if r["part"] == "env")
    table, data = speed_table(first)  # timings from the first file only: one run, one card
    print(table, "\n")
    if any(r["part"] == "per_block" for r in first) and any(r["part"] == "copy" for r in first):
        print(per_block_table(first), "\n")
    if any(r["part"] == "depthwise" for r in first):
        print(depthwise_table(first), "\n")
    print(check_tables(rows))
    if data:
        chart(data, env, Path("docs/benchmarks/fused.png"))


if __name__ == "__main__":
    report(*sys.argv[1:])
