"""Build UDB's images with the local Docker engine: `just images` (python images/build.py).

    python images/build.py                 base (when no BASE_IMAGE), wheels, the six function
                                           images and the three service images; sizes printed
    python images/build.py --stale         only the images that are missing or whose inputs changed
                                           (the containers tests' fixture)
    python images/build.py --only writer,kafka
    python images/build.py --sizes         print the sizes of the built images, build nothing
    BASE_IMAGE=registry.example/python:3.11.14-slim-bookworm@sha256:... python images/build.py
                                           build against a registry base (docs/deploy.md)

Steps, each cached under .cache/images/ (ignored by git):
1. base: without BASE_IMAGE, mmdebstrap builds a Debian bookworm root filesystem (minbase with
   python3, python3-venv, ca-certificates) from Debian's mirror and `docker import` makes it
   udb-local/base:bookworm. Nothing is pulled from an image registry.
2. wheels: the host's pip (which trusts the machine's CA bundle through its own configuration)
   builds/downloads every distribution of images/requirements/*.txt with --no-deps into
   .cache/images/wheels/. The builds install from those wheels offline, so no build talks to
   PyPI and no CA bundle enters a build stage, let alone a final layer.
3. functions: one image per function (images/Dockerfile), tagged ghcr.io/udb/udb-<f>:<version>
   as knative/base/services.yaml names them. The wheels are split into three layers (core: what
   all six import, DuckDB, httpfs, Kafka, S3, functions-framework ...; documents: what discover,
   sync and artifacts share, unstructured, spaCy, pandas, the PostgreSQL and Excel extensions ...;
   function: the rest), so a build of all six installs each wheel once per layer and the images
   share those layers. A file a function reads from a package it never imports (analyze's
   plotly.js) is taken from the pinned wheel (images/requirements/<f>.data) instead of the
   package. Nothing is stripped from the installed wheels: their bytecode stays (the root
   filesystem is read-only at run time and a cold start must not compile), and so do the test
   suites some wheels ship (deleting files pip installed leaves its RECORD wrong and saves less
   than leaving out whole packages that are not imported).
4. services: Kafka (the Maven Central jars devstack resolves, Debian's JRE), MinIO (devstack's
   pinned `go install` build) and PostgreSQL (Debian's packages): udb-local/<name>:<version>.

The Docker engine must answer (`scripts/docker.sh up` installs and starts one); the classic
builder is used (DOCKER_BUILDKIT=0), so no BuildKit frontend image is pulled.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from images import requirements as reqs  # noqa: E402

CACHE = ROOT / ".cache" / "images"
WHEELS = CACHE / "wheels"
CONTEXTS = CACHE / "context"
BASE_TAR = CACHE / "base-bookworm.tar"
LOCAL_BASE = "udb-local/base:bookworm"
FUNCTIONS = reqs.FUNCTIONS
SERVICES = ("kafka", "minio", "postgres")
# Wheel layers shared between images, in install order: name -> the functions that carry it.
SHARED_LAYERS = {"core": FUNCTIONS, "documents": ("discover", "sync", "artifacts")}
DEBIAN_MIRRORS = ("deb http://deb.debian.org/debian bookworm main",
                  "deb http://deb.debian.org/debian bookworm-updates main",
                  "deb http://deb.debian.org/debian-security bookworm-security main")
# Documentation, man pages and translations are left out of this and every later dpkg install
# (the dpkg option stays in the image); copyright files are kept.
MMDEBSTRAP = ["mmdebstrap", "--variant=minbase", "--include=ca-certificates,python3,python3-venv",
              "--format=tar", "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-include=/usr/share/doc/*/copyright",
              "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/locale/*",
              "--dpkgopt=path-exclude=/usr/share/info/*", "bookworm"]
BUDGETS = ROOT / "images" / "requirements" / "budgets.txt"


class BuildError(RuntimeError):
    pass


def version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def image_name(name: str) -> str:
    if name in FUNCTIONS:
        return f"ghcr.io/udb/udb-{name}:{version()}"
    if name in SERVICES:
        return f"udb-local/{name}:{version()}"
    raise ValueError(name)


def budgets() -> dict[str, int]:
    """Image -> budget in MB (images/requirements/budgets.txt)."""
    found = {}
    for line in BUDGETS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, megabytes = line.split()
            found[name] = int(megabytes)
    return found


def _run(argv: list[str], *, log: Path | None = None, cwd: Path | None = None, env: dict | None = None) -> str:
    """Run a command; its output goes to `log` (appended) or is returned. Fails with the log's tail."""
    env = {**os.environ, "DOCKER_BUILDKIT": "0", **(env or {})}
    if log is None:
        result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise BuildError(f"{' '.join(argv[:4])} ... failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
        return result.stdout
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
        out.flush()
        result = subprocess.run(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise BuildError(f"{' '.join(argv[:4])} ... failed (exit {result.returncode}); log {log}:\n{tail}")
    return ""


def image_exists(ref: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", ref], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


def image_size(ref: str) -> int:
    return int(_run(["docker", "image", "inspect", "--format", "{{.Size}}", ref]).strip())


def check_engine() -> None:
    if shutil.which("docker") is None or subprocess.run(
            ["docker", "info"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode != 0:
        raise BuildError("no Docker engine answers `docker info`: run `scripts/docker.sh up` first "
                         "(it installs Debian's docker.io when missing and starts dockerd)")


# --- 1. base --------------------------------------------------------------------------------

def ensure_base(log: Path) -> str:
    """The base image: $BASE_IMAGE as given (a registry base), else udb-local/base:bookworm."""
    given = os.environ.get("BASE_IMAGE", "").strip()
    if given:
        return given
    recipe = hashlib.sha256(" ".join(MMDEBSTRAP + list(DEBIAN_MIRRORS)).encode()).hexdigest()[:12]
    ref = f"{LOCAL_BASE}"
    if image_exists(ref) and _run(["docker", "image", "inspect", "--format",
                                   '{{index .Config.Labels "udb.recipe"}}', ref]).strip() == recipe:
        return ref
    stamp = BASE_TAR.with_suffix(".recipe")
    if not (BASE_TAR.exists() and stamp.exists() and stamp.read_text().strip() == recipe):
        if shutil.which("mmdebstrap") is None:
            if os.geteuid() != 0:
                raise BuildError("mmdebstrap is missing and installing it needs root: apt-get install -y mmdebstrap")
            _run(["apt-get", "update", "-qq"], log=log, env={"DEBIAN_FRONTEND": "noninteractive"})
            _run(["apt-get", "install", "-y", "-qq", "mmdebstrap"], log=log, env={"DEBIAN_FRONTEND": "noninteractive"})
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = BASE_TAR.with_name(BASE_TAR.name + ".tmp")
        started = time.monotonic()
        _run([*MMDEBSTRAP, str(tmp), *DEBIAN_MIRRORS], log=log)
        tmp.rename(BASE_TAR)
        stamp.write_text(recipe + "\n")
        print(f"base: mmdebstrap {time.monotonic() - started:.0f}s", flush=True)
    _run(["docker", "import", "--change", "ENV LANG=C.UTF-8", "--change", f"LABEL udb.recipe={recipe}",
          "--change", 'CMD ["/bin/bash"]', str(BASE_TAR), ref], log=log)
    return ref


# --- 2. wheels ------------------------------------------------------------------------------

def pinned(function: str) -> list[str]:
    """The pip requirement lines of images/requirements/<function>.txt."""
    lines = []
    for line in (reqs.OUT / f"{function}.txt").read_text().splitlines():
        line = line.split("  #")[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def package_files(function: str) -> dict[str, tuple[str, list[str]]]:
    """images/requirements/<function>.data: distribution -> (its pin line, the files the image takes
    from its wheel instead of installing it)."""
    found = {}
    path = reqs.OUT / f"{function}.data"
    for line in (path.read_text().splitlines() if path.is_file() else []):
        if line.strip():
            pin, *files = line.split()
            found[requirement_name(pin)] = (pin, files)
    return found


def requirement_name(line: str) -> str:
    if line.startswith("./"):
        return reqs.canonicalize_name(Path(line).name)
    return reqs.canonicalize_name(line.split("==")[0])


def wheel_name(path: Path) -> str:
    return reqs.canonicalize_name(path.name.split("-")[0])


def ensure_wheels(log: Path) -> dict[str, Path]:
    """Distribution -> its wheel under .cache/images/wheels (every function's list)."""
    union = sorted({line for f in FUNCTIONS for line in pinned(f)}
                   | {pin for f in FUNCTIONS for pin, _ in package_files(f).values()})
    recipe = hashlib.sha256("\n".join(union).encode() + (ROOT / "packaging").as_posix().encode()).hexdigest()
    stamp = WHEELS / ".recipe"
    if not (stamp.exists() and stamp.read_text().strip() == recipe):
        WHEELS.mkdir(parents=True, exist_ok=True)
        listing = CACHE / "all-requirements.txt"
        listing.write_text("\n".join(union) + "\n")
        started = time.monotonic()
        # The host's pip and its configuration (index, CA bundle): outside any image.
        _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--prefer-binary",
              "--wheel-dir", str(WHEELS), "-r", str(listing)], log=log, cwd=ROOT)
        stamp.write_text(recipe + "\n")
        print(f"wheels: {len(union)} distributions in {time.monotonic() - started:.0f}s", flush=True)
    wheels = {}
    for path in sorted(WHEELS.glob("*.whl")):
        wheels[wheel_name(path)] = path
    return wheels


def layers(function: str) -> dict[str, set[str]]:
    """Layer -> the distributions of `function` installed in it."""
    own = {requirement_name(line) for line in pinned(function)}
    result, placed = {}, set()
    for layer, members in SHARED_LAYERS.items():
        common = set.intersection(*({requirement_name(line) for line in pinned(f)} for f in members)) - placed
        result[layer] = common if function in members else set()
        placed |= common
    result["function"] = own - set().union(*result.values())
    return result


# --- 3. function images ---------------------------------------------------------------------

def _hardlink(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def stage_function(function: str, wheels: dict[str, Path]) -> Path:
    context = CONTEXTS / function
    shutil.rmtree(context, ignore_errors=True)
    for layer, names in layers(function).items():
        (context / "wheels" / layer).mkdir(parents=True)
        for name in sorted(names):
            if name not in wheels:
                raise BuildError(f"{function}: no wheel for {name} in {WHEELS} (delete {WHEELS / '.recipe'} to refetch)")
            _hardlink(wheels[name], context / "wheels" / layer / wheels[name].name)
    # Files read from a package the function does not import (plotly.js): from the pinned wheel,
    # at their place in site-packages, into the function's layer.
    (context / "data").mkdir()
    for name, (_, files) in package_files(function).items():
        if name not in wheels:
            raise BuildError(f"{function}: no wheel for {name} in {WHEELS} (delete {WHEELS / '.recipe'} to refetch)")
        with zipfile.ZipFile(wheels[name]) as wheel:
            for file in files:
                try:
                    data = wheel.read(file)
                except KeyError:
                    raise BuildError(f"{function}: {wheels[name].name} has no {file} "
                                     f"(images/requirements/{function}.data)") from None
                (context / "data" / file).parent.mkdir(parents=True, exist_ok=True)
                (context / "data" / file).write_bytes(data)
    reqs.copy_sources(function, ROOT, context / "app")
    shutil.copy2(reqs.OUT / f"{function}.apt", context / "apt.txt")
    return context


def inputs_digest(dockerfile: Path, context: Path, base: str, extra: tuple[str, ...] = ()) -> str:
    """What an image is built from: the Dockerfile, the base, the build arguments and the staged
    context (large files such as wheels and jars by name and size, the rest by content)."""
    digest = hashlib.sha256(dockerfile.read_bytes() + base.encode() + " ".join(extra).encode())
    for path in sorted(p for p in context.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(str(path.relative_to(context)).encode())
        digest.update(str(stat.st_size).encode() if stat.st_size > 5_000_000 else path.read_bytes())
    return digest.hexdigest()[:16]


def up_to_date(ref: str, digest: str) -> bool:
    return image_exists(ref) and _run(["docker", "image", "inspect", "--format",
                                       '{{index .Config.Labels "udb.inputs"}}', ref]).strip() == digest


def build(ref: str, dockerfile: Path, context: Path, base: str, log: Path, extra: tuple[str, ...] = ()) -> float:
    started = time.monotonic()
    extra = (*extra, "--label", f"udb.inputs={inputs_digest(dockerfile, context, base, extra)}")
    _run(["docker", "build", "--force-rm", "--network", "host", "--file", str(dockerfile), "--build-arg", f"BASE_IMAGE={base}",
          *extra, "--tag", ref, str(context)], log=log)
    return time.monotonic() - started


# --- 4. service images ----------------------------------------------------------------------

def stage_service(name: str) -> Path:
    from devstack import services

    context = CONTEXTS / name
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    here = ROOT / "images" / "services"
    if name == "kafka":
        services.install_kafka()   # the same jars as the process stack (Maven Central, cached)
        for jar in services.KAFKA_LIBS.glob("*.jar"):
            _hardlink(jar, context / "libs" / jar.name)
        shutil.copy2(services.KAFKA_LOG4J, context / "log4j2.properties")
        shutil.copy2(here / "kafka-entry.sh", context / "kafka-entry.sh")
    elif name == "minio":
        services.install_minio()   # the same pinned `go install` build (cached)
        shutil.copy2(services.MINIO_BIN, context / "minio")
    elif name == "postgres":
        shutil.copy2(here / "postgres-entry.sh", context / "postgres-entry.sh")
    return context


# --- driver ---------------------------------------------------------------------------------

def sizes(names) -> dict[str, int]:
    return {n: image_size(image_name(n)) for n in names if image_exists(image_name(n))}


def print_sizes(names) -> None:
    limits = budgets()
    for name, size in sizes(names).items():
        mb = size / 1e6
        note = f"budget {limits[name]} MB" if name in limits else "no budget"
        over = "  OVER BUDGET" if name in limits and mb > limits[name] else ""
        print(f"{image_name(name):40} {mb:8.0f} MB   ({note}){over}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated images (functions and kafka, minio, postgres)")
    parser.add_argument("--stale", action="store_true",
                        help="build only images that are missing or whose inputs changed")
    parser.add_argument("--sizes", action="store_true", help="print the built images' sizes and exit")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or [*FUNCTIONS, *SERVICES]
    unknown = [n for n in names if n not in FUNCTIONS + SERVICES]
    if unknown:
        parser.error(f"unknown image(s) {unknown}: expected {', '.join(FUNCTIONS + SERVICES)}")
    try:
        check_engine()
        if args.sizes:
            print_sizes(names)
            return 0
        log = ROOT / ".cache" / "logs" / "images-build.log"
        started = time.monotonic()
        base = ensure_base(log)
        wheels = ensure_wheels(log) if set(names) & set(FUNCTIONS) else {}
        for name in names:
            if name in FUNCTIONS:
                dockerfile, context, extra = ROOT / "images" / "Dockerfile", stage_function(name, wheels), \
                    ("--build-arg", f"FUNCTION={name}")
            else:
                dockerfile, context, extra = ROOT / "images" / "services" / f"{name}.Dockerfile", stage_service(name), ()
            if args.stale and up_to_date(image_name(name), inputs_digest(dockerfile, context, base, extra)):
                print(f"up to date: {image_name(name)}", flush=True)
                continue
            took = build(image_name(name), dockerfile, context, base, log, extra)
            print(f"built {image_name(name)} in {took:.0f}s", flush=True)
        print(f"all built in {time.monotonic() - started:.0f}s (log {log})")
        print_sizes(names)
    except BuildError as error:
        print(f"images/build.py: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
