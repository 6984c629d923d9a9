"""The docs check: what README.md, CONTRIBUTING.md, CHANGELOG.md, CODE_OF_CONDUCT.md and
docs/*.md tell a reader to open or type must exist and work.

The convention (CONTRIBUTING.md, "Docs"):
- Every relative link resolves to a file or folder of the repository; a `#anchor` resolves to a
  heading of the target (GitHub's slugs). README.md links every other doc.
- A fenced `bash` block on the line after `<!-- runnable -->` is run with `bash -euo pipefail`
  in a fresh temporary directory, the project's virtualenv first on PATH and no `UDB_*` setting
  inherited (so embedded mode, data under `./.udb`), within RUNNABLE_TIMEOUT seconds; it must
  exit 0. Keep such blocks cheap and offline.
- Every `udb ...` command in a shell block (bash, sh, console or unlabelled) parses against the
  real CLI parser (`frontends/cli.py`). Synopsis notation is allowed: `[optional]` parts and
  `a|b|c` alternatives (the first is tried).
- Every `just <recipe>` in a shell block or an inline code span names a recipe of the justfile.
- `python` blocks compile, `json` blocks parse, `yaml` blocks parse, `mermaid` blocks name a
  diagram type.
- An inline code span naming a path under one of the repository's top-level folders (no `<...>`,
  `*` or `{...}` in it) names a path that exists; `shared/serving/runtime.invoke` names a name defined in
  `shared/serving/runtime.py`.
- The newest release in CHANGELOG.md is the version in pyproject.toml.

No network, no services: a few seconds in all.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
RUNNABLE_MARK = "<!-- runnable -->"
RUNNABLE_TIMEOUT = 60
SHELL_LANGS = ("", "bash", "sh", "shell", "console")
# Top-level folders whose paths the docs name in backticks; a span starting with one is a path.
PATH_ROOTS = ("functions", "shared", "eventing", "devstack", "tests", "bench", "docs", "knative",
              "images", "samples", "scripts", "observability", "packaging")
MERMAID_TYPES = ("flowchart", "graph", "sequenceDiagram", "classDiagram", "stateDiagram",
                 "stateDiagram-v2", "erDiagram", "gantt", "journey", "pie", "C4Context")


TOP_DOCS = ("README.md", "CONTRIBUTING.md", "CHANGELOG.md", "CODE_OF_CONDUCT.md")


def doc_files() -> list[Path]:
    files = [ROOT / n for n in TOP_DOCS if (ROOT / n).exists()]  # a missing one fails below
    return files + sorted((ROOT / "docs").glob("*.md"))


def _id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _where(path: Path) -> str:
    return _id(path) if path.is_relative_to(ROOT) else str(path)


DOCS = doc_files()


# ---------------------------------------------------------------- reading Markdown

@dataclass
class Block:
    lang: str
    code: str
    line: int           # 1-based line of the opening fence
    runnable: bool


@dataclass
class Parsed:
    blocks: list[Block]
    prose: list[tuple[int, str]]  # (line number, text) outside code blocks


FENCE_RE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")


def parse(path: Path) -> Parsed:
    blocks, prose = [], []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = FENCE_RE.match(lines[i])
        if not m:
            prose.append((i + 1, lines[i]))
            i += 1
            continue
        fence, lang, start = m.group(2), m.group(3).lower(), i
        previous = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        body = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence[0] * len(fence)):
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        blocks.append(Block(lang, "\n".join(body), start + 1, previous == RUNNABLE_MARK))
    return Parsed(blocks, prose)


INLINE_CODE_RE = re.compile(r"(`+)(.+?)\1")
LINK_RE = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_DEF_RE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")


def inline_spans(parsed: Parsed) -> list[tuple[int, str]]:
    return [(n, m.group(2).strip()) for n, text in parsed.prose for m in INLINE_CODE_RE.finditer(text)]


def links(parsed: Parsed) -> list[tuple[int, str]]:
    found = []
    for n, text in parsed.prose:
        bare = INLINE_CODE_RE.sub("", text)  # a link inside a code span is not a link
        found += [(n, m.group(1)) for m in LINK_RE.finditer(bare)]
        ref = REF_DEF_RE.match(bare)
        if ref:
            found.append((n, ref.group(1)))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for _, text in parse(path).prose:
        result.update(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", text))  # explicit targets
        m = re.match(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", text)
        if not m:
            continue
        base = slug(m.group(1))
        count = seen.get(base, 0)  # GitHub numbers repeated headings: x, x-1, x-2
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


# ---------------------------------------------------------------- shell commands in blocks

def shell_lines(block: Block) -> list[tuple[int, str]]:
    """(line, command) of a shell block: continuations joined, comments and prompts dropped;
    in a `console` block only the `$ ` lines are commands (the rest is output)."""
    out, pending, first = [], "", None
    for offset, raw in enumerate(block.code.splitlines(), start=1):
        line = raw.rstrip()
        if block.lang == "console" and not pending:
            if not line.lstrip().startswith("$ "):
                continue
        line = re.sub(r"^\s*\$ ", "", line)
        if first is None:
            first = block.line + offset
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        command = _strip_comment(pending + line).strip()
        if command:
            out.append((first, command))
        pending, first = "", None
    return out


def _strip_comment(line: str) -> str:
    # A `#` starting a word outside quotes begins a comment.
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


SEGMENT_SPLIT_RE = re.compile(r"\$\(|`|\)|&&|\|\||;|\s\|\s")
ASSIGNMENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=\S*\s+")


def command_segments(command: str) -> list[str]:
    """The simple commands of a shell line (split at `$(`, pipes with spaces, `&&`, `;`),
    without leading VAR=value assignments. `a|b` without spaces stays: synopsis alternatives."""
    segments = []
    for part in SEGMENT_SPLIT_RE.split(command):
        part = part.strip()
        while ASSIGNMENT_RE.match(part):
            part = ASSIGNMENT_RE.sub("", part, count=1)
        if part:
            segments.append(part)
    return segments


def udb_arguments(segment: str) -> list[str] | None:
    """The arguments of a `udb ...` (or `.venv/bin/udb ...`, `just udb ...`) command, synopsis
    notation resolved; None for any other command."""
    words = segment.split(None, 1)
    if not words:
        return None
    head, rest = words[0], (words[1] if len(words) > 1 else "")
    if head == "just" and rest.split(None, 1)[:1] == ["udb"]:
        rest = rest.split(None, 1)[1] if len(rest.split(None, 1)) > 1 else ""
    elif not (head == "udb" or head.endswith("/udb")):
        return None
    rest = rest.replace("[", " ").replace("]", " ")
    try:
        tokens = shlex.split(rest)
    except ValueError:
        tokens = rest.split()
    # `viewer|analyst|admin` means one of them; `...` means "and so on".
    return [t.split("|")[0] if "|" in t else t for t in tokens if t != "..."]


def justfile_recipes() -> set[str]:
    recipes = set()
    for line in (ROOT / "justfile").read_text().splitlines():
        # `name PARAM="default" *ARGS: deps`; `name := value` is a variable, not a recipe.
        m = re.match(r"^@?([A-Za-z_][\w-]*)(?:\s[^:\n]*?)?:(?!=)", line)
        if m and m.group(1) not in ("set", "export", "alias", "import", "mod"):
            recipes.add(m.group(1))
    return recipes


def just_recipes_named(parsed: Parsed) -> list[tuple[int, str]]:
    named = []
    for block in parsed.blocks:
        if block.lang not in SHELL_LANGS:
            continue
        for n, command in shell_lines(block):
            for segment in command_segments(command):
                words = segment.split()
                if words[0] == "just":
                    recipe = next((w for w in words[1:] if not w.startswith("-")), None)
                    if recipe:
                        named.append((n, recipe))
    for n, span in inline_spans(parsed):
        words = span.split()
        if len(words) > 1 and words[0] == "just" and not words[1].startswith("-"):
            named.append((n, words[1]))
    # `just <recipe>` and `just RECIPE` are the notation for any recipe, not a name.
    return [(n, r) for n, r in named if re.fullmatch(r"[a-z_][\w-]*", r)]


class _Parsed(Exception):
    """Raised in place of running a command once the real parser has accepted it."""


def parse_with_cli(argv: list[str], monkeypatch) -> str | None:
    """None when `udb <argv>` parses with the real CLI parser; else argparse's complaint."""
    from frontends import cli

    original = argparse.ArgumentParser.parse_args

    def parse_only(self, args=None, namespace=None):
        original(self, args, namespace)
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_only)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            cli.main(argv)
    except _Parsed:
        return None
    except SystemExit as exc:  # --help exits 0; a parse error exits 2 with the reason on stderr
        return None if exc.code == 0 else (err.getvalue().strip().splitlines() or ["exit 2"])[-1]
    finally:
        monkeypatch.setattr(argparse.ArgumentParser, "parse_args", original)
    return "the command ran instead of stopping after parsing"


