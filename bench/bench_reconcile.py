"""Benchmark: reconciling two catalogues — the pipeline's hash comparison against a pandas merge.

    .venv/bin/python bench/bench_reconcile.py              # 100k items
    .venv/bin/python bench/bench_reconcile.py --rows 1000000

Two catalogues shaped like shared/BASELINES.md (CJK text of realistic lengths; 2% added, 2%
removed, 5% of items changed in 1-3 of the ten elements) are written to parquet. Each phase then
runs in its own process, so its peak RSS (loaded input included) is its own:

- hash: the per-element content hashes of one catalogue, as normalisation computes them once;
- ours: `tongban.reconcile.compare_hashes` on the two hash sets, then the old and new values of
  the changed elements only (read back by row from the parquet files): element-level output;
- pandas: an outer merge of the full catalogues and a per-column comparison (datacompy 1.1 pins
  pandas < 3.1, so it cannot share this project's pandas; BASELINES.md has it at ~1.7x the merge).

Both comparisons must find exactly the generated ground truth, or the bench fails.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

TEXT = {
    "name": (10, 30),
    "legal_basis": (100, 400),
    "accept_conditions": (100, 300),
    "procedure": (100, 300),
    "result": (4, 16),
    "dept_name": (8, 20),
}
ELEMENT_COLUMNS = (
    "name",
    "legal_basis",
    "item_type",
    "accept_conditions",
    "service_objects",
    "procedure",
    "materials",
    "promised_limit",
    "result",
    "catalog_code",
)
CJK = np.array([chr(c) for c in range(0x4E00, 0x4E00 + 3000)])


def _pool(rng: np.random.Generator, size: int, low: int, high: int) -> np.ndarray:
    return np.array(["".join(rng.choice(CJK, rng.integers(low, high + 1))) for _ in range(size)], dtype=object)


def _unique_text(rng: np.random.Generator, rows: int, low: int, high: int, tag: str) -> pa.Array:
    """Distinct strings of realistic length: a pooled body plus the row's own suffix."""
    body = pa.array(_pool(rng, 2048, low, high)[rng.integers(0, 2048, rows)], pa.string())
    suffix = pc.cast(pa.array(np.arange(rows)), pa.string())
    return pc.binary_join_element_wise(body, pa.scalar(tag), suffix, pa.scalar(""))


def generate(rows: int, out: Path, seed: int = 11) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    codes = np.array([f"11440100MB{i:08d}3000104{i % 100000:05d}0" for i in range(int(rows * 1.02))], dtype=object)
    total = len(codes)
    table = {
        "task_code": pa.array(codes, pa.string()),
        "catalog_code": pa.array([c[-12:] for c in codes], pa.string()),
        **{k: _unique_text(rng, total, lo, hi, "·") for k, (lo, hi) in TEXT.items()},
        "item_type": pa.array(rng.choice(["01", "07", "20"], total), pa.string()),
        "service_objects": pa.array([["1"], ["1", "2"], ["2"]][i % 3] for i in range(total)),
        "materials": pa.array(
            [[{"name": "居民身份证", "required": True, "form": "paper", "copies": 1, "source": "申请人自备"}]] * total
        ),
        "legal_limit": pa.array(rng.integers(10, 30, total)),
        "legal_limit_unit": pa.array(["WD"] * total, pa.string()),
        "promised_limit": pa.array(rng.integers(1, 10, total)),
        "promised_limit_unit": pa.array(["WD"] * total, pa.string()),
        "level": pa.array(["3"] * total, pa.string()),
        "dept_uscc": pa.array([c[:18] for c in codes], pa.string()),
        "handling_mode": pa.array(["1"] * total, pa.string()),
        "handle_type": pa.array(["2"] * total, pa.string()),
    }
    full = pa.table(table)
    n_removed = n_added = int(rows * 0.02)
    old = full.slice(0, rows)
    new = full.slice(n_removed, rows)  # first 2% removed, 2% added at the end
    removed = codes[:n_removed].tolist()
    added = codes[rows : rows + n_added].tolist()
    # 5% of the kept items change in 1-3 elements
    kept = np.arange(n_removed, rows)
    picks = rng.choice(kept, int(rows * 0.05), replace=False)
    columns = {
        name: new.column(name).to_pylist()
        for name in ("name", "legal_basis", "procedure", "result", "promised_limit", "accept_conditions")
    }
    truth: dict[str, list[str]] = {}
    for row in picks:
        chosen = sorted(rng.choice(list(columns), rng.integers(1, 4), replace=False))
        i = row - n_removed
        for name in chosen:
            columns[name][i] = columns[name][i] + 1 if name == "promised_limit" else columns[name][i] + "（修订）"
        truth[codes[row]] = [c if c != "promised_limit" else "time_limit" for c in chosen]
    for name, values in columns.items():
        new = new.set_column(new.schema.get_field_index(name), name, pa.array(values, new.schema.field(name).type))
    pq.write_table(old, out / "old.parquet")
    pq.write_table(new, out / "new.parquet")
    return {
        "added": sorted(added),
        "removed": sorted(removed),
        "changed": {k: sorted(v) for k, v in sorted(truth.items())},
    }


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def phase_hash(side: str, folder: Path) -> dict[str, Any]:
    from tongban.hashing import element_hash_frame

    start = time.perf_counter()
    frame = pq.read_table(folder / f"{side}.parquet").to_pandas(types_mapper=pd.ArrowDtype)
    hashes = element_hash_frame(frame.set_index("task_code", drop=False))
    hashes.to_parquet(folder / f"{side}.hashes.parquet")
    return {"seconds": time.perf_counter() - start, "peak_gb": _peak_gb()}


