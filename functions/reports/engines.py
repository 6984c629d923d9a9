"""The report engines: ydata-profiling and Evidently over frames taken from DuckDB.

The exact, full-table numbers come from analyze's DuckDB profile; these reports run in
pandas, so they get a reproducible sample of at most `max_rows` rows and at most
`max_columns` columns, with PII masked and every column name and text value HTML-escaped
before an engine sees it (a column named `<script>` must not become markup in their pages).
ydata_profiling and evidently take seconds to import, so they are imported inside the
functions that need them, which run in a child process (functions/reports/render.py).
"""

from __future__ import annotations

import functools
import html
import json
import re
import time
import warnings
from typing import TYPE_CHECKING

import duckdb

from shared.core.settings import library_env
from shared.core.templating import render
from shared.observability import telemetry
from shared.storage import duck
from shared.storage.duck import quote
from shared.analysis.evidentlyresult import drift_verdict, json_safe  # noqa: F401  (drift_verdict: re-exported)
from shared.security.pii import (CONTENT_SAMPLE, DEFAULT_POLICY, Policy, classify_values, content_candidate, is_missing,
                                 mask_value, pii_columns)
from shared.security.pii import mask_text  # noqa: F401  (re-exported for callers)

if TYPE_CHECKING:
    import pandas as pd


_IDENT = r'(?:[A-Za-z_][A-Za-z0-9_$]*|"(?:[^"]|"")+")'
_DOTTED_RE = re.compile(rf"{_IDENT}(?:\.{_IDENT}){{0,2}}")


def table_parts(table) -> list[str]:
    """Unquoted name parts of a table reference (as analyze's profile reads them): a
    tuple/list part by part; a string that is a valid SQL reference of bare or double-quoted
    identifiers (`sales`, `udb_snapshots."my table"`) split on its dots; any other string one name."""
    if not isinstance(table, str):
        return [str(part) for part in table]
    if _DOTTED_RE.fullmatch(table):
        parts = re.findall(_IDENT, table)
        return [p[1:-1].replace('""', '"') if p.startswith('"') else p for p in parts]
    return [table]


def table_ref(table) -> str:
    """Quoted SQL reference for a table (see table_parts for the accepted forms)."""
    return ".".join(quote(part) for part in table_parts(table))


def table_label(table) -> str:
    """Human/JSON name of a table reference: its unquoted parts joined by dots."""
    return ".".join(table_parts(table))


# ---------------------------------------------------------------- masking


def mask_frame(df: "pd.DataFrame", policy: Policy = DEFAULT_POLICY) -> "pd.DataFrame":
    """A copy of df with PII masked by shared.security.pii's rules: personal-data columns (by name, or by
    the content of their first CONTENT_SAMPLE non-null values) wholly, and emails, IBANs, card
    numbers, national ids and phone numbers inside every other text column. Other numeric
    columns are left alone. The input is not changed. Here rather than in shared.security.pii because
    only this function makes frames: shared.security.pii stays free of pandas, which analyze lacks."""
    import pandas as pd

    out = df.copy()
    kinds = pii_columns(out.columns)
    for name in out.columns:
        if name in kinds:
            continue
        column = out[name]
        if pd.api.types.is_bool_dtype(column) or pd.api.types.is_float_dtype(column):
            continue
        if not (pd.api.types.is_integer_dtype(column) or pd.api.types.is_object_dtype(column)
                or pd.api.types.is_string_dtype(column)):
            continue
        sample = [v.item() if hasattr(v, "item") else v for v in column.dropna().head(CONTENT_SAMPLE).tolist()]
        result = classify_values(sample, policy=policy) if content_candidate(sample) else None
        if result:
            kinds[name] = result[0]
    for name in out.columns:
        column = out[name]
        kind = kinds.get(name)
        is_text = pd.api.types.is_object_dtype(column) or pd.api.types.is_string_dtype(column)
        if not kind and not is_text:
            continue
        try:
            # Mask each distinct value once: categories repeat a lot.
            uniques = column.dropna().unique()
            mapping = {v: mask_value(v, kind, policy) for v in uniques}
        except TypeError:  # unhashable values (lists, dicts): one by one
            out[name] = pd.Series([v if is_missing(v) else mask_value(v, kind, policy) for v in column],
                                  index=column.index, dtype=object)
            continue
        if kind or any(mapping[v] != v for v in uniques):
            # Missing values (None, NaN, NaT) stay exactly as they were.
            out[name] = pd.Series([mapping.get(v, v) if not is_missing(v) else v for v in column],
                                  index=column.index, dtype=object)
    return out


