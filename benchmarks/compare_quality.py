"""Compare the quality numbers of two ``benchmarks/run.py`` JSON reports: every row's forget / retain / holdout NLL,
every evaluation metric, and every per-method detail that is not a timing. Exit status 1 when anything differs.

    python benchmarks/compare_quality.py before/test.json after/test.json

Timings, costs, memory and environment are skipped (keys naming them, see TIMING), and so are per-run temporary
folder names. Used to show that a refactoring leaves the results unchanged (issue 16).
"""

import json
import math
import sys

TMP = "/hf_unlearn_run_"
TIMING = ("seconds", "_s", "time", "cost", "peak", "rss", "throughput", "per_second", "wall", "environment")


def is_timing(key: str) -> bool:
    k = key.lower()
    return any(t in k for t in TIMING)


def walk(a, b, path, diffs, counter):
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            diffs.append((path, "keys", sorted(set(a) ^ set(b))))
        for k in set(a) & set(b):
            if is_timing(str(k)):
                continue
            walk(a[k], b[k], f"{path}.{k}", diffs, counter)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            diffs.append((path, "len", (len(a), len(b))))
        for i, (x, y) in enumerate(zip(a, b)):
            walk(x, y, f"{path}[{i}]", diffs, counter)
    else:
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
            counter[0] += 1
            return
        if isinstance(a, (int, float)) and not isinstance(a, bool):
            counter[0] += 1
        if isinstance(a, str) and isinstance(b, str) and TMP in a and TMP in b:
            return  # a per-run temporary folder (e.g. where a recording was written)
        if a != b:
            diffs.append((path, a, b))


def main(before: str, after: str) -> int:
    A, B = json.load(open(before)), json.load(open(after))
    diffs: list = []
    counter = [0]
    for split in A["splits"]:
        ra, rb = A["splits"][split]["rows"], B["splits"][split]["rows"]
        if list(ra) != list(rb):
            diffs.append((split, "rows", (list(ra), list(rb))))
        for name in ra:
            for key in ("forget_nll", "retain_nll", "holdout_nll"):
                counter[0] += 1
                x, y = ra[name][key], rb[name][key]
                if not (x == y or (x != x and y != y)):
                    diffs.append((f"{split}.rows.{name}.{key}", x, y))
        walk(
            A["splits"][split].get("evaluation", {}),
            B["splits"][split].get("evaluation", {}),
            f"{split}.evaluation",
            diffs,
            counter,
        )
        # per-method details that are not timings (steps, dampened counts, ...)
        walk(A["splits"][split]["details"], B["splits"][split]["details"], f"{split}.details", diffs, counter)
    print(f"compared {counter[0]} numbers over splits {list(A['splits'])}")
    for d in diffs[:50]:
        print("DIFF", d)
    print("IDENTICAL" if not diffs else f"{len(diffs)} differences")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
