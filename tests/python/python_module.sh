#!/usr/bin/env bash
# The tandem Python module as a user installs it: pip install ./python (build isolation: pybind11
# and scikit-build-core from PyPI) into the test environment, against the C++ package installed
# at PREFIX; then its pytest suite (python/tests).
# Usage: python_module.sh PREFIX BIN VENV   (run from the repository root)
set -euo pipefail
prefix=$(realpath "$1") bin=$(realpath "$2") venv=$3
log=$(mktemp)
trap 'rm -f "$log"' EXIT
CMAKE_PREFIX_PATH=$prefix "$venv/bin/pip" install --disable-pip-version-check --force-reinstall \
  --no-deps ./python > "$log" 2>&1 || { cat "$log"; echo "python_module: pip install ./python failed" >&2; exit 1; }
echo "python_module: installed tandem $("$venv/bin/python" -c 'import tandem; print(tandem.__version__)')" \
  "into $venv"
TANDEM_BIN=$bin "$venv/bin/python" -m pytest -q -p no:cacheprovider python/tests