def mask_pii(df: "pd.DataFrame", policy: Policy = DEFAULT_POLICY) -> "pd.DataFrame":
    """A copy of df with PII masked (mask_frame): emails ("a***@domain"), phone
    numbers, card numbers, IBANs and national ids ("***") in text, and whole values of columns
    whose names or contents say personal data (a card number column read as BIGINT included).
    Other numeric columns are left alone. `policy`: the caller's (pii.Policy.of(settings))."""
    return mask_frame(df, policy)


# ---------------------------------------------------------------- sampling


def sample_frame(
    con: duckdb.DuckDBPyConnection, table, max_rows: int, seed: int = 42, *, max_columns: int = 0
) -> tuple["pd.DataFrame", dict]:
    """Load the whole table, or a reproducible reservoir sample of max_rows rows, as pandas.

    Returns (frame, note) where note is {table, total_rows, sampled_rows, method, seed};
    method is "full" or "reservoir". The same seed and connection settings give the
    same sample. With max_columns > 0 a wider table is read on its first max_columns columns
    only (the note's `columns` and `reported_columns` say so): ydata-profiling and Evidently
    cost per column, and a 4,000-column table must not exhaust the machine.
    """
    source = table_ref(table)
    names = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()]
    kept = names[:max_columns] if max_columns and len(names) > max_columns else names
    select = "*" if kept == names else ", ".join(quote(n) for n in kept)
    total = duck.scalar(con, f"SELECT count(*) FROM {source}")
    if total <= max_rows:
        df = con.execute(f"SELECT {select} FROM {source}").df()
        method, used_seed = "full", None
    else:
        df = con.execute(
            f"SELECT {select} FROM {source} USING SAMPLE reservoir({int(max_rows)} ROWS) REPEATABLE ({int(seed)})"
        ).df()
        method, used_seed = "reservoir", seed
    note = {
        "table": table_label(table),
        "total_rows": total,
        "sampled_rows": len(df),
        "method": method,
        "seed": used_seed,
        "columns": len(names),
        "reported_columns": len(kept),
    }
    return df, note


def columns_text(sampling: dict | None) -> str:
    """"" or the sentence saying only the first columns were reported."""
    if sampling and sampling.get("reported_columns", 0) < sampling.get("columns", 0):
        return (f"Reported on the first {sampling['reported_columns']:,} of {sampling['columns']:,} columns "
                f"(UDB_REPORTS_MAX_COLUMNS); the DuckDB profile covers every column.")
    return ""


def sampling_text(sampling: dict | None) -> str:
    """One sentence describing how a frame was drawn from its table."""
    cols = columns_text(sampling)
    return _rows_text(sampling) + (f" {cols}" if cols else "")


def _rows_text(sampling: dict | None) -> str:
    if not sampling or sampling.get("method") == "full":
        rows = (sampling or {}).get("total_rows")
        return f"Computed on all {rows:,} rows." if rows is not None else "Computed on the full data."
    return (
        f"Computed on a sample: {sampling['sampled_rows']:,} of {sampling['total_rows']:,} rows "
        f"({sampling['method']} sampling, seed {sampling.get('seed')}). "
        "Exact full-table statistics are in the DuckDB profile."
    )


PREPARED = "udb_prepared"
PII_NOTE = ("PII is masked: emails keep their first character and domain; phone numbers, card numbers "
            "(Luhn), IBANs (mod 97) and national ids are replaced, and so are the values of columns named "
            "as personal data or holding mostly such values (shared/security/pii.py).")


