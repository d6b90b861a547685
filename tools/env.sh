#!/usr/bin/env bash
# Runs a command inside the project's virtual environment, creating or updating it first when
# setup.py, the VISSL pin overrides or this script changed. Needs only python3 (3.11+) on the machine.
#   bash tools/env.sh python tools/quick_start.py
#   bash tools/env.sh python -m pytest tests
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${VISSL_ISSL_VENV:-$root/.venv}
want=$(cat "$root/setup.py" "$root/requirements/vissl-overrides.txt" "$root/tools/env.sh" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$venv/.installed" 2>/dev/null)" != "$want" ]; then
  echo "tools/env.sh: installing into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check uv
  # vissl 0.1.6 pins 2021 packages that cannot build on this Python: lift them (never vendor vissl).
  # compat mode puts the checkout on sys.path, so Hydra sees hydra_plugins/ and configs/ live.
  # --compile-bytecode: where PYTHONDONTWRITEBYTECODE is set (as on our CI machines) Python would
  # otherwise compile torch's sources again in every process, 23 s instead of 11 s per VISSL import.
  "$venv/bin/uv" pip install -q --compile-bytecode --python "$venv/bin/python" \
    --override "$root/requirements/vissl-overrides.txt" \
    -C editable_mode=compat -e "$root[test]"
  echo "$want" > "$venv/.installed"
fi
export PATH="$venv/bin:$PATH" VIRTUAL_ENV="$venv"
cd "$root"
exec "$@"
