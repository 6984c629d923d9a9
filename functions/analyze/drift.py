"""Drift of a table against its previous snapshot, computed in DuckDB over every row.

The reference is the table as it was before its latest load: the lake's previous snapshot of
it, by time travel, which readers see as the view `udb_snapshots.<table>` (shared/storage/lake.py); this
module compares `main.<table>` with it, column by column, and gives each column a distance
and a verdict. The tests and thresholds are Evidently's defaults (evidently 0.7,
`legacy/calculations/stattests/registry.py::_get_default_stattest`), so the verdict is the one
Evidently's DataDriftPreset would give on the same rows:

| reference rows (non-null) | numerical, > 5 distinct values | numerical, <= 5 values, or categorical |
|---|---|---|
| > 1000  | normed Wasserstein distance >= 0.1 | Jensen-Shannon distance >= 0.1 |
| <= 1000 | Kolmogorov-Smirnov p-value <= 0.05 | chi-square p-value < 0.05 (Z-test when <= 2 values) |

Column kinds follow Evidently's inference (`core/datasets.py::infer_column_type`): floats and
decimals are numerical; integers with at most 10 distinct values are categorical (its
INTEGER_CARDINALITY_LIMIT), other integers numerical; booleans are categorical; strings are
categorical unless more than half of them are distinct, which makes them free text. Free text
(Evidently trains a classifier for it) and dates and times (Evidently tests no drift on them)
are listed as skipped, with the reason. Nulls, NaN and infinities are dropped first, as
Evidently does.

Everything is exact: each column's values are counted per distinct value on both sides and
joined, so the Wasserstein distance (the area between the two ECDFs), the KS statistic (their
largest gap) and the Jensen-Shannon distance come from every row, not a sample. Only the
p-values of the small-reference tests need scipy, imported then.
"""
from __future__ import annotations

import math
from typing import Any
import time

from shared.observability import telemetry
from shared.storage import duck
from shared.storage.duck import literal, quote

from .profile import table_ref

# Evidently's defaults (evidently/legacy/calculations/stattests/*.py and metrics/column_statistics.py).
SMALL_REFERENCE_ROWS = 1000        # _get_default_stattest: reference_data.shape[0] <= 1000
FEW_VALUES = 5                     # numerical columns with <= 5 values are tested as categories
INTEGER_CARDINALITY_LIMIT = 10     # core/datasets.py: an integer column with <= 10 values is categorical
TEXT_DISTINCT_SHARE = 0.5          # core/datasets.py: strings more than half distinct are text
DATASET_DRIFT_SHARE = 0.5          # DataDriftPreset(drift_share=0.5)
WASSERSTEIN_THRESHOLD = 0.1        # wasserstein_stat_test.default_threshold
JENSENSHANNON_THRESHOLD = 0.1      # jensenshannon_stat_test.default_threshold
P_VALUE_THRESHOLD = 0.05           # ks, chisquare, z: StatTest's default threshold
KS_EXACT_MAX_N = 10_000            # scipy.stats.ks_2samp(method="auto"): exact up to this size

METHODS = {
    "wasserstein": ("Wasserstein distance (normed)", WASSERSTEIN_THRESHOLD),
    "jensenshannon": ("Jensen-Shannon distance", JENSENSHANNON_THRESHOLD),
    "ks": ("K-S p_value", P_VALUE_THRESHOLD),
    "chisquare": ("chi-square p_value", P_VALUE_THRESHOLD),
    "z": ("Z-test p_value", P_VALUE_THRESHOLD),
}

_FLOATS = ("FLOAT", "DOUBLE", "REAL")
_INTEGERS = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
             "UBIGINT", "UHUGEINT")
_TEMPORAL = ("DATE", "TIME", "TIMESTAMP", "INTERVAL")
_NUMERIC = {"float", "decimal", "integer"}  # compared as DOUBLE whichever of these each side is


def _reference_version(con, table: str) -> int | None:
    """The lake snapshot the reference view reads (None outside a lake)."""
    from shared.storage import lake
    try:
        return lake.reference_versions(con).get(table)
    except Exception:  # a plain DuckDB file: no lake attached
        return None


def snapshot_drift(con, table: str) -> dict | None:
    """Drift of `main.<table>` against `udb_snapshots.<table>`; None when the table has no
    snapshot yet (its first load)."""
    # A view over the lake's previous snapshot (or a table, in a plain DuckDB file).
    found = duck.scalar(con, "SELECT count(*) FROM (SELECT schema_name, table_name AS name FROM duckdb_tables() "
                        "UNION ALL SELECT schema_name, view_name FROM duckdb_views()) "
                        f"WHERE schema_name = 'udb_snapshots' AND name = {literal(table)}")  # no `?`: it imports pandas
    if not found:
        return None
    with telemetry.stage("drift", table=table):
        result = table_drift(con, f"main.{quote(table)}", f"udb_snapshots.{quote(table)}")
    result["reference"] = {"snapshot": f"udb_snapshots.{table}", "rows": result["rows"]["reference"]}
    version = _reference_version(con, table)
    if version is not None:
        result["reference"]["version"] = version
    return result


