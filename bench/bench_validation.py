"""Benchmark: validate_items (the real GX suite) against the same checks in vectorised pandas.

    .venv/bin/python bench/bench_validation.py            # 10k and 100k rows
    .venv/bin/python bench/bench_validation.py --full     # and 1M rows

Synthetic catalogues shaped like shared/BASELINES.md (CJK text of realistic lengths, codes,
a list of materials, limits), built as groups of the same item at three levels so that the
五级N同 check has work to do, with ~0.5% of rows broken in one of several ways. Both sides
evaluate the same suite file on the same derived frame; the pandas side interprets each
expectation with plain Series operations, and the bench checks both flag the same rows.
Timings are medians; memory is tracemalloc's peak during a separate run of each phase (Python
objects and numpy arrays, not pyarrow buffers); the process's peak RSS is printed at the end.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from benchutil import peak_rss_gb

from tongban.codes import make_task_code, make_uscc
from tongban.registry import Partner, load_registry
from tongban.validation.derived import items_frame, validation_frame
from tongban.validation.elements import five_level_differences
from tongban.validation.runner import run_gx, validate_items
from tongban.validation.suite import FIVE_LEVEL_TYPE, Suite, expectation_parameters, load_suite

LEVELS = ("3", "4", "5")
DISTRICTS = ("440100", "440103", "440104", "440105", "440106", "440111", "440112", "440113")
CJK = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]


# ---------------------------------------------------------------- synthetic data


def _texts(rng: random.Random, count: int, low: int, high: int) -> list[str]:
    return ["".join(rng.choices(CJK, k=rng.randint(low, high))) for _ in range(count)]


def synthetic_records(rows: int, seed: int = 7) -> list[dict[str, Any]]:
    """``rows`` item records: groups of one item at three levels, ~0.5% of rows broken."""
    rng = random.Random(seed)
    pool = 4096
    names, bases = _texts(rng, pool, 10, 30), _texts(rng, pool, 100, 400)
    conditions, procedures = _texts(rng, pool, 100, 300), _texts(rng, pool, 100, 300)
    results, materials = _texts(rng, pool, 4, 12), _texts(rng, pool, 4, 16)
    depts = {lv: [make_uscc("1", "1", rng.choice(DISTRICTS), f"{lv}{i:07d}") for i in range(64)] for lv in LEVELS}
    updated = datetime(2026, 11, 1, tzinfo=UTC).isoformat()
    records: list[dict[str, Any]] = []
    for group in range(-(-rows // len(LEVELS))):
        item_type = rng.choice(("01", "07", "20"))
        catalog = f"00{item_type}{group // 1000:05d}{group % 1000:03d}"
        legal = rng.choice((15, 20, 30, 60))
        shared = {
            "partner": "440100",
            "catalog_code": catalog,
            "name": rng.choice(names),
            "legal_basis": rng.choice(bases),
            "item_type": item_type,
            "accept_conditions": rng.choice(conditions),
            "service_objects": sorted(rng.sample(["1", "2", "3", "6"], rng.randint(1, 2))),
            "procedure": rng.choice(procedures),
            "materials": [
                {"name": m, "required": True, "form": "paper", "copies": 1, "source": "申请人自备"}
                for m in rng.sample(materials, rng.randint(1, 5))
            ],
            "legal_limit": legal,
            "legal_limit_unit": "WD",
            "promised_limit": legal // 2,
            "promised_limit_unit": "WD",
            "result": rng.choice(results),
            "handling_mode": rng.choice(("1", "2", "3")),
            "handle_type": "2",
            "version": "1",
            "updated_at": updated,
            "source_ref": "",
        }
        for level in LEVELS:
            uscc = rng.choice(depts[level])
            record = {
                **shared,
                "task_code": make_task_code(uscc, level, catalog),
                "level": level,
                "dept_name": "某某局",
                "dept_uscc": uscc,
            }
            if rng.random() < 0.005:
                _break(record, rng)
            records.append(record)
    return records[:rows]


def _break(record: dict[str, Any], rng: random.Random) -> None:
    kind = rng.randrange(5)
    if kind == 0:
        record["dept_uscc"] = record["dept_uscc"][:17] + ("0" if record["dept_uscc"][17] != "0" else "1")
    elif kind == 1:
        record["legal_basis"] = ""
    elif kind == 2:
        record["promised_limit"] = record["legal_limit"] + 5
    elif kind == 3:
        record["service_objects"] = [*record["service_objects"], "8"]
    else:
        record["procedure"] = record["procedure"][::-1]  # a 五级N同 difference


# ---------------------------------------------------------------- the same checks in pandas


def pandas_checks(df: pd.DataFrame, suite: Suite, parameters: dict[str, Any]) -> dict[str, np.ndarray]:
    """Each expectation of the suite evaluated with plain pandas: check name -> failing rows."""
    out: dict[str, np.ndarray] = {}
    for check in suite.checks.values():
        kw = {
            k: parameters[v["$PARAMETER"]] if isinstance(v, dict) and "$PARAMETER" in v else v
            for k, v in check.kwargs.items()
        }
        if check.type == FIVE_LEVEL_TYPE:
            diffs = five_level_differences(
                df, kw["element_columns"], kw["group_columns"], kw["level_column"], kw["id_column"]
            )
            out[check.name] = np.array(sorted({d["row"] for diff in diffs for d in diff["differing"]}), dtype=int)
            continue
        if check.type == "expect_compound_columns_to_be_unique":
            bad = df.duplicated(kw["column_list"], keep=False)
        else:
            s = df[kw["column"]]
            bad = s.notna() & _failing(check.type, s, kw)
        out[check.name] = np.flatnonzero(bad.to_numpy())
    return out


def _failing(kind: str, s: pd.Series, kw: dict[str, Any]) -> pd.Series:
    if kind == "expect_column_values_to_be_in_set":
        return ~s.isin(kw["value_set"])
    if kind == "expect_column_values_to_match_regex":
        return ~s.str.contains(kw["regex"], regex=True)
    if kind == "expect_column_value_lengths_to_equal":
        return s.str.len() != kw["value"]
    values = s.str.len() if kind == "expect_column_value_lengths_to_be_between" else s
    bad = pd.Series(False, index=s.index)
    if kw.get("min_value") is not None:
        bad |= values < kw["min_value"]
    if kw.get("max_value") is not None:
        bad |= values > kw["max_value"]
    return bad


def gx_failing_rows(result: dict[str, Any]) -> dict[str, np.ndarray]:
    out = {}
    for r in result["results"]:
        rows = (r["result"] or {}).get("unexpected_index_list") or []
        out[r["expectation_config"]["meta"]["check"]] = np.array(sorted(rows), dtype=int)
    return out


# ---------------------------------------------------------------- measuring


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median seconds over ``repeat`` runs, and the last result."""
    times, value = [], None
    for _ in range(repeat):
        value = None
        gc.collect()
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), value


