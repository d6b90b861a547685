#!/usr/bin/env bash
# The project's checks: ruff (lint, then format) and the test suite, one pytest worker per core
# (pytest-xdist; a file's tests stay on one worker, so module fixtures are built once; files go out
# in collection order, which tests/conftest.py puts slow files first in, instead of xdist's
# most-tests-first, which left single-test engine files such as test_multinode.py for last); pytest
# arguments pass through.
#   bash tools/env.sh bash tools/test.sh                  # everything, as CI runs it
#   bash tools/env.sh bash tools/test.sh -m "not slow"    # the fast tier, for the inner loop
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ruff check .
ruff format --check .
python -m pytest -q -n auto --dist loadfile --no-loadscope-reorder tests "$@"
