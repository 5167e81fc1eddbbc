#!/usr/bin/env bash
# The Python wheels that a bare CUDA machine (this workplace's 'cuda' image: Python 3.12, torch,
# transformers, tokenizers, pyarrow, numpy, typer, rich, httpx, jinja2, psutil, pandas, ...) lacks
# for bench/gpu.py, downloaded on a machine with PyPI into DEST (default .whl/, ignored by git).
#
#   bash bench/gpu_wheels.sh [DEST]
#
# Then, on the GPU machine, from the repository root, with DEST carried along: bash bench/gpu_run.sh OUT
# (it installs them with pip --target and puts them on PYTHONPATH).
#
# Exactly the versions of bench/gpu-requirements.txt (FROM_VENV=1 first re-pins that file from the
# versions installed in REF_PY, default the project's .venv, so the GPU runs what the CPU tests ran).
# Each wheel is then re-compressed with LZMA in place (same files, same RECORD hashes;
# pip reads LZMA zips): 88 MiB of deflated wheels become ~60 MiB (56 without Prefect's web UI, below),
# within the 60 MiB that the tree and the wheels may take. polars' runtime alone is 51 MiB deflated, 31 with LZMA.
#
# Left out, because `emodraw-batch run` (local and dask engines) and bench/gpu.py never import
# them (an import trace of both engines, bench/GPU.md): prefect's CLI, deployment, notification
# and Docker extras (apprise, cyclopts, docker, griffe, readchar, rich-rst, ruamel.yaml, semver,
# dateparser, tzlocal, python-json-logger, jsonpatch, oauthlib, requests-oauthlib), partd, pycparser.
#
# Environment: PY_VERSION (3.12: the CUDA image's), FROM_VENV, REF_PY, REQUIREMENTS, LZMA=0 to keep pip's compression,
# MAX_MIB (60) the size of the wheels plus the tracked tree that one call may carry: above it, polars' runtime is
# split off into DEST-first/ for a first call of its own (FIRST_WHEELS), and above that in either call, the script fails.
set -euo pipefail

DEST=${1:-.whl}
PY_VERSION=${PY_VERSION:-3.12}
MAX_MIB=${MAX_MIB:-60}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
REQUIREMENTS=${REQUIREMENTS:-$HERE/gpu-requirements.txt}
source "$HERE/gpu_packages.sh"  # CORE LANGUAGE STATS DASK PREFECT GPU_ONLY (carried), PRUNED (left out)

if [[ "${FROM_VENV:-0}" == 1 ]]; then
  # Re-pin from the versions a reference interpreter has installed (the project's .venv by default).
  if [[ -z "${REF_PY:-}" ]]; then
    for candidate in "$ROOT/.venv/bin/python" "$ROOT/../main/.venv/bin/python" python3; do
      if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import prefect, polars, dask' 2>/dev/null; then
        REF_PY=$candidate
        break
      fi
    done
  fi
  : "${REF_PY:?no interpreter with prefect, polars and dask installed: set REF_PY}"
  pins=$("$REF_PY" - $CORE $LANGUAGE $STATS $DASK $PREFECT <<'EOF'
import importlib.metadata as md, sys
missing = []
for name in sys.argv[1:]:
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        missing.append(name)
if missing:
    sys.exit(f"not installed in the reference interpreter: {missing}")
EOF
)
  { sed -n '/^#/p' "$REQUIREMENTS"; printf '%s\n' $pins $GPU_ONLY | sort -f; } > "$REQUIREMENTS.new" && mv "$REQUIREMENTS.new" "$REQUIREMENTS"
  echo "re-pinned $REQUIREMENTS from $REF_PY"
fi
pins=$(grep -v '^#' "$REQUIREMENTS" | grep -v '^$')
GPU_ONLY=""  # in the pinned list

mkdir -p "$DEST"
# The wheels a split put in a call of their own (below) come back first, so that none is downloaded again.
FIRST="${DEST%/}-first"
if [[ -d "$FIRST" ]]; then
  mv "$FIRST"/*.whl "$DEST"/ 2>/dev/null || true
  rmdir "$FIRST"
fi
# Only what DEST lacks: pip would re-download a re-compressed wheel (its hash changed).
todo=$(python3 - "$DEST" $pins $GPU_ONLY <<'EOF'
import re, sys
from pathlib import Path
norm = lambda n: re.sub(r"[-_.]+", "_", n).lower()
have = {tuple(norm(p) for p in w.name.split("-")[:2]) for w in Path(sys.argv[1]).glob("*.whl")}
print(" ".join(p for p in sys.argv[2:] if tuple(norm(x) for x in p.split("==")) not in have))
EOF
)
incoming="$DEST/.incoming"
rm -rf "$incoming"
mkdir -p "$incoming"
if [[ -n "$todo" ]]; then
  echo "downloading $(echo $todo | wc -w) of $(echo $pins | wc -w) wheels for CPython $PY_VERSION ($REQUIREMENTS) into $DEST"
  # shellcheck disable=SC2086
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_5_x86_64 \
    -d "$incoming" $todo 2>&1 | grep -v "is ignored: it is neither" || true
fi

if [[ "${LZMA:-1}" != 0 ]]; then
  python3 - "$incoming" <<'EOF'
import os, sys, zipfile
from pathlib import Path
for wheel in sorted(Path(sys.argv[1]).glob("*.whl")):
    with zipfile.ZipFile(wheel) as zin:
        if all(i.compress_type == zipfile.ZIP_LZMA for i in zin.infolist()):
            continue  # done by an earlier run
        tmp = wheel.with_suffix(".tmp")
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_LZMA) as zout:
            for info in zin.infolist():
                copy = zipfile.ZipInfo(info.filename, info.date_time)
                copy.external_attr = info.external_attr
                copy.compress_type = zipfile.ZIP_LZMA
                zout.writestr(copy, zin.read(info))
    os.replace(tmp, wheel)
EOF
fi
mv "$incoming"/*.whl "$DEST"/ 2>/dev/null || true
rmdir "$incoming"

# Files no run reads, dropped from their wheels with their RECORD lines (STRIPPED in
# bench/gpu_packages.sh: Prefect's web UI, 3.8 MiB, never served: the runs start the server with
# PREFECT_UI_ENABLED=0; and the packages' own test suites, 1.2 MiB, never imported). Idempotent: a wheel without such files is left as it is.
python3 - "$DEST" $STRIPPED <<'EOF'
import os, sys, zipfile
from pathlib import Path
dest, patterns = Path(sys.argv[1]), tuple(sys.argv[2:])
prefixes = tuple(p for p in patterns if not p.startswith("*/"))
anywhere = tuple(p[1:] for p in patterns if p.startswith("*/"))  # "*/tests/": a folder of that name at any depth


