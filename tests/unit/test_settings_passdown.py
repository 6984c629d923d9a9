"""Issue 18: Settings are built once, at an entry point, and passed down.

Nothing in shared/ or functions/ below an entry point calls `from_env(` or touches `os.environ` /
`os.getenv`: the Settings a caller passes are the ones in force (the SSRF allowlist, the size
caps, the PII policy). And the caller's Settings really control them: two Settings in one process
give two verdicts.
"""
from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path

import pytest

from shared.core.errors import ValidationError
from shared.core.settings import Settings

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("shared", "functions")
# Where reading the environment is the point: the one settings module, each function's
# functions-framework entry point, and the reports renderer, a child process's __main__ that
# builds its Settings once from what its parent handed down (functions/reports/render.py).
ENTRY_FILES = {"shared/core/settings.py", "functions/reports/render.py"}
ENTRY_GLOBS = ("functions/*/main.py",)
ENV_NAMES = {"environ", "getenv", "putenv", "unsetenv", "environb", "getenvb"}


def _entry_file(rel: str) -> bool:
    return rel in ENTRY_FILES or any(Path(rel).match(g) for g in ENTRY_GLOBS)


def _is_main_guard(node: ast.AST) -> bool:
    """`if __name__ == "__main__":`"""
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__"
            and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in node.test.comparators))