def traced_peak(fn: Callable[[], Any]) -> int:
    """Peak bytes allocated while ``fn`` runs, as tracemalloc sees them (Python objects and numpy
    arrays; pyarrow's own buffers are not traced). A separate run: tracing slows code down."""
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def bench(rows: int, partner: Partner, repeat: int) -> None:
    suite, parameters = load_suite(), expectation_parameters(partner)
    records = synthetic_records(rows)
    # The input is long-lived data by the time it is validated: keep the cyclic GC from walking
    # its millions of dicts again and again while frames are built (2-3x at 1M rows otherwise).
    gc.freeze()
    t_all, outcome = timed(lambda: validate_items(records, partner), repeat)
    rejected = len(outcome.rejected_rows)
    del outcome
    t_frame, frame = timed(lambda: items_frame(records), repeat)
    t_derive, derived = timed(lambda: validation_frame(frame), repeat)
    gx_frame = derived[suite.columns()]
    t_pandas, by_pandas = timed(lambda: pandas_checks(gx_frame, suite, parameters), repeat)
    t_gx, result = timed(lambda: run_gx(gx_frame, suite, parameters), repeat)
    by_gx = gx_failing_rows(result)
    agree = all(np.array_equal(by_gx[name], by_pandas[name]) for name in suite.checks)
    m_pandas = traced_peak(lambda: pandas_checks(gx_frame, suite, parameters))
    m_gx = traced_peak(lambda: run_gx(gx_frame, suite, parameters))
    m_all = traced_peak(lambda: validate_items(records, partner))
    mb = 1024**2
    print(
        f"{rows:>9,} rows | validate_items {t_all:6.2f}s (peak {m_all / mb:5.0f} MB)"
        f" = frame {t_frame:5.2f}s + derive {t_derive:5.2f}s + GX {t_gx:5.2f}s (peak {m_gx / mb:5.0f} MB) + rest"
        f" | same checks in pandas {t_pandas:6.3f}s (peak {m_pandas / mb:5.0f} MB)"
        f" | GX/pandas {t_gx / t_pandas:4.1f}x, with derive {(t_derive + t_gx) / (t_derive + t_pandas):4.1f}x"
        f" | rejected {rejected:,} | GX and pandas flag the same rows: {agree}",
        flush=True,
    )
    gc.unfreeze()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="also run 1M rows")
    parser.add_argument("--rows", type=int, nargs="*", help="row counts to run instead of the defaults")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement below 1M rows (median)")
    args = parser.parse_args()
    sizes = args.rows or [10_000, 100_000, *([1_000_000] if args.full else [])]
    partner = load_registry().partner("440100")
    start = time.perf_counter()
    import great_expectations  # noqa: F401  (import once, outside the timings)

    print(f"GX import {time.perf_counter() - start:.1f}s", flush=True)
    validate_items(synthetic_records(30), partner)  # warm up GX's registries
    for rows in sizes:
        bench(rows, partner, args.repeat if rows < 1_000_000 else 1)
    print(f"process peak RSS {peak_rss_gb():.2f} GB")


if __name__ == "__main__":
    main()