def prepare_frame(df: "pd.DataFrame", policy: Policy = DEFAULT_POLICY) -> "pd.DataFrame":
    """Masked copy with types the pandas-based libraries handle, made once per frame and
    shared by every report (a prepared frame is returned as it is).

    PII masked (mask_pii), tz-aware datetimes -> naive UTC, nullable integers -> float64,
    +-inf -> NaN, UUID/Decimal/list/bytes objects -> str or float; then every column name and
    every text value HTML-escaped (html.escape: injective, so counts and distinct values are
    kept): the engines put names and values into their pages, not always escaped.
    """
    if df.attrs.get(PREPARED):
        return df
    out = _frame_for_reports(df, policy)
    out.attrs[PREPARED] = True
    return out


def _frame_for_reports(df: "pd.DataFrame", policy: Policy) -> "pd.DataFrame":
    import pandas as pd

    if df.attrs.get(PREPARED):
        return df
    out = mask_pii(df, policy)
    for name in out.columns:
        column = out[name]
        if isinstance(column.dtype, pd.DatetimeTZDtype):
            out[name] = column.dt.tz_convert("UTC").dt.tz_localize(None)
        elif pd.api.types.is_extension_array_dtype(column.dtype) and pd.api.types.is_numeric_dtype(column.dtype):
            # Nullable Int32 & co. break Evidently's NA comparisons; float64 keeps NaN semantics.
            out[name] = column.astype("float64")
        elif pd.api.types.is_float_dtype(column.dtype):
            # inf breaks drift distances and histograms; the DuckDB profile counts them (non_finite).
            out[name] = column.replace([float("inf"), float("-inf")], float("nan"))
        elif column.dtype == object:
            # UUID, Decimal, bytes, lists: give the libraries plain strings/floats.
            sample = column.dropna().head(50)
            if len(sample) and not all(isinstance(v, str) for v in sample):
                if all(isinstance(v, (int, float)) or type(v).__name__ == "Decimal" for v in sample):
                    out[name] = pd.to_numeric(column, errors="coerce")
                else:
                    out[name] = column.map(lambda v: None if v is None else str(v))
    return escape_frame(out)


def escape_frame(df: "pd.DataFrame") -> "pd.DataFrame":
    """Column names and text values HTML-escaped; numbers, dates and nulls as they were."""
    for name in df.columns:
        if df[name].dtype == object or str(df[name].dtype) in ("string", "str"):
            df[name] = df[name].map(lambda v: html.escape(v) if isinstance(v, str) else v)
    df.columns = [html.escape(str(c)) for c in df.columns]
    return df


# ---------------------------------------------------------------- ydata-profiling


@telemetry.staged("quality", lambda *a, **k: {"report": "ydata-profiling"})
def ydata_report_html(df: "pd.DataFrame", title: str, sampling: dict | None, *, minimal: bool = True) -> str:
    """ydata-profiling report (minimal mode unless asked) as one offline HTML page.

    minimal=True on purpose: the exact full-table statistics come from DuckDB
    (profile.profile_table); this report adds the visuals (histograms, value charts,
    samples) on a bounded frame, where the expensive ydata extras (interactions,
    correlation matrices, missing-value diagrams) would add minutes and no new facts.
    PII is masked before profiling. When sampled, the title and a visible banner say so.
    """
    # Before the import: no usage ping to ydata's server, headless matplotlib.
    library_env({"YDATA_PROFILING_NO_ANALYTICS": "1"}, force=True)
    library_env({"MPLBACKEND": "Agg"})
    with warnings.catch_warnings():
        # 4.18 warns on import that the package moved to fg-data-profiling.
        warnings.simplefilter("ignore", DeprecationWarning)
        from ydata_profiling import ProfileReport
        from ydata_profiling.model.pandas import summary_pandas

    # ydata-profiling 4.18 ignores progress_bar=False in its per-column loop.
    if not isinstance(summary_pandas.tqdm, functools.partial):
        summary_pandas.tqdm = functools.partial(summary_pandas.tqdm, disable=True)

    note = sampling_text(sampling) + " " + PII_NOTE
    sampled, full_title = False, title
    if sampling and sampling.get("method") != "full":
        sampled = True
        full_title = f"{title} (sample {sampling['sampled_rows']:,} of {sampling['total_rows']:,} rows)"
    report = ProfileReport(
        prepare_frame(df),
        minimal=minimal,
        title=html.escape(full_title),
        progress_bar=False,
        dataset={"description": note},
        html={"use_local_assets": True, "inline": True, "navbar_show": True},
    )
    page = report.to_html()
    return _insert_after_body(page, sampling_banner(sampled, note))


