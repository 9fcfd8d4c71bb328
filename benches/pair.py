#!/usr/bin/env python3
"""Pair the `codec` bench results of fulmar and rumqttc into a markdown table.

Reads criterion's `target/criterion/*/*/{new|base}/{benchmark,estimates}.json` for the
benchmark ids `{decode|encode}/{case}/{side}` written by `benches/benches/codec.rs`, and prints
one row per (operation, case, fulmar side) with the speedup over rumqttc (rumqttc time / fulmar
time; above 1 means fulmar is faster) and whether the issue's target is met:
decode PUBLISH >= 1.5x, encode PUBLISH >= 2x, every other packet >= 1x.

Usage: python3 benches/pair.py [--root TARGET_CRITERION_DIR] [--which new|base]
                               [--estimate median|mean|slope] [--save RUN.json]
                               [--previous RUN.json ...]

The machine is noisy, so runs are repeated: `--save` keeps this run's times, and each
`--previous` file adds that run's speedup as an extra column (a row is "met" only if every
run meets the target).
Python 3 standard library only.
"""

import argparse
import json
import pathlib
import sys

OPS = ("decode", "encode")
PEER = "rumqttc"
# Order of the fulmar sides in the table.
SIDES = ("fulmar", "fulmar_vectored")


def load(root, which, estimate):
    """{(op, case, side): nanoseconds} for every codec benchmark found."""
    results = {}
    for bench_json in sorted(root.glob(f"*/*/{which}/benchmark.json")):
        meta = json.loads(bench_json.read_text())
        parts = meta.get("full_id", "").split("/")
        if len(parts) != 3 or parts[0] not in OPS:
            continue
        estimates = json.loads((bench_json.parent / "estimates.json").read_text())
        point = (estimates.get(estimate) or estimates["median"])["point_estimate"]
        results[tuple(parts)] = point
    return results


def target(op, case):
    if case.startswith("publish"):
        return 1.5 if op == "decode" else 2.0
    return 1.0


def fmt_time(ns):
    if ns >= 1_000_000:
        return f"{ns / 1_000_000:.2f} ms"
    if ns >= 1_000:
        return f"{ns / 1_000:.2f} µs"
    return f"{ns:.1f} ns"


def case_order(case):
    """publish (by version, then size), puback, connect, subscribe."""
    kinds = ("publish", "puback", "connect", "subscribe")
    kind = next((i for i, k in enumerate(kinds) if case.startswith(k)), len(kinds))
    sizes = {"16": 0, "1k": 1, "64k": 2}
    size = next((v for k, v in sizes.items() if f"_{k}_" in case), 0)
    return (kind, case.endswith("_v5"), size, case)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="target/criterion", type=pathlib.Path)
    parser.add_argument("--which", default="new", choices=("new", "base"))
    parser.add_argument("--estimate", default="median", choices=("median", "mean", "slope"))
    parser.add_argument("--save", type=pathlib.Path, help="write this run's times (JSON)")
    parser.add_argument(
        "--previous", type=pathlib.Path, nargs="*", default=[], help="earlier runs (JSON)"
    )
    args = parser.parse_args()

    results = load(args.root, args.which, args.estimate)
    if not results:
        sys.exit(f"no codec results under {args.root}/*/*/{args.which}/")
    if args.save:
        args.save.write_text(
            json.dumps({"/".join(k): v for k, v in sorted(results.items())}, indent=1) + "\n"
        )
    previous = [
        {tuple(k.split("/")): v for k, v in json.loads(path.read_text()).items()}
        for path in args.previous
    ]

    extra = "".join(f" speedup (run {i + 1}) |" for i in range(len(previous)))
    this = f"speedup (run {len(previous) + 1})" if previous else "speedup"
    print(f"| operation | case | fulmar side | fulmar | rumqttc |{extra} {this} | target | met |")
    print("|---|---|---|---:|---:|" + "---:|" * len(previous) + "---:|---:|:-:|")
    missed = 0
    for op in OPS:
        cases = sorted({c for (o, c, _) in results if o == op}, key=case_order)
        for case in cases:
            peer = results.get((op, case, PEER))
            for side in SIDES:
                ours = results.get((op, case, side))
                if ours is None or peer is None:
                    continue
                speedups = []
                for run in previous:
                    old_ours, old_peer = run.get((op, case, side)), run.get((op, case, PEER))
                    speedups.append(old_peer / old_ours if old_ours and old_peer else None)
                speedups.append(peer / ours)
                goal = target(op, case)
                met = all(s is not None and s >= goal for s in speedups)
                missed += not met
                cells = " | ".join("n/a" if s is None else f"{s:.2f}x" for s in speedups)
                print(
                    f"| {op} | {case} | {side} | {fmt_time(ours)} | {fmt_time(peer)} "
                    f"| {cells} | {goal:g}x | {'yes' if met else '**no**'} |"
                )
    print(
        f"\nTimes: {args.estimate} of criterion's samples, this run. "
        f"Speedup = rumqttc time / fulmar time. {missed} row(s) below target."
    )


if __name__ == "__main__":
    main()
