#!/usr/bin/env python3
"""Plot the series of docs/grafana-dashboard.json from a live hopcast, as a PNG.

Grafana is not installable on the machines this project is built on (no package), so
this script does what the dashboard does, against real servers: it starts two hopcast
servers, drives them with hopcast-load (a publisher, WCS and WHEP players joining in
waves, a push relay, a refused relay), scrapes /metrics every second, and plots the
dashboard's series computed the way its PromQL does (rates over a window,
histogram_quantile over bucket increases).

    cargo build --release --features testkit
    python3 -m venv target/plot-venv && target/plot-venv/bin/pip install matplotlib prometheus-client
    target/plot-venv/bin/python scripts/plot_dashboard.py [--seconds 80] [--out docs/dashboard.png]
"""
import argparse
import collections
import subprocess
import time
import urllib.request

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

BIN = "target/release"


def start_server(*extra):
    args = [f"{BIN}/hopcast", "--ws-port", "0", "--wss-port", "0", "--http-port", "0", "--https-port", "0",
            "--media-port", "0", "--ip", "127.0.0.1", *extra]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    ports = dict(f.split("=", 1) for f in line.split() if "=" in f)
    return proc, int(ports["ws"]), int(ports["http"])


def scrape(http):
    text = urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=5).read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def rest(http, method, body):
    req = urllib.request.Request(f"http://127.0.0.1:{http}/rest-api/{method}", data=body.encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        return urllib.request.urlopen(req, timeout=30).status
    except urllib.error.HTTPError as e:
        return e.code


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=80)
    ap.add_argument("--out", default="docs/dashboard.png")
    args = ap.parse_args()
    a, a_ws, a_http = start_server("--set", "limits.relays_per_stream=1")
    b, b_ws, _ = start_server()
    children = [a, b]
    load = lambda *x: children.append(subprocess.Popen([f"{BIN}/hopcast-load", *x], stdout=subprocess.DEVNULL,
                                                        stderr=subprocess.DEVNULL))
    d = str(args.seconds)
    events = {
        2: lambda: load("publish", "--server", f"ws://127.0.0.1:{a_ws}/", "--name", "cam", "--seconds", d,
                        "--bitrate", "1500000"),
        8: lambda: load("play", "--server", f"ws://127.0.0.1:{a_ws}/", "--name", "cam", "--players", "10",
                        "--seconds", d),
        20: lambda: load("play", "--server", f"http://127.0.0.1:{a_http}/whep", "--name", "cam", "--players", "5",
                         "--seconds", d),
        32: lambda: rest(a_http, "pull/push", f'{{"uri":"ws://127.0.0.1:{b_ws}/","localStreamName":"cam",'
                                              f'"remoteStreamName":"far"}}'),
        38: lambda: [rest(a_http, "pull/push", f'{{"uri":"ws://127.0.0.1:{b_ws}/","localStreamName":"cam",'
                                                f'"remoteStreamName":"far{i}"}}') for i in range(3)],
        44: lambda: load("play", "--server", f"ws://127.0.0.1:{a_ws}/", "--name", "cam", "--players", "20",
                         "--seconds", "20"),
        60: lambda: rest(a_http, "pull/terminate", '{"localStreamName":"cam"}'),
    }
    series = []
    try:
        t0 = time.time()
        while time.time() - t0 < args.seconds:
            t = time.time() - t0
            for at in [k for k in events if k <= t]:
                events.pop(at)()
            series.append((t, scrape(a_http)))
            time.sleep(max(0.0, 1.0 - (time.time() - t0 - t)))
    finally:
        for c in children:
            c.terminate()
        for c in children:
            c.wait(timeout=10)
    plot(series, args.out)


def value(samples, name, **labels):
    return sum(v for (n, ls), v in samples.items() if n == name and all(dict(ls).get(k) == w for k, w in labels.items()))


def by_label(samples, name, label):
    out = collections.defaultdict(float)
    for (n, ls), v in samples.items():
        if n == name:
            out[dict(ls).get(label, "")] += v
    return out


def rate(series, name, window=5, **labels):
    ts, out = [], []
    for i in range(window, len(series)):
        (t0, s0), (t1, s1) = series[i - window], series[i]
        ts.append(t1)
        out.append((value(s1, name, **labels) - value(s0, name, **labels)) / (t1 - t0))
    return ts, out


def quantile(series, q, window=5):
    name = "hopcast_media_forward_latency_seconds_bucket"
    ts, out = [], []
    for i in range(window, len(series)):
        (_, s0), (t1, s1) = series[i - window], series[i]
        buckets = sorted((float(dict(ls)["le"]), v - s0.get((n, ls), 0.0)) for (n, ls), v in s1.items() if n == name)
        total = buckets[-1][1] if buckets else 0
        if total <= 0:
            continue
        rank, prev_le, prev_c = q * total, 0.0, 0.0
        for le, c in buckets:
            if c >= rank:
                # Linear within the bucket, as histogram_quantile does.
                est = le if le == float("inf") else prev_le + (le - prev_le) * (rank - prev_c) / max(c - prev_c, 1e-9)
                ts.append(t1)
                out.append(est * 1000)
                break
            prev_le, prev_c = le, c
    return ts, out


def plot(series, out):
    t = [x for x, _ in series]
    fig, axes = plt.subplots(3, 2, figsize=(12, 10))
    ax = axes[0][0]
    for role in ("published", "played"):
        ax.plot(t, [value(s, "hopcast_streams", role=role) for _, s in series], label=role)
    ax.set_title("Streams (sum by role)")
    ax.legend()
    ax = axes[0][1]
    for proto in ("wcs", "whip", "relay"):
        ax.plot(t, [value(s, "hopcast_streams", role="played", protocol=proto) for _, s in series], label=proto)
    ax.set_title("Players by protocol")
    ax.legend()
    ax = axes[1][0]
    for name, label in (("hopcast_media_packets_forwarded_total", "forwarded"),
                        ("hopcast_media_packets_received_total", "received")):
        ax.plot(*rate(series, name), label=label)
    ax.set_title("Packets/s (rate over 5 s)")
    ax.legend()
    ax = axes[1][1]
    for q in (0.5, 0.99):
        ax.plot(*quantile(series, q), label=f"p{int(q * 100)}")
    ax.set_title("Forwarding latency, ms (histogram_quantile over 5 s)")
    ax.legend()
    ax = axes[2][0]
    keys = sorted({(dict(ls).get("direction"), dict(ls).get("status")) for _, s in series for (n, ls) in s
                   if n == "hopcast_relays"})
    for d, st in keys:
        ax.plot(t, [value(s, "hopcast_relays", direction=d, status=st) for _, s in series], label=f"{d} {st}")
    ax.set_title("Relays by status")
    if keys:
        ax.legend()
    ax = axes[2][1]
    reasons = sorted({r for _, s in series for r, v in by_label(s, "hopcast_refused_total", "reason").items() if v})
    for r in reasons:
        ax.plot(t, [value(s, "hopcast_refused_total", reason=r) for _, s in series], label=r)
    ax.set_title("Refusals by reason (cumulative)")
    if reasons:
        ax.legend()
    for row in axes:
        for ax in row:
            ax.set_xlabel("s")
            ax.grid(alpha=0.3)
    fig.suptitle("hopcast /metrics: the dashboard's series, scraped every second from a live server")
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
