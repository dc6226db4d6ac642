#!/usr/bin/env python3
"""Plot a `hopcast-load soak` CSV (RSS, open files, threads, tasks, sessions, peers per
server over time) as a PNG.

    target/plot-venv/bin/python scripts/plot_soak.py docs/soak/soak.csv docs/soak/soak.png
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FIGURES = [("rss_kib", "RSS, MiB", 1 / 1024), ("fds", "open files", 1), ("threads", "threads", 1),
           ("tasks", "tokio tasks", 1), ("sessions", "sessions", 1), ("peers", "WebRTC peers", 1)]


def main(path, out):
    rows = list(csv.DictReader(open(path)))
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    for ax, (field, title, scale) in zip([a for row in axes for a in row], FIGURES):
        for server in sorted({r["server"] for r in rows}):
            mine = [r for r in rows if r["server"] == server]
            ax.plot([float(r["elapsed_s"]) / 60 for r in mine], [float(r[field]) * scale for r in mine],
                    label=f"server {server}")
        ax.set_title(title)
        ax.set_xlabel("minutes")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend()
    last = rows[-1]
    fig.suptitle(f"hopcast-load soak: {last['cycles']} cycles, {last['plays']} plays ({last['failed']} failed), "
                 "sampled between cycles")
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