def _entry_nodes(tree: ast.Module) -> set[int]:
    """ids of the nodes of a module's own command-line entry: its `if __name__ == "__main__"`
    block and, in such a module, its top-level `main()` (e.g. `python -m functions.artifacts.admin`)."""
    guards = [n for n in tree.body if _is_main_guard(n)]
    if not guards:
        return set()
    roots = guards + [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"]
    return {id(sub) for root in roots for sub in ast.walk(root)}


def violations(path: Path, rel: str) -> list[str]:
    tree = ast.parse(path.read_text(), filename=rel)
    allowed = _entry_nodes(tree)
    found = []
    for node in ast.walk(tree):
        if id(node) in allowed:
            continue
        what = None
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
            if name == "from_env":
                what = "from_env() call"
        elif isinstance(node, ast.Attribute) and node.attr in ENV_NAMES \
                and isinstance(node.value, ast.Name) and node.value.id == "os":
            what = f"os.{node.attr}"
        elif isinstance(node, ast.ImportFrom) and node.module == "os" \
                and any(a.name in ENV_NAMES for a in node.names):
            what = "from os import " + ", ".join(a.name for a in node.names if a.name in ENV_NAMES)
        if what:
            found.append((node.lineno, f"{rel}:{node.lineno}: {what}"))
    return [text for _, text in sorted(found)]


def scan(root: Path = REPO) -> list[str]:
    found = []
    for top in SCANNED:
        for path in sorted((root / top).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if not _entry_file(rel):
                found += violations(path, rel)
    return found


def test_no_environment_reads_below_the_entry_points():
    found = scan()
    assert found == [], ("Settings are built once at an entry point and passed down; these read the "
                         "environment themselves:\n" + "\n".join(found))


def test_the_scan_names_file_and_line_of_each_kind_of_read(tmp_path):
    # The checker itself, on a module with every kind of read and the allowed entry forms.
    pkg = tmp_path / "shared" / "x"
    pkg.mkdir(parents=True)
    (tmp_path / "functions").mkdir()
    (pkg / "deep.py").write_text(
        "import os\n"
        "from os import getenv\n"
        "from shared.core.settings import Settings\n"
        "a = Settings.from_env()\n"
        "b = os.environ.get('UDB_X')\n"
        "c = os.getenv('UDB_Y')\n"
        "def main():\n"
        "    return Settings.from_env()\n")
    (pkg / "tool.py").write_text(
        "import os\n"
        "from shared.core.settings import Settings\n"
        "def helper():\n"
        "    return os.environ['HOME']\n"
        "def main():\n"
        "    return Settings.from_env()\n"
        "if __name__ == '__main__':\n"
        "    print(os.environ.get('UDB_MODE'))\n")
    assert scan(tmp_path) == [
        "shared/x/deep.py:2: from os import getenv",
        "shared/x/deep.py:4: from_env() call",
        "shared/x/deep.py:5: os.environ",
        "shared/x/deep.py:6: os.getenv",
        "shared/x/deep.py:8: from_env() call",  # main() counts only in a module with a __main__ guard
        "shared/x/tool.py:4: os.environ",
    ]


def test_settings_module_imports_nothing_above_core():
    tree = ast.parse((REPO / "shared/core/settings.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    above = sorted(m for m in imported if m.startswith("shared.") and not m.startswith("shared.core"))
    assert above == []


# ---------------------------------------------------------------- the caller's Settings are in force

def test_two_settings_in_one_process_give_two_ssrf_verdicts():
    from shared.security import netguard

    closed = Settings()
    opened = replace(closed, net_allowlist="127.0.0.0/8")
    with pytest.raises(netguard.BlockedAddress,
                       match="127.0.0.1: a loopback address, not admitted by UDB_NET_ALLOWLIST"):
        netguard.check_host("127.0.0.1", 80, closed)
    assert netguard.check_host("127.0.0.1", 80, opened) == ["127.0.0.1"]
    with pytest.raises(netguard.BlockedAddress):
        netguard.check_url("http://10.1.2.3/x", opened)  # only what this allowlist names
    assert netguard.guard(opened) is netguard.guard(replace(closed, net_allowlist="127.0.0.0/8"))  # parsed once


def test_two_settings_in_one_process_give_two_size_caps(tmp_path):
    from shared.security.limits import LimitExceeded
    from shared.sources import SourceEnv, files

    csv = tmp_path / "data" / "t.csv"
    csv.parent.mkdir()
    csv.write_text("a,b,c\n" + "".join(f"{i},{i},{i}\n" for i in range(10)))
    wide = SourceEnv(settings=Settings())
    narrow = SourceEnv(settings=replace(Settings(), max_columns=2, max_rows=5))
    catalogue = files.inspect(str(csv), env=wide)
    assert [c["name"] for c in catalogue["streams"][0]["columns"]] == ["a", "b", "c"]
    with pytest.raises(LimitExceeded, match=r"t.csv: 3 columns; the limit is 2 \(UDB_MAX_COLUMNS\)"):
        files.inspect(str(csv), env=narrow)
    stream = catalogue["streams"][0]
    assert files.extract(stream, tmp_path / "wide", env=wide, part_bytes=1 << 20) == 10
    rows_only = SourceEnv(settings=replace(Settings(), max_rows=5))
    with pytest.raises(LimitExceeded, match=r"t.csv: more than 5 rows \(UDB_MAX_ROWS\)"):
        files.extract(stream, tmp_path / "narrow", env=rows_only, part_bytes=1 << 20)


def test_two_settings_in_one_process_give_two_pii_policies():
    from shared.security import pii

    defaults = pii.Policy.of(Settings())
    dutch = pii.Policy.of(Settings(pii_national_ids=r"\b\d{4}\.\d{2}\.\d{3}\b"))
    text = "bsn 1234.56.782, nino AB123456C"
    assert pii.mask_text(text, defaults) == "bsn 1234.56.782, nino ***"
    assert pii.mask_text(text, dutch) == "bsn ***, nino AB123456C"
    assert pii.mask_rows(["ref"], [["1234.56.782"]], policy=dutch) == ([["1***"]], True)
    assert pii.mask_rows(["ref"], [["1234.56.782"]], policy=defaults) == ([["1234.56.782"]], False)
    assert pii.Policy.of(Settings(pii_national_ids="{}")).national_ids == ()


def test_bad_allowlist_and_national_ids_still_fail_at_start_with_the_same_message():
    with pytest.raises(ValidationError) as caught:
        Settings.from_env(env={"UDB_NET_ALLOWLIST": "10.0.0.0/99, bad host!", "UDB_PII_NATIONAL_IDS": "(["})
    problems = caught.value.problems
    assert problems["UDB_NET_ALLOWLIST"] == "not a CIDR, address or host name: 10.0.0.0/99, bad host!"
    assert problems["UDB_PII_NATIONAL_IDS"].startswith("pattern 'national_id' does not compile:")


def test_a_child_process_gets_the_parents_settings():
    from shared.core.settings import child_env

    parent = replace(Settings(), bucket="elsewhere", net_allowlist="10.0.0.0/8", chart_png=False,
                     home=Path("/tmp/udb-child"), max_rows=7)
    env = child_env(parent, pythonpath="/opt/udb", EXTRA="1")
    named = {k: v for k, v in env.items() if k.startswith("UDB_") or k in ("K_SINK", "BROWSER_PATH")}
    assert Settings.from_env(env=named) == parent
    assert env["PYTHONPATH"].split(":")[0] == "/opt/udb" and env["EXTRA"] == "1"