def phase_ours(folder: Path) -> dict[str, Any]:
    from tongban.reconcile import compare_hashes

    start = time.perf_counter()
    new = pd.read_parquet(folder / "new.hashes.parquet")
    old = pd.read_parquet(folder / "old.hashes.parquet")
    result = compare_hashes(new, old)
    wanted = pa.array(list(result.changed), pa.string())
    needed = sorted({_column(e) for elements in result.changed.values() for e in elements})
    values = {}
    for side in ("old", "new"):  # only the changed rows, only the columns of changed elements
        table = pq.read_table(
            folder / f"{side}.parquet", columns=["task_code", *needed], filters=pc.field("task_code").isin(wanted)
        )
        values[side] = table.to_pandas().set_index("task_code").reindex(list(result.changed))
    changes = []
    for column in needed:
        element = {"promised_limit": "time_limit", "catalog_code": "code"}.get(column, column)
        rows = [code for code, elements in result.changed.items() if element in elements]
        changes.extend(
            zip(
                rows,
                [element] * len(rows),
                values["old"].loc[rows, column],
                values["new"].loc[rows, column],
                strict=True,
            )
        )
    seconds = time.perf_counter() - start
    found = {
        "added": result.added,
        "removed": result.removed,
        "changed": {code: sorted(elements) for code, elements in sorted(result.changed.items())},
    }
    return {"seconds": seconds, "peak_gb": _peak_gb(), "changes": len(changes), "found": found}


def _column(element: str) -> str:
    return {"time_limit": "promised_limit", "code": "catalog_code"}.get(element, element)


def phase_pandas(folder: Path) -> dict[str, Any]:
    start = time.perf_counter()
    old = pd.read_parquet(folder / "old.parquet")
    new = pd.read_parquet(folder / "new.parquet")
    merged = old.merge(new, on="task_code", how="outer", suffixes=("_old", "_new"), indicator=True)
    added = sorted(merged.loc[merged["_merge"] == "right_only", "task_code"])
    removed = sorted(merged.loc[merged["_merge"] == "left_only", "task_code"])
    both = merged[merged["_merge"] == "both"]
    changed: dict[str, list[str]] = {}
    for column in ELEMENT_COLUMNS:
        a, b = both[f"{column}_old"], both[f"{column}_new"]
        differs = (a.astype(str) != b.astype(str)) if column in ("materials", "service_objects") else (a != b)
        element = {"promised_limit": "time_limit", "catalog_code": "code"}.get(column, column)
        for code in both.loc[differs.to_numpy(), "task_code"]:
            changed.setdefault(code, []).append(element)
    seconds = time.perf_counter() - start
    found = {"added": added, "removed": removed, "changed": {k: sorted(v) for k, v in sorted(changed.items())}}
    return {"seconds": seconds, "peak_gb": _peak_gb(), "found": found}


def _run_phase(*args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--phase", *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--phase", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        name, *rest = args.phase
        folder = Path(rest[-1])
        result = {
            "hash": lambda: phase_hash(rest[0], folder),
            "ours": lambda: phase_ours(folder),
            "pandas": lambda: phase_pandas(folder),
        }[name]()
        print(json.dumps(result, ensure_ascii=False, default=str))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-reconcile-") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        truth = generate(args.rows, folder)
        print(
            f"generated {args.rows:,} items per side in {time.perf_counter() - start:.1f} s "
            f"({len(truth['added'])} added, {len(truth['removed'])} removed, {len(truth['changed'])} changed)"
        )
        hashing = [_run_phase("hash", side, str(folder)) for side in ("old", "new")]
        ours = _run_phase("ours", str(folder))
        merge = _run_phase("pandas", str(folder))
    for label, result in (("ours", ours), ("pandas merge", merge)):
        if result["found"] != truth:
            print(f"FAIL: {label} differs from the ground truth")
            return 1
    hash_s = sum(h["seconds"] for h in hashing)
    print(f"\n{'approach':<44}{'seconds':>9}{'peak GB':>9}")
    print(
        f"{'element hashes, both sides (once, at normalisation)':<44}{hash_s:>9.2f}"
        f"{max(h['peak_gb'] for h in hashing):>9.2f}"
    )
    print(f"{'ours: compare hashes + changed values':<44}{ours['seconds']:>9.2f}{ours['peak_gb']:>9.2f}")
    print(f"{'pandas merge + per-column compare':<44}{merge['seconds']:>9.2f}{merge['peak_gb']:>9.2f}")
    print(
        f"\nratio pandas/ours: {merge['seconds'] / ours['seconds']:.1f}x time, "
        f"{merge['peak_gb'] / ours['peak_gb']:.1f}x peak memory; both match the ground truth "
        f"({ours['changes']} element changes)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
