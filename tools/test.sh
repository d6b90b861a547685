#!/usr/bin/env bash
# The project's checks: ruff (lint, then format) and the test suite, one pytest worker per core
# (pytest-xdist; a file's tests stay on one worker, so module fixtures are built once); pytest
# arguments pass through.
#   bash tools/env.sh bash tools/test.sh                  # everything, as CI runs it
#   bash tools/env.sh bash tools/test.sh -m "not slow"    # the fast tier, for the inner loop
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ruff check .
ruff format --check .
python -m pytest -q -n auto --dist loadfile tests "$@"
