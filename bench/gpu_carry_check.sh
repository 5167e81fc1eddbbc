#!/usr/bin/env bash
# Rehearse the wheel carry of bench/gpu_wheels.sh on this CPU machine, before spending GPU time.
#
#   bash bench/gpu_carry_check.sh [SCRATCH]     # default /tmp/emodraw-carry-check; ~7 min on 2 cores
#
# It downloads the same list for this interpreter's Python version, installs it exactly as on the
# GPU machine (pip --target, used through PYTHONPATH), and runs bench/gpu.py (CPU, tiny model,
# every stage but the baseline) in an interpreter that sees only a stand-in for the CUDA image:
# the reference venv's packages that the CUDA image also has (IMAGE in bench/gpu_packages.sh),
# minus everything carried. So a missing
# wheel, a pruned package that is imported after all, or a wheel that does not work from
# --target fails here. The last step is bench/gpu_run.sh itself, the GPU machine's command. It cannot check what differs on the GPU machine itself: Python 3.12
# binaries, the image's own versions of the packages it shares with the venv, CUDA, dask-cuda's
# GPU workers.
set -euo pipefail

SCRATCH=${1:-/tmp/emodraw-carry-check}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
REF_PY=${REF_PY:-}
if [[ -z "$REF_PY" ]]; then
  for candidate in "$ROOT/.venv/bin/python" "$ROOT/../main/.venv/bin/python"; do
    [[ -x "$candidate" ]] && REF_PY=$candidate && break
  done
fi
: "${REF_PY:?set REF_PY to the venv python of the project}"
export REF_PY
source "$HERE/gpu_packages.sh"

version=$("$REF_PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
mkdir -p "$SCRATCH"
# Without LZMA (quicker) the wheels are ~80 MiB: CHECK_MAX_MIB (90) makes gpu_wheels.sh split them as the GPU's 60 does
# LZMA-compressed ones beside the tree with the shipped model, so the two calls are rehearsed too.
PY_VERSION=$version LZMA=0 MAX_MIB=${CHECK_MAX_MIB:-90} bash "$HERE/gpu_wheels.sh" "$SCRATCH/whl" | grep -v "^  python3 -m pip\|^on the GPU"

# The stand-in image: symlinks to the venv's site-packages, minus carried, pruned and the project itself.
IMAGE="$IMAGE" "$REF_PY" - "$SCRATCH" $PRUNED emodraw-batch <<'EOF'
import importlib.metadata as md, os, re, shutil, sys, sysconfig
from pathlib import Path
scratch, dropped = Path(sys.argv[1]), sys.argv[2:]
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
carried = {norm(w.name.split("-")[0]) for folder in ("whl", "whl-first") for w in (scratch / folder).glob("*.whl")}
drop = carried | {norm(n) for n in dropped}
image_dists = {norm(n) for n in os.environ["IMAGE"].split()}  # what the CUDA image has
if sys.version_info < (3, 12):  # a backport that dask imports below Python 3.12 only
    image_dists.add("importlib-metadata")
# The venv's versions of the image's packages may need more than the image lists (huggingface-hub:
# httpx2): keep their own dependencies too, but never a dependency of a carried package alone.
from packaging.requirements import Requirement
todo = list(image_dists)
while todo:
    try:
        requires = md.distribution(todo.pop()).requires or []
    except md.PackageNotFoundError:
        continue
    for line in requires:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        if norm(req.name) not in image_dists:
            image_dists.add(norm(req.name))
            todo.append(norm(req.name))
site = Path(sysconfig.get_paths()["purelib"])
owner = {}
for dist in md.distributions(path=[str(site)]):
    for f in dist.files or []:
        owner.setdefault(f.parts[0], set()).add(norm(dist.metadata["Name"]))
image = scratch / "image"
shutil.rmtree(image, ignore_errors=True)
image.mkdir()
kept = 0
for entry in site.iterdir():
    owners = owner.get(entry.name, set())
    # Kept: what belongs to the CUDA image's distributions only, less what is carried.
    if entry.suffix == ".pth" or not owners or owners <= drop or not owners <= image_dists:
        continue
    (image / entry.name).symlink_to(entry)
    kept += 1
print(f"stand-in image: {kept} entries of {site}, without {len(drop)} distributions")
EOF

base=$("$REF_PY" -c 'import sys; print(sys._base_executable)')
rm -rf "$SCRATCH/py"
"$base" -m venv --without-pip "$SCRATCH/py"
purelib=$("$SCRATCH/py/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
printf '%s\n' "$SCRATCH/image" > "$purelib/cuda-image-standin.pth"

cd "$ROOT"
# The very command of the GPU machine, with this CPU's sizes.
rm -rf "$SCRATCH/site"
if [[ -d "$SCRATCH/whl-first" ]]; then  # split: the first call installs only, the second finds it there
  PY="$SCRATCH/py/bin/python" PIP_PY=python3 WHEELS="$SCRATCH/whl-first" SITE="$SCRATCH/site" bash bench/gpu_run.sh --install-only
fi
PY="$SCRATCH/py/bin/python" PIP_PY=python3 WHEELS="$SCRATCH/whl" SITE="$SCRATCH/site" WORK="$SCRATCH/work" OMP_NUM_THREADS=1 \
  bash bench/gpu_run.sh "$SCRATCH/out" --device cpu --size tiny --slice-rows 300 --rows 1200 --variants default,staged \
  --agree-rows 300 --windows-rows 1200 --window-sizes 300,600 --budget-seconds 600
grep -q "^## Targets" "$SCRATCH/out/gpu-results.md"
for section in "^## Start-up: a one-row run" "^## The host alone" "^## window_rows"; do  # issue 39's steps ran
  grep -q "$section" "$SCRATCH/out/gpu-results.md" || { echo "carry check: no '$section' in gpu-results.md"; exit 1; }
done
echo "carry check passed: $SCRATCH"