def dropped(name: str) -> bool:
    return name.startswith(prefixes) or any(part in "/" + name for part in anywhere)


for wheel in sorted(dest.glob("*.whl")):
    with zipfile.ZipFile(wheel) as zin:
        drop = {i.filename for i in zin.infolist() if dropped(i.filename)}
        if not drop:
            continue
        tmp = wheel.with_suffix(".tmp")
        with zipfile.ZipFile(tmp, "w") as zout:
            for info in zin.infolist():
                if info.filename in drop:
                    continue
                data = zin.read(info)
                if info.filename.endswith(".dist-info/RECORD"):
                    data = b"".join(line for line in data.splitlines(keepends=True) if not dropped(line.decode().split(",")[0]))
                copy = zipfile.ZipInfo(info.filename, info.date_time)
                copy.external_attr, copy.compress_type = info.external_attr, info.compress_type
                zout.writestr(copy, data)
    os.replace(tmp, wheel)
    print(f"{wheel.name}: {len(drop)} files dropped ({', '.join(patterns)})")
EOF

# Exactly one wheel per package (two versions stop the whole install), and every pin present.
python3 - "$DEST" $pins $GPU_ONLY <<'EOF'
import re, sys
from pathlib import Path
dest, pins = Path(sys.argv[1]), sys.argv[2:]
norm = lambda n: re.sub(r"[-_.]+", "_", n).lower()
have = {}
for w in dest.glob("*.whl"):
    name, version = w.name.split("-")[:2]
    have.setdefault(norm(name), []).append(version)
missing = [p for p in pins if norm(p.split("==")[0]) not in have]
twice = {n: v for n, v in have.items() if len(v) > 1}
extra = sorted(set(have) - {norm(p.split("==")[0]) for p in pins})
if missing or twice:
    sys.exit(f"missing wheels: {missing}; several versions: {twice}")
if extra:
    print(f"note: {dest} also holds {extra} (from an earlier list?); they will be installed too")
EOF


bytes=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
# What travels with them: the repository's tracked files (untracked, not ignored files travel too).
tree=$(cd "$ROOT" && git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
mib=$(( (bytes + tree + 1048575) / 1048576 ))
echo "$DEST: $(ls "$DEST"/*.whl | wc -l) wheels, $(( (bytes + 1048575) / 1048576 )) MiB; with the tracked tree ${mib} MiB"
if (( mib <= MAX_MIB )); then
  echo "on the GPU machine (device tool: carry [\"$DEST\"]), from the repository root: bash bench/gpu_run.sh \$OUT"
  exit 0
fi
# Too big for one call (since issue 40 the tree holds the shipped model): polars' runtime (31 MiB after LZMA,
# alone in its own top-level folder, so that the second install cannot replace any of it) goes to FIRST,
# carried by a first call that only installs it (`gpu_run.sh --install-only`); the second call, on the same
# warm machine, carries the rest and runs (bench/GPU.md). FIRST_WHEELS names other wheels to split off.
limit=$(( MAX_MIB * 1048576 - tree ))
mkdir -p "$FIRST"
first=0
for wheel in "$DEST"/${FIRST_WHEELS:-polars_runtime_*}.whl; do
  [[ -f "$wheel" ]] || continue
  first=$(( first + $(stat -c %s "$wheel") ))
  mv "$wheel" "$FIRST"/
done
rest=$(( bytes - first ))
if (( first == 0 || first > limit || rest > limit )); then
  echo "too big to carry even in two calls: the tree is $(( tree / 1048576 )) MiB, the wheels $(( bytes / 1048576 )) MiB, ${MAX_MIB} MiB a call" >&2
  exit 1
fi
echo "in two calls: $FIRST $(( (first + tree + 1048575) / 1048576 )) MiB with the tree, $DEST $(( (rest + tree + 1048575) / 1048576 )) MiB"
echo "on the GPU machine, from the repository root, back to back (the machine stays warm 30 s):"
echo "  1. carry [\"$FIRST\"]: WHEELS=$FIRST bash bench/gpu_run.sh --install-only"
echo "  2. carry [\"$DEST\"]: bash bench/gpu_run.sh \$OUT"
