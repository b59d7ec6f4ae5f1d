#!/usr/bin/env python3
"""Sandbox cycles against a running `forkvm serve`: create -> exec -> delete.

usage: server_cycles.py --url http://127.0.0.1:PORT --key KEY [--cycles N] [--concurrency C]

Each worker thread repeats: POST /v1/sandboxes, POST .../exec {"cmd":["echo",...]},
DELETE .../{id}, on its own kept-alive connection, until N cycles are done.
Prints a Markdown table of latencies (ms: p50, p90, p99, max) per step and per
cycle, throughput, and the error count (any unexpected status or output).
Standard library only. Exit status 1 if any cycle failed.
"""
import argparse
import http.client
import json
import statistics
import sys
import threading
import time
import urllib.parse


def percentile(values, p):
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100.0 * (len(s) - 1))))
    return s[k]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--cycles", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    url = urllib.parse.urlparse(args.url)
    headers = {"Authorization": "Bearer " + args.key, "Content-Type": "application/json"}

    lock = threading.Lock()
    next_cycle = [0]
    samples = {"create": [], "exec": [], "delete": [], "cycle": []}
    errors = []

    def call(conn, method, path, body=None):
        start = time.monotonic()
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, data, (time.monotonic() - start) * 1000.0

    def worker():
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=300)
        while True:
            with lock:
                i = next_cycle[0]
                next_cycle[0] += 1
            if i >= args.cycles:
                break
            t0 = time.monotonic()
            try:
                st, data, ms_create = call(conn, "POST", "/v1/sandboxes", {})
                if st != 201:
                    raise RuntimeError(f"create {st} {data[:200]!r}")
                sid = json.loads(data)["id"]
                marker = f"cycle-{i}"
                st, data, ms_exec = call(conn, "POST", f"/v1/sandboxes/{sid}/exec", {"cmd": ["echo", marker]})
                if st != 200 or json.loads(data).get("stdout") != marker + "\n":
                    raise RuntimeError(f"exec {st} {data[:200]!r}")
                st, data, ms_delete = call(conn, "DELETE", f"/v1/sandboxes/{sid}")
                if st != 204:
                    raise RuntimeError(f"delete {st} {data[:200]!r}")
                with lock:
                    samples["create"].append(ms_create)
                    samples["exec"].append(ms_exec)
                    samples["delete"].append(ms_delete)
                    samples["cycle"].append((time.monotonic() - t0) * 1000.0)
            except Exception as e:  # noqa: BLE001 - every failure is counted and shown
                with lock:
                    errors.append(f"cycle {i}: {e}")
                conn.close()
                conn = http.client.HTTPConnection(url.hostname, url.port, timeout=300)
        conn.close()

    start = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - start

    print(f"{args.cycles} cycles at concurrency {args.concurrency}: {len(samples['cycle'])} ok, "
          f"{len(errors)} errors, {wall:.1f} s, {len(samples['cycle']) / wall:.2f} cycles/s")
    print()
    print("| step | n | p50 ms | p90 ms | p99 ms | max ms | mean ms |")
    print("|---|---|---|---|---|---|---|")
    for name in ("create", "exec", "delete", "cycle"):
        v = samples[name]
        if not v:
            continue
        print(f"| {name} | {len(v)} | {percentile(v, 50):.1f} | {percentile(v, 90):.1f} | "
              f"{percentile(v, 99):.1f} | {max(v):.1f} | {statistics.mean(v):.1f} |")
    for e in errors[:20]:
        print("error:", e, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
