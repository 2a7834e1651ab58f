#!/usr/bin/env python3
"""PNG chart of bench-results/latest.json: one panel per metric (wall time,
requests, peak RSS), grouped bars per scenario, one bar per tool (the
server's `ceiling` among them when it ran).

    chart.py LATEST.json OUT.png
"""

import json
import sys
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src, out):
    with open(src) as f:
        data = json.load(f)
    rows = data["results"]
    scenarios, tools = [], []
    for r in rows:
        if r["scenario"] not in scenarios:
            scenarios.append(r["scenario"])
        if r["tool"] not in tools:
            tools.append(r["tool"])
    by = {(r["tool"], r["scenario"]): r for r in rows}
    metrics = [
        ("wall time (s)", lambda r: r["wall_s"]),
        ("requests", lambda r: r["requests_total"] or 0),
        ("peak RSS (MiB)", lambda r: (r["peak_rss_kib"] or 0) / 1024),
    ]
    fig, axes = plt.subplots(len(metrics), 1, figsize=(max(8, 1.6 * len(scenarios) * len(tools) / 3), 10))
    width = 0.8 / max(1, len(tools))
    for ax, (label, get) in zip(axes, metrics):
        for i, tool in enumerate(tools):
            xs = [s + i * width for s in range(len(scenarios))]
            ys = [get(by[(tool, sc)]) if (tool, sc) in by else 0 for sc in scenarios]
            ax.bar(xs, ys, width, label=tool)
        ax.set_ylabel(label)
        ax.set_xticks([s + width * (len(tools) - 1) / 2 for s in range(len(scenarios))])
        ax.set_xticklabels(scenarios)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(ncol=len(tools), fontsize="small")
    params = ", ".join(f"{k}={v}" for k, v in data.get("params", {}).items() if k != "SERVER" and v != "")
    # Wrapped: with every scenario's sizes the line is wider than the figure.
    params = "\n".join(textwrap.wrap(f"({params})", 110))
    fig.suptitle(f"s3-fanout vs peers on {data.get('server', 'moto')}\n{params}", fontsize="small")
    fig.tight_layout()
    fig.savefig(out, dpi=100)


if __name__ == "__main__":
    main(*sys.argv[1:])