def table_drift(con, current, reference) -> dict:
    """Per-column drift of the relation `current` against `reference` (SQL references or
    names accepted by profile.table_ref), over every row.

    Returns {engine, rows: {current, reference}, dataset_drift, drifted_columns, share,
    drifted_count, threshold, columns: [{column, kind, method, test, score, threshold,
    drifted, n_current, n_reference, values, statistics}], skipped: [{column, type, reason}],
    seconds}. `share` is the drifted share of the compared columns; the dataset drifts when
    it reaches `threshold` (Evidently's drift_share)."""
    started = time.perf_counter()
    cur_sql, ref_sql = _relation(current), _relation(reference)
    cur_types = _types(con, cur_sql)
    ref_types = _types(con, ref_sql)
    rows_cur = duck.scalar(con, f"SELECT count(*) FROM {cur_sql}")
    rows_ref = duck.scalar(con, f"SELECT count(*) FROM {ref_sql}")

    skipped, candidates = [], []
    for name, dtype in cur_types.items():
        family = _family(dtype)
        if name not in ref_types:
            skipped.append({"column": name, "type": dtype, "reason": "not in the reference"})
        elif family == "temporal":
            skipped.append({"column": name, "type": dtype, "reason": "date/time column: Evidently tests no drift "
                                                                     "on datetime columns"})
        elif family is None:
            skipped.append({"column": name, "type": dtype, "reason": f"type {dtype} is not compared"})
        elif _family(ref_types[name]) != family and not {family, _family(ref_types[name])} <= _NUMERIC:
            skipped.append({"column": name, "type": dtype,
                            "reason": f"type changed from {ref_types[name]} to {dtype}"})
        else:
            candidates.append((name, dtype, family))

    # One query per column counts every distinct value on both sides; the kind, the test and
    # every statistic come from those counts. (Running columns concurrently on cursors measured
    # no faster on two cores: each query already uses the connection's threads.)
    outcomes = [_column(con, cur_sql, ref_sql, *candidate) for candidate in candidates]
    columns: list[dict] = []
    for outcome in outcomes:
        (skipped if "reason" in outcome else columns).append(outcome)
    drifted = [c["column"] for c in columns if c["drifted"]]
    share = len(drifted) / len(columns) if columns else 0.0
    return {
        "engine": "duckdb",
        "rows": {"current": rows_cur, "reference": rows_ref},
        "dataset_drift": bool(columns) and share >= DATASET_DRIFT_SHARE,
        "drifted_columns": drifted,
        "share": share,
        "drifted_count": len(drifted),
        "threshold": DATASET_DRIFT_SHARE,
        "columns": columns,
        "skipped": skipped,
        "seconds": round(time.perf_counter() - started, 3),
    }


# ---------------------------------------------------------------- SQL


def _relation(table) -> str:
    if isinstance(table, str) and ('"' in table or "(" in table):
        return table  # already a quoted reference or a subquery
    return table_ref(table)


def _types(con, relation: str) -> dict[str, str]:
    return {row[0]: row[1] for row in con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()}


def _family(dtype: str) -> str | None:
    base = dtype.upper().split("(")[0].strip()
    if base in _FLOATS:
        return "float"
    if base == "DECIMAL":
        return "decimal"
    if base in _INTEGERS:
        return "integer"
    if base == "BOOLEAN":
        return "boolean"
    if base == "VARCHAR" or base.startswith("ENUM"):
        return "string"
    if base.startswith(_TEMPORAL):
        return "temporal"
    return None


def _value(name: str, family: str) -> tuple[str, str]:
    """The column as compared, and the filter that keeps what Evidently keeps (no null, NaN, inf)."""
    q = quote(name)
    if family == "float":
        return f"{q}::DOUBLE", f"{q} IS NOT NULL AND isfinite({q})"
    if family in ("decimal", "integer"):
        return f"{q}::DOUBLE", f"{q} IS NOT NULL"
    return q, f"{q} IS NOT NULL"


def _counts_sql(cur_sql: str, ref_sql: str, value: str, keep: str) -> str:
    """A column's counts per distinct value of either side (cr in the reference, cc in the
    current table), and their totals: sizes, distinct values, distinct current values."""
    return f"""
        u AS (SELECT {value} AS x, 1 AS r FROM {ref_sql} WHERE {keep}
              UNION ALL SELECT {value}, 0 FROM {cur_sql} WHERE {keep}),
        j AS MATERIALIZED (SELECT x, sum(r)::BIGINT AS cr, (count(*) - sum(r))::BIGINT AS cc FROM u GROUP BY x),
        t AS (SELECT coalesce(sum(cr), 0)::BIGINT AS nr, coalesce(sum(cc), 0)::BIGINT AS nc,
                     count(*) AS values, count(*) FILTER (WHERE cc > 0) AS distinct_current FROM j)"""


