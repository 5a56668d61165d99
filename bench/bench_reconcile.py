"""Benchmark: reconciling two catalogues — the pipeline's hash comparison against a pandas merge.

    .venv/bin/python bench/bench_reconcile.py              # 100k items
    .venv/bin/python bench/bench_reconcile.py --rows 1000000

Two catalogues shaped like shared/BASELINES.md (CJK text of realistic lengths; 2% added, 2%
removed, 5% of items changed in 1-3 of the ten elements) are written as Arrow IPC files of
`tongban.table.ITEM_SCHEMA`. Each phase then runs in its own process (modules imported before
the clock starts), so its peak RSS (what it reads included, memory-mapped pages too) is its own:

- hash: `tongban.hashing.keyed_hashes` of one catalogue, as computed once when items are stored;
- ours: `tongban.reconcile.compare_hashes` on the two hash files (the pipeline's own reconcile
  code), then the old and new values of the changed elements only, taken by row from the
  memory-mapped item files (`tongban.table.element_values`): element-level output;
- pandas: an outer merge of the full catalogues and a per-column comparison (datacompy 1.1 pins
  pandas < 3.1, so it cannot share this project's pandas; BASELINES.md has it at ~1.7x the merge).

Both comparisons must find exactly the generated ground truth, or the bench fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from benchutil import AnonPeak, peak_rss_gb

from tongban.hashing import keyed_hashes
from tongban.model import COMPARED
from tongban.reconcile import compare_hashes
from tongban.table import ITEM_SCHEMA, element_values, read_ipc, write_ipc

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
        "partner": pa.array(["440100"] * total, pa.string()),
        "version": pa.array(["1"] * total, pa.string()),
        "updated_at": pa.array(["2026-11-01T00:00:00+08:00"] * total, pa.string()),
        "source_ref": pa.array([""] * total, pa.string()),
    }
    full = pa.table({f.name: table[f.name].cast(f.type) for f in ITEM_SCHEMA}, schema=ITEM_SCHEMA)
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
    write_ipc(old, out / "old.arrow")
    write_ipc(new, out / "new.arrow")
    return {
        "added": sorted(added),
        "removed": sorted(removed),
        "changed": {k: sorted(v) for k, v in sorted(truth.items())},
    }


def phase_hash(side: str, folder: Path) -> dict[str, Any]:
    write_ipc(keyed_hashes(read_ipc(folder / f"{side}.arrow")), folder / f"{side}.hashes.arrow")
    return {}


def phase_ours(folder: Path) -> dict[str, Any]:
    result = compare_hashes(read_ipc(folder / "new.hashes.arrow"), read_ipc(folder / "old.hashes.arrow"))
    items = {side: read_ipc(folder / f"{side}.arrow") for side in ("old", "new")}
    codes = list(result.changed)
    changes = []  # (task code, element, old value, new value) for every changed element
    for element in COMPARED:
        at = np.flatnonzero(result.flags[:, result.elements.index(element.key)])
        if len(at):
            old = element_values(items["old"], result.old_rows[at], element)
            new = element_values(items["new"], result.new_rows[at], element)
            changes.extend(zip([codes[i] for i in at], [element.key] * len(at), old, new, strict=True))
    found = {
        "added": result.added,
        "removed": result.removed,
        "changed": {code: sorted(elements) for code, elements in result.changed.items()},
    }
    real = sum(1 for _, key, old, new in changes if old != new)
    return {"changes": len(changes), "real": real, "found": found}


def phase_pandas(folder: Path) -> dict[str, Any]:
    old = read_ipc(folder / "old.arrow").to_pandas()
    new = read_ipc(folder / "new.arrow").to_pandas()
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
    return {"added": added, "removed": removed, "changed": {k: sorted(v) for k, v in sorted(changed.items())}}


def _catalogues(rows: int, folder: Path) -> dict[str, Any]:
    """Generate the two catalogues into ``folder`` (or reuse what an earlier run left there)."""
    saved = folder / f"truth-{rows}.json"
    if saved.exists():
        print(f"reusing the {rows:,}-item catalogues in {folder}")
        return json.loads(saved.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    truth = generate(rows, folder)
    saved.write_text(json.dumps(truth))
    print(
        f"generated {rows:,} items per side in {time.perf_counter() - start:.1f} s "
        f"({len(truth['added'])} added, {len(truth['removed'])} removed, {len(truth['changed'])} changed)"
    )
    return truth


def _peaks(results: list[dict[str, Any]]) -> tuple[float, float]:
    return max(r["peak_gb"] for r in results), max(r["anon_gb"] for r in results)


def _run_phase(*args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--phase", *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--data", type=Path, help="keep the generated catalogues here and reuse them")
    parser.add_argument("--phase", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        name, *rest = args.phase
        folder = Path(rest[-1])
        phase = {
            "hash": lambda: phase_hash(rest[0], folder),
            "ours": lambda: phase_ours(folder),
            "pandas": lambda: {"found": phase_pandas(folder)},
        }[name]
        with AnonPeak() as anon:
            start = time.perf_counter()
            result = phase()
            seconds = time.perf_counter() - start
        result |= {"seconds": seconds, "peak_gb": peak_rss_gb(), "anon_gb": anon.gb}
        print(json.dumps(result, ensure_ascii=False, default=str))
        return 0
    with contextlib.ExitStack() as stack:
        folder = args.data or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-reconcile-")))
        truth = _catalogues(args.rows, folder)
        hashing = [_run_phase("hash", side, str(folder)) for side in ("old", "new")]
        ours = _run_phase("ours", str(folder))
        merge = _run_phase("pandas", str(folder))
    for label, result in (("ours", ours), ("pandas merge", merge)):
        if result["found"] != truth:
            print(f"FAIL: {label} differs from the ground truth")
            return 1
    if ours["real"] != ours["changes"]:
        print("FAIL: an element reported as changed has equal old and new values")
        return 1
    hash_s = sum(h["seconds"] for h in hashing)
    print(f"\n{'approach':<52}{'seconds':>9}{'peak RSS GB':>13}{'peak anon GB':>14}")
    rows = (
        ("element hashes, both sides (once, when items are stored)", hash_s, *_peaks(hashing)),
        ("ours: compare hashes + changed values", ours["seconds"], ours["peak_gb"], ours["anon_gb"]),
        ("pandas merge + per-column compare", merge["seconds"], merge["peak_gb"], merge["anon_gb"]),
    )
    for label, seconds, rss, anon in rows:
        print(f"{label:<52}{seconds:>9.2f}{rss:>13.2f}{anon:>14.2f}")
    print(
        "(peak RSS counts the item files' pages the kernel maps around each row read; peak anon is the"
        " memory allocated)"
    )
    print(
        f"\nratio pandas/ours: {merge['seconds'] / ours['seconds']:.1f}x time, "
        f"{merge['peak_gb'] / ours['peak_gb']:.1f}x peak memory; both match the ground truth "
        f"({ours['changes']} element changes)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
