#!/usr/bin/env bash
# Create the OPTIONAL lerobot 0.6.1 venv used only by the compatibility tests of finetune_embodied.
#
# Why a separate venv: lerobot 0.6.1 requires Python >= 3.12 and torch < 2.12, while the emu_ros core venv is
# Python 3.11 + torch 2.13 (CPU). emu_ros reads/writes LeRobot v3.0 datasets with its own small reader
# (finetune_embodied/dataset.py, pyarrow + PyAV); this venv lets `pytest -m lerobot test/finetune` check that the
# real `LeRobotDataset` API and our reader/writer agree on the on-disk format.
#
# Usage:
#   scripts/setup_lerobot_env.sh                 # creates /work/main/.venv-lerobot (or $LEROBOT_VENV)
#   LEROBOT_PYTHON=/usr/bin/python3.12 scripts/setup_lerobot_env.sh
#
# Idempotent: if the venv already imports lerobot at the pinned version, nothing is done.
# Cost: ~5.4 GB on disk (lerobot pulls the CUDA build of torch 2.11 from PyPI; it runs fine on CPU), ~1-2 min.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LEROBOT_VENV:-${REPO_ROOT}/.venv-lerobot}"
LEROBOT_VERSION="${LEROBOT_VERSION:-0.6.1}"

find_python() {
    # Prefer an explicit interpreter, then pyenv's 3.12.1 (present in the dev image), then any python3.12/3.13.
    if [[ -n "${LEROBOT_PYTHON:-}" ]]; then echo "${LEROBOT_PYTHON}"; return; fi
    local candidate
    for candidate in "${HOME}/.pyenv/versions/3.12.1/bin/python" python3.12 python3.13; do
        if command -v "${candidate}" >/dev/null 2>&1; then command -v "${candidate}"; return; fi
    done
    echo ""
}

if [[ -x "${VENV}/bin/python" ]] && "${VENV}/bin/python" - "${LEROBOT_VERSION}" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
import lerobot.datasets.lerobot_dataset  # noqa: F401  (fails if the install is broken)
sys.exit(0 if version("lerobot") == sys.argv[1] else 1)
EOF
then
    echo "lerobot ${LEROBOT_VERSION} already installed in ${VENV}"
    exit 0
fi

PYTHON="$(find_python)"
if [[ -z "${PYTHON}" ]]; then
    echo "error: no Python >= 3.12 found; set LEROBOT_PYTHON=/path/to/python3.12 (lerobot ${LEROBOT_VERSION} needs >= 3.12)" >&2
    exit 1
fi
if ! "${PYTHON}" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)'; then
    echo "error: ${PYTHON} is $("${PYTHON}" -V 2>&1); lerobot ${LEROBOT_VERSION} needs Python >= 3.12" >&2
    exit 1
fi

echo "creating ${VENV} with ${PYTHON} ($("${PYTHON}" -V 2>&1))"
"${PYTHON}" -m venv "${VENV}"
"${VENV}/bin/python" -m pip install --upgrade --quiet pip
"${VENV}/bin/python" -m pip install "lerobot[dataset]==${LEROBOT_VERSION}"
"${VENV}/bin/python" -c "import lerobot.datasets.lerobot_dataset as m; from importlib.metadata import version; print('lerobot', version('lerobot'), 'OK at', m.__file__)"