def _numbers_sql(cur_sql: str, ref_sql: str, name: str, family: str) -> str:
    """The two ECDFs at every distinct value of either side, in integers: d = cum_ref * n_cur -
    cum_cur * n_ref = (F_ref - F_cur) * n_ref * n_cur exactly. The Wasserstein-1 distance is the
    area between the ECDFs (|d| times the gap to the next value), the KS statistic their largest
    gap; plus the reference's population std, Evidently's norm."""
    value, keep = _value(name, family)
    return f"""
        WITH {_counts_sql(cur_sql, ref_sql, value, keep)},
        e AS (SELECT sum(cr * t.nc - cc * t.nr) OVER w AS d, lead(x) OVER w - x AS dx
              FROM j, t WINDOW w AS (ORDER BY x ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)),
        n AS (SELECT sum(abs(d)::DOUBLE * coalesce(dx, 0)) AS area, max(abs(d)) AS gap FROM e)
        SELECT t.nr, t.nc, t.values, t.distinct_current, n.area / (t.nr * t.nc), n.gap::DOUBLE / (t.nr * t.nc),
               (SELECT stddev_pop({value}) FROM {ref_sql} WHERE {keep})
        FROM t, n"""


def _categories_sql(cur_sql: str, ref_sql: str, name: str, family: str) -> str:
    """The Jensen-Shannon distance of the two value distributions (natural log, as
    scipy.spatial.distance.jensenshannon with base=None) and Pearson's chi-square of the current
    counts against the reference's scaled to the current size (inf when a value is new)."""
    value, keep = _value(name, family)
    return f"""
        WITH {_counts_sql(cur_sql, ref_sql, value, keep)},
        c AS (SELECT
               sqrt(greatest(0, (sum(CASE WHEN cr > 0 THEN cr / t.nr * ln((cr / t.nr) / ((cr / t.nr + cc / t.nc) / 2))
                                          ELSE 0 END)
                               + sum(CASE WHEN cc > 0 THEN cc / t.nc * ln((cc / t.nc) / ((cr / t.nr + cc / t.nc) / 2))
                                          ELSE 0 END)) / 2)) AS js,
               sum(CASE WHEN cr > 0 THEN (cc - cr * (t.nc::DOUBLE / t.nr)) ** 2 / (cr * (t.nc::DOUBLE / t.nr)) END) AS chi,
               count(*) FILTER (WHERE cr = 0 AND cc > 0) AS unseen
              FROM j, t WHERE t.nr > 0 AND t.nc > 0 GROUP BY t.nr, t.nc)
        SELECT t.nr, t.nc, t.values, t.distinct_current, c.js, c.chi, c.unseen FROM t LEFT JOIN c ON true"""


