#!/usr/bin/env bash
# The full-size cost benchmark on one GPU: the published SD 1.5, SDXL, SD3-medium and Flux denoiser configurations
# with random weights at their native resolutions in bfloat16 (benchmarks/fullsize.py --full), sized to finish
# within 10 minutes on one H100; the run is stored in benchmarks/runs/fullsize/ and the results page regenerated.
# Needs a CUDA build of torch and the package with its dependencies (`pip install -e .`); extra arguments go to
# the benchmark (e.g. --families sdxl, --runs 5, --store DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-$(command -v python || command -v python3)}"

"$python" benchmarks/fullsize.py --device cuda --dtype bfloat16 --full "$@"
"$python" -m benchmarks.report --render-only
