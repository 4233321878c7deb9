#!/bin/sh
# One CUDA GPU, at most 8 minutes (cells stop starting after --budget-seconds, default 420):
# see benchmarks/gpu/validate.py. --dry-run lists the cells and checks the environment without a GPU.
cd "$(dirname "$0")/../.." && exec timeout 480 "${PYTHON:-python}" benchmarks/gpu/validate.py "$@"
