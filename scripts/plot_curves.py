#!/usr/bin/env python3
"""plot_curves.py: held-out learning curves of several fm runs in one SVG.

Each curve is a run's metrics.jsonl (the lines with "val_loss", nats per token), drawn as bits
per byte (val_loss / ln 2 / bytes per token) against the step; --hline adds a level line (e.g. a
model's zero-shot figure). Standard library only.

Usage: plot_curves.py --out FILE.svg --title T --bytes-per-token B [--hline NAME=VALUE ...]
                      NAME=metrics.jsonl ...
"""
import argparse
import json
import math

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def read_curve(path, bytes_per_token):
    points = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            if "val_loss" in record:
                points.append((record["step"], record["val_loss"] / math.log(2) / bytes_per_token))
    return points


def nice_ticks(lo, hi, count=6):
    span = hi - lo if hi > lo else 1.0
    step = 10 ** math.floor(math.log10(span / count))
    for m in (1, 2, 5, 10):
        if span / (step * m) <= count:
            step *= m
            break
    start = math.ceil(lo / step) * step
    ticks = []
    t = start
    while t <= hi + 1e-9:
        ticks.append(round(t, 10))
        t += step
    return ticks


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--title", default="")
    ap.add_argument("--bytes-per-token", type=float, required=True)
    ap.add_argument("--hline", action="append", default=[])
    ap.add_argument("curves", nargs="+")
    args = ap.parse_args()
    series = []
    for item in args.curves:
        name, path = item.split("=", 1)
        series.append((name, read_curve(path, args.bytes_per_token)))
    levels = []
    for item in args.hline:
        name, value = item.split("=", 1)
        if value:
            levels.append((name, float(value)))
    xs = [x for _, pts in series for x, _ in pts] or [0, 1]
    ys = [y for _, pts in series for _, y in pts] + [v for _, v in levels] or [0, 1]
    x0, x1 = 0, max(xs)
    y0, y1 = min(ys), max(ys)
    pad = (y1 - y0) * 0.05 or 0.1
    y0, y1 = y0 - pad, y1 + pad
    W, H, L, R, T, B = 760, 460, 70, 220, 40, 50
    pw, ph = W - L - R, H - T - B

    def px(x):
        return L + (x - x0) / ((x1 - x0) or 1) * pw

    def py(y):
        return T + (y1 - y) / ((y1 - y0) or 1) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{L}" y="22" font-size="15">{args.title}</text>',
           f'<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>']
    for t in nice_ticks(y0, y1):
        out.append(f'<line x1="{L}" x2="{L + pw}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{L - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    for t in nice_ticks(x0, x1):
        out.append(f'<text x="{px(t):.1f}" y="{T + ph + 18}" text-anchor="middle">{t:g}</text>')
    out.append(f'<text x="{L + pw / 2}" y="{H - 10}" text-anchor="middle">step</text>')
    out.append(f'<text x="16" y="{T + ph / 2}" transform="rotate(-90 16 {T + ph / 2})" '
               f'text-anchor="middle">held-out bits per byte</text>')
    legend_y = T + 10
    for i, (name, pts) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        if pts:
            path = " ".join(f"{'M' if j == 0 else 'L'}{px(x):.1f},{py(y):.1f}" for j, (x, y) in enumerate(pts))
            out.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        out.append(f'<line x1="{L + pw + 12}" x2="{L + pw + 32}" y1="{legend_y}" y2="{legend_y}" stroke="{color}" '
                   f'stroke-width="2"/>')
        out.append(f'<text x="{L + pw + 38}" y="{legend_y + 4}">{name}</text>')
        legend_y += 20
    for name, value in levels:
        out.append(f'<line x1="{L}" x2="{L + pw}" y1="{py(value):.1f}" y2="{py(value):.1f}" stroke="#555" '
                   f'stroke-dasharray="6,4"/>')
        out.append(f'<line x1="{L + pw + 12}" x2="{L + pw + 32}" y1="{legend_y}" y2="{legend_y}" stroke="#555" '
                   f'stroke-dasharray="6,4"/>')
        out.append(f'<text x="{L + pw + 38}" y="{legend_y + 4}">{name} ({value:.3f})</text>')
        legend_y += 20
    out.append("</svg>")
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