def sampling_banner(sampled: bool, note: str) -> str:
    """The visible note put at the top of a ydata page: what rows it was computed from
    (templates/sampling_note.html, autoescaped)."""
    return render(__package__, "sampling_note.html", sampled=sampled, note=note).rstrip("\n")


def _insert_after_body(page: str, fragment: str) -> str:
    match = re.search(r"<body[^>]*>", page, flags=re.IGNORECASE)
    if not match:
        return fragment + page
    return page[: match.end()] + fragment + page[match.end():]


# ---------------------------------------------------------------- Evidently


def _evidently_dataset(df: "pd.DataFrame"):
    from evidently import DataDefinition, Dataset

    # Empty DataDefinition: Evidently infers numerical/categorical/datetime columns.
    return Dataset.from_pandas(prepare_frame(df), data_definition=DataDefinition())


def _snapshot_outputs(snapshot) -> tuple[str, dict]:
    # json() uses Evidently's NumpyEncoder; reloading and json_safe turns NaN into None.
    result = json_safe(json.loads(snapshot.json()))
    return snapshot.get_html_str(as_iframe=False), result


@telemetry.staged("quality", lambda *a, **k: {"report": "evidently-summary"})
def evidently_summary(df: "pd.DataFrame") -> tuple[str, dict]:
    """Evidently 0.7 DataSummaryPreset with tests on df; returns (standalone HTML, result dict).

    The dict is {"metrics": [{id, metric_name, config, value}], "tests": [{name,
    description, status, ...}]}. The HTML embeds Evidently's JS, so it works offline.
    """
    from evidently import Report
    from evidently.presets import DataSummaryPreset

    with warnings.catch_warnings():
        # numpy "invalid value" noise on empty or constant columns; results are NaN -> None.
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = Report([DataSummaryPreset()], include_tests=True).run(current_data=_evidently_dataset(df))
    return _snapshot_outputs(snapshot)


@telemetry.staged("quality", lambda *a, **k: {"report": "evidently-drift"})
def evidently_drift(current_df: "pd.DataFrame", reference_df: "pd.DataFrame") -> tuple[str, dict]:
    """Evidently 0.7 DataDriftPreset (current vs reference) with tests; returns (HTML, result dict).

    Only columns present in both frames and not entirely null in either are compared
    (Evidently raises on an empty column); the others are listed under
    result["skipped_columns"]. Pass the result dict to drift_verdict() for a verdict.
    """
    from evidently import Report
    from evidently.presets import DataDriftPreset

    current_df, reference_df = prepare_frame(current_df), prepare_frame(reference_df)
    shared = [c for c in current_df.columns if c in reference_df.columns]
    usable = [c for c in shared if current_df[c].notna().any() and reference_df[c].notna().any()]
    skipped = [c for c in list(current_df.columns) + list(reference_df.columns) if c not in usable]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = Report([DataDriftPreset()], include_tests=True).run(
            current_data=_evidently_dataset(_keep_prepared(current_df[usable])),
            reference_data=_evidently_dataset(_keep_prepared(reference_df[usable])),
        )
    page, result = _snapshot_outputs(snapshot)
    result["skipped_columns"] = json_safe(list(dict.fromkeys(skipped)))
    return page, result


def _keep_prepared(df: "pd.DataFrame") -> "pd.DataFrame":
    df.attrs[PREPARED] = True
    return df


# ---------------------------------------------------------------- drift reference cache

# 3: names and text values are HTML-escaped (issue 16).
# 2: PII masking finds card numbers, IBANs and national ids (and such columns by content): a
# reference cached by an older version may hold them unmasked, so it is never reused.
CACHE_VERSION = 3
CACHE_PREFIX = "cache/drift-reference/"


