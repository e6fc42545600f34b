#!/usr/bin/env bash
# The wheels a bare GPU image needs for bench/gpu_train_check.py and bench/gpu_issue12.py (the stage imports dvclive,
# the token shards zstandard; the image has torch, triton and pyarrow): cp312 manylinux, --no-deps, at the versions
# requirements.lock pins, downloaded into .whl/ (git-ignored).
# Then carry .whl in the device call (run's carry: [".whl"]) and install it first:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
#   export PYTHONPATH=/tmp/site
# Usage: bash bench/device_wheels.sh [python-version, default 3.12]
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER="${1:-3.12}"
PACKAGES="dvclive dvc dvc-render dvc-studio-client dvc-data dvc-objects dvc-http scmrepo dulwich pygtrie sqltrie
diskcache dpath flufl.lock atpublic zc.lockfile flatten-dict funcy ruamel.yaml voluptuous wcwidth zstandard pytest
pluggy iniconfig packaging"
pins=()
for p in $PACKAGES; do
  pin=$(grep -i "^${p}==" requirements.lock) || { echo "device_wheels: $p is not pinned in requirements.lock" >&2; exit 1; }
  pins+=("$pin")
done
mkdir -p .whl
python3 -m pip download --quiet --no-deps --only-binary=:all: --dest .whl --python-version "$PYVER" \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux_2_17_x86_64 "${pins[@]}"
echo "device_wheels: $(ls .whl/*.whl | wc -l) wheels, $(du -sh .whl | cut -f1) in .whl/"