# ---------------------------------------------------------------- the checks

def link_problems(doc: Path) -> list[str]:
    problems = []
    for n, target in links(parse(doc)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        path = (doc.parent / path_part).resolve() if path_part else doc
        if not path.exists():
            problems.append(f"{_where(doc)}:{n}: link to {target!r}: no {path_part}")
            continue
        if anchor and path.suffix == ".md" and anchor not in anchors(path):
            problems.append(f"{_where(doc)}:{n}: link to {target!r}: no heading #{anchor} in {path.name}")
    return problems


def path_problems(doc: Path) -> list[str]:
    problems = []
    for n, span in inline_spans(parse(doc)):
        for token in span.split():
            token = token.strip("(),;'\"")
            if not re.fullmatch(rf"(?:{'|'.join(PATH_ROOTS)})/[\w./-]*", token) or ".." in token:
                continue
            module, _, attribute = token.rpartition(".")
            # `shared/serving/runtime.invoke` names a function of shared/serving/runtime.py.
            source = ROOT / f"{module}.py"
            as_attribute = (bool(module) and attribute.isidentifier() and source.exists()
                            and re.search(rf"\b{attribute}\b", source.read_text()) is not None)
            if not (ROOT / token.rstrip("/")).exists() and not as_attribute:
                problems.append(f"{_where(doc)}:{n}: `{token}` does not exist")
    return problems


@pytest.mark.parametrize("doc", DOCS, ids=_id)
def test_relative_links_resolve(doc):
    problems = link_problems(doc)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("doc", DOCS, ids=_id)
def test_backticked_paths_exist(doc):
    problems = path_problems(doc)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("doc", DOCS, ids=_id)
def test_structured_blocks_parse(doc):
    problems = []
    for block in parse(doc).blocks:
        where = f"{_id(doc)}:{block.line}"
        try:
            if block.lang == "python":
                compile(block.code, where, "exec")
            elif block.lang == "json":
                json.loads(block.code)
            elif block.lang in ("yaml", "yml"):
                list(yaml.safe_load_all(block.code))
            elif block.lang == "mermaid":
                first = next((line.split()[0] for line in block.code.splitlines() if line.strip()
                              and not line.strip().startswith("%%")), "")
                if first not in MERMAID_TYPES:
                    problems.append(f"{where}: mermaid block starts with {first!r}, not a diagram type")
        except (SyntaxError, ValueError, yaml.YAMLError) as exc:
            problems.append(f"{where}: {block.lang} block does not parse: {exc}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("doc", DOCS, ids=_id)
def test_just_recipes_exist(doc):
    recipes = justfile_recipes()
    problems = [f"{_id(doc)}:{n}: `just {r}`: no such recipe (the justfile has {', '.join(sorted(recipes))})"
                for n, r in just_recipes_named(parse(doc)) if r not in recipes]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("doc", DOCS, ids=_id)
def test_udb_commands_parse(doc, monkeypatch):
    problems = []
    for block in parse(doc).blocks:
        if block.lang not in SHELL_LANGS:
            continue
        for n, command in shell_lines(block):
            for segment in command_segments(command):
                argv = udb_arguments(segment)
                if argv is None:
                    continue
                complaint = parse_with_cli(argv, monkeypatch)
                if complaint:
                    problems.append(f"{_id(doc)}:{n}: `udb {' '.join(argv)}`: {complaint}")
    assert not problems, "\n".join(problems)


RUNNABLE = [pytest.param(doc, block, id=f"{_id(doc)}:{block.line}")
            for doc in DOCS for block in parse(doc).blocks if block.runnable]


def test_some_blocks_are_runnable():
    assert any(_id(doc) == "README.md" for doc, _ in (p.values for p in RUNNABLE)), \
        f"README.md has no block marked {RUNNABLE_MARK}"


@pytest.mark.parametrize("doc,block", RUNNABLE)
def test_runnable_blocks_run(doc, block, tmp_path):
    assert block.lang in ("bash", "sh"), f"{_id(doc)}:{block.line}: only bash blocks can be runnable"
    env = {k: v for k, v in os.environ.items() if not k.startswith("UDB_") and k != "K_SINK"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", block.code], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=RUNNABLE_TIMEOUT)
    assert result.returncode == 0, (f"{_id(doc)}:{block.line}: exit {result.returncode}\n"
                                    f"stdout:\n{result.stdout[-2000:]}\nstderr:\n{result.stderr[-2000:]}")


def test_readme_links_every_doc():
    linked = {(ROOT / target.partition("#")[0]).resolve() for _, target in links(parse(ROOT / "README.md"))}
    missing = [_id(d) for d in DOCS if d.name != "README.md" and d.resolve() not in linked]
    assert not missing, f"README.md's Documentation section links no {', '.join(missing)}"


def test_settings_table_is_generated():
    """docs/settings.md's table is what `python scripts/settings_doc.py` makes from Settings."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("settings_doc", ROOT / "scripts" / "settings_doc.py")
    settings_doc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(settings_doc)
    current = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    assert current == settings_doc.rendered(current), \
        "docs/settings.md is out of date: run python scripts/settings_doc.py"
    from shared.core.settings import Settings

    rows = [line for line in settings_doc.render_table().splitlines()[2:]]
    assert len(rows) == len(Settings.documented())
    assert "| `UDB_MODE` | `embedded` | embedded \\| stack \\| cluster |" in rows
    assert "| `UDB_EVENTING_DIR` | `eventing/` | folder of Knative Eventing YAML read for routes |" in rows


def test_top_level_docs_exist():
    assert [n for n in TOP_DOCS if not (ROOT / n).exists()] == []


def test_changelog_names_the_package_version():
    import tomllib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    releases = re.findall(r"^## \[?(\d+\.\d+\.\d+)\]? - (\d{4}-\d{2}-\d{2})", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert releases, "CHANGELOG.md has no '## [x.y.z] - YYYY-MM-DD' entry"
    assert releases[0][0] == version, f"CHANGELOG.md's newest entry is {releases[0][0]}, pyproject.toml says {version}"


# ---------------------------------------------------------------- the checker itself

def test_checker_reads_blocks_links_and_commands(tmp_path, monkeypatch):
    doc = tmp_path / "x.md"
    doc.write_text(
        "# A title\n\nSee [there](#a-title) and `functions/discover/handler.py`.\n\n"
        f"{RUNNABLE_MARK}\n```bash\nKEY=$(udb keys create --tenant acme --role viewer|admin | head -1)\n"
        "just demo  # then just test\n```\n")
    parsed = parse(doc)
    assert links(parsed) == [(3, "#a-title")] and "a-title" in anchors(doc)
    assert [b.runnable for b in parsed.blocks] == [True]
    (n, command), _ = shell_lines(parsed.blocks[0])
    argv = next(a for s in command_segments(command) if (a := udb_arguments(s)) is not None)
    assert argv == ["keys", "create", "--tenant", "acme", "--role", "viewer"]
    assert parse_with_cli(argv, monkeypatch) is None
    assert "invalid choice" in parse_with_cli(["keys", "create", "--tenant", "a", "--role", "owner"], monkeypatch)
    assert just_recipes_named(parsed) == [(8, "demo")]
    assert link_problems(doc) == [] and path_problems(doc) == []
    broken = tmp_path / "broken.md"
    broken.write_text("# Top\n\n[a](missing.md), [b](x.md#nowhere), [c](#top), [d](https://example.com)\n"
                      "`shared/no_such.py`, `shared/serving/runtime.no_such_name`, `tenants/<t>/jobs/`\n")
    assert link_problems(broken) == [f"{broken}:3: link to 'missing.md': no missing.md",
                                     f"{broken}:3: link to 'x.md#nowhere': no heading #nowhere in x.md"]
    assert path_problems(broken) == [f"{broken}:4: `shared/no_such.py` does not exist",
                                     f"{broken}:4: `shared/serving/runtime.no_such_name` does not exist"]
    assert slug("The stack on one machine") == "the-stack-on-one-machine"
    assert slug("`udb` and the HTTP interface (v2)") == "udb-and-the-http-interface-v2"