def _column(con, cur_sql: str, ref_sql: str, name: str, dtype: str, family: str) -> dict:
    """One column's verdict, or {column, type, reason} when it is not compared. Numbers get the
    ECDF query first, and the categories query only when Evidently would test them as
    categories (an integer of <= 10 values, or <= 5 values in all): it costs a second pass,
    but a column of a million distinct numbers skips its Jensen-Shannon terms."""
    # DuckDB's answers: the numbers' statistics or the categories', the others stay None.
    wasserstein: Any = None
    ks: Any = None
    std_ref: Any = None
    js: Any = None
    chi: Any = None
    unseen: Any = None
    if family in _NUMERIC:
        n_ref, n_cur, values, distinct_cur, wasserstein, ks, std_ref = con.execute(
            _numbers_sql(cur_sql, ref_sql, name, family)).fetchone()
    else:
        n_ref, n_cur, values, distinct_cur, js, chi, unseen = con.execute(
            _categories_sql(cur_sql, ref_sql, name, family)).fetchone()
    if family in ("float", "decimal"):
        kind = "numerical"
    elif family == "integer":
        kind = "categorical" if distinct_cur <= INTEGER_CARDINALITY_LIMIT else "numerical"
    elif family == "boolean":
        kind = "categorical"
    elif distinct_cur > TEXT_DISTINCT_SHARE * n_cur:
        return {"column": name, "type": dtype,
                "reason": f"free text (more than half of its {n_cur:,} values distinct): Evidently "
                          "compares text with a trained classifier, not a distribution test"}
    else:
        kind = "categorical"
    if n_cur == 0 or n_ref == 0:
        return {"column": name, "type": dtype,
                "reason": f"no values in the {'current' if n_cur == 0 else 'reference'} table"}
    # Evidently tests a numerical column with <= 5 distinct values (both sides) as categories.
    tested = "numerical" if kind == "numerical" and values > FEW_VALUES else "categorical"
    if tested == "categorical" and js is None:
        _, _, _, _, js, chi, unseen = con.execute(_categories_sql(cur_sql, ref_sql, name, family)).fetchone()

    stats: dict[str, float] = {}
    if kind == "numerical":
        norm = max(float(std_ref or 0.0), 0.001)  # Evidently: max(np.std(reference), 0.001)
        stats.update({"wasserstein": float(wasserstein), "reference_std": float(std_ref or 0.0),
                      "wasserstein_norm": float(wasserstein) / norm, "ks_statistic": float(ks)})
    if js is not None:
        stats.update({"jensenshannon": float(js), "chisquare": math.inf if unseen else float(chi or 0.0)})

    small = n_ref <= SMALL_REFERENCE_ROWS
    if tested == "numerical":
        method = "ks" if small else "wasserstein"
        if small:
            stats["ks_p_value"] = ks_p_value(stats["ks_statistic"], n_ref, n_cur)
    elif small:
        method = "chisquare" if values > 2 else "z"
        if method == "chisquare":
            stats["chisquare_p_value"] = _chi2_sf(stats["chisquare"], values - 1)
        else:
            stats["z_p_value"] = _z_p_value(con, cur_sql, ref_sql, name, family, n_ref, n_cur, values)
    else:
        method = "jensenshannon"
    score = stats[{"wasserstein": "wasserstein_norm", "jensenshannon": "jensenshannon", "ks": "ks_p_value",
                   "chisquare": "chisquare_p_value", "z": "z_p_value"}[method]]
    test, threshold = METHODS[method]
    if method in ("wasserstein", "jensenshannon"):
        drifted = score >= threshold
    elif method == "ks":
        drifted = score <= threshold  # _ks_stat_test: p_value <= threshold
    else:
        drifted = score < threshold   # _chi_stat_test, _z_stat_test: p_value < threshold
    return {"column": name, "kind": kind, "method": method, "test": test, "score": score, "threshold": threshold,
            "drifted": bool(drifted), "n_current": n_cur, "n_reference": n_ref, "values": values,
            "statistics": {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in stats.items()}}


# ---------------------------------------------------------------- p-values (small references only)


def ks_p_value(d: float, n1: int, n2: int) -> float:
    """Two-sided p-value of the two-sample KS statistic d, as scipy.stats.ks_2samp(method="auto")
    computes it: the exact distribution while max(n1, n2) <= 10,000, else Smirnov's asymptotic one."""
    import numpy as np
    from scipy.stats import distributions

    if max(n1, n2) <= KS_EXACT_MAX_N:
        # The exact path of ks_2samp, which takes the data; we have the statistic already.
        # A private helper of the pinned scipy: tests/unit/test_drift.py checks it against ks_2samp.
        from scipy.stats._stats_py import _attempt_exact_2kssamp

        success, _, prob = _attempt_exact_2kssamp(n1, n2, math.gcd(n1, n2), d, "two-sided")
        if success:
            return float(np.clip(prob, 0, 1))
    m, n = sorted([float(n1), float(n2)], reverse=True)
    return float(np.clip(distributions.kstwo.sf(d, np.round(m * n / (m + n))), 0, 1))


def _chi2_sf(statistic: float, dof: int) -> float:
    if math.isinf(statistic):
        return 0.0
    from scipy.stats import chi2

    return float(chi2.sf(statistic, dof))


def _z_p_value(con, cur_sql, ref_sql, name, family, n_ref, n_cur, values) -> float:
    """evidently's _z_stat_test: the share of values other than the smallest, compared between
    the two sides with a pooled two-proportion Z-test (p = 1 when both hold the same one value)."""
    if values == 1:
        return 1.0
    from scipy.stats import norm

    value, keep = _value(name, family)
    first = duck.scalar(con, f"SELECT min(x) FROM (SELECT {value} AS x FROM {ref_sql} WHERE {keep} "
                        f"UNION ALL SELECT {value} FROM {cur_sql} WHERE {keep})")
    other_ref = duck.scalar(con, f"SELECT count(*) FILTER (WHERE {value} <> ?) FROM {ref_sql} WHERE {keep}",
                            [first])
    other_cur = duck.scalar(con, f"SELECT count(*) FILTER (WHERE {value} <> ?) FROM {cur_sql} WHERE {keep}",
                            [first])
    p1, p2 = other_ref / n_ref, other_cur / n_cur
    pooled = (p1 * n_ref + p2 * n_cur) / (n_ref + n_cur)
    z = (p1 - p2) / math.sqrt(pooled * (1 - pooled) * (1.0 / n_ref + 1.0 / n_cur))
    return float(2 * (1 - norm.cdf(abs(z))))