def table_fingerprint(con: duckdb.DuckDBPyConnection, table) -> str:
    """A content hash of a table: its schema, row count and an order-independent sum of row
    hashes (one DuckDB scan, ~0.1 s per million rows). Equal tables give equal fingerprints."""
    import hashlib

    source = table_ref(table)
    schema = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
    rows, digest = duck.one(con, f"SELECT count(*), sum(hash(t)::HUGEINT) FROM {source} AS t")
    text = json.dumps([[list(c[:2]) for c in schema], rows, str(digest)])
    return hashlib.sha256(text.encode()).hexdigest()


def reference_key(con: duckdb.DuckDBPyConnection, table, max_rows: int, *, cache_name: str | None = None,
                  seed: int = 42, max_columns: int = 0) -> tuple[str, str, str]:
    """(parquet key, metadata key, folder) of a table's cached drift reference: its content
    fingerprint plus the sample size, column cap, seed and cache version."""
    import hashlib

    name = re.sub(r"[^A-Za-z0-9._-]+", "_", cache_name or table_label(table))
    fingerprint = table_fingerprint(con, table)
    digest = hashlib.sha256(f"{fingerprint}:{max_rows}:{max_columns}:{seed}:{CACHE_VERSION}".encode()).hexdigest()[:32]
    folder = f"{CACHE_PREFIX}{name}/"
    return f"{folder}{digest}.parquet", f"{folder}{digest}.json", folder


def reference_frame(con: duckdb.DuckDBPyConnection, table, max_rows: int, store=None, *,
                    cache_name: str | None = None, seed: int = 42, max_columns: int = 0,
                    policy: Policy = DEFAULT_POLICY) -> tuple["pd.DataFrame", dict]:
    """The drift reference of a table: a reproducible sample of at most max_rows rows,
    PII-masked and prepared for Evidently, cached in the tenant store.

    The cache key is the table's content fingerprint plus the sample size, seed and cache
    version, so a reference is reused exactly while the snapshot is unchanged; a new
    snapshot gets a new key and the older entries of the same table are removed. Returns
    (frame, info) with info = {cache: hit|miss|off, key, sampling, seconds}.
    """
    import io

    import pandas as pd

    started = time.perf_counter()
    if store is None:
        frame, sampling = sample_frame(con, table, max_rows, seed=seed, max_columns=max_columns)
        return prepare_frame(frame, policy), {"cache": "off", "key": None, "sampling": sampling,
                                      "seconds": round(time.perf_counter() - started, 3)}
    key, meta_key, folder = reference_key(con, table, max_rows, cache_name=cache_name, seed=seed,
                                          max_columns=max_columns)
    try:
        data = store.get(key).data
        sampling = json.loads(store.get(meta_key).data)
        frame = pd.read_parquet(io.BytesIO(data))
        frame.attrs[PREPARED] = True
        return frame, {"cache": "hit", "key": key, "sampling": sampling,
                       "seconds": round(time.perf_counter() - started, 3)}
    except (KeyError, ValueError, OSError):  # NotFound is a KeyError; a damaged entry is rebuilt
        pass
    frame, sampling = sample_frame(con, table, max_rows, seed=seed, max_columns=max_columns)
    prepared = prepare_frame(frame, policy)
    buffer = io.BytesIO()
    prepared.to_parquet(buffer, index=False)
    # The frame read back is the one used, so a hit and a miss give the same report.
    frame = pd.read_parquet(io.BytesIO(buffer.getvalue()))
    frame.attrs[PREPARED] = True
    for old in list(store.list(folder)):
        if old.key not in (key, meta_key):
            store.delete(old.key)
    store.put(meta_key, json.dumps(sampling).encode(), content_type="application/json")
    store.put(key, buffer.getvalue(), content_type="application/vnd.apache.parquet")
    return frame, {"cache": "miss", "key": key, "sampling": sampling,
                   "seconds": round(time.perf_counter() - started, 3)}
