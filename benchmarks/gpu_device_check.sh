#!/usr/bin/env bash
# The whole GPU device check in one command (issue 30): the CUDA-marked tests, then benchmarks.gpu_check.
#
#   bash benchmarks/gpu_device_check.sh OUT_DIR [BUDGET_SECONDS]
#
# Run from the repository root on a machine with a CUDA GPU. Python packages the machine lacks
# (pyhessian, loss-landscapes, mnist1d) can travel as wheels in .whl/ (installed into a private
# folder, never into the system). Writes OUT_DIR/versions.txt, OUT_DIR/cuda_tests.log,
# OUT_DIR/gpu_check.log and OUT_DIR/check/gpu_check.{json,md}; OUT_DIR must not exist or be empty.
set -uo pipefail
out=${1:?usage: gpu_device_check.sh OUT_DIR [BUDGET_SECONDS]}
budget=${2:-330}
if [ -e "$out" ] && [ -n "$(ls -A "$out")" ]; then
  echo "error: $out exists and is not empty" >&2
  exit 2
fi
mkdir -p "$out"
export PYTHONUNBUFFERED=1
site=$(mktemp -d)
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl || exit 1
fi
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import sys, torch, torchvision; print('python', sys.version.split()[0], 'torch', torch.__version__,
'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'torchvision', torchvision.__version__)"
  nproc
} > "$out/versions.txt" 2>&1
cat "$out/versions.txt"
timeout 150 python3 -m pytest -m cuda tests/test_cuda.py -q -p no:cacheprovider 2>&1 | tee "$out/cuda_tests.log"
tests=$?
timeout $((budget + 60)) python3 -m benchmarks.gpu_check --device cuda --budget "$budget" --out "$out/check" 2>&1 \
  | tee "$out/gpu_check.log"
check=$?
echo "cuda tests: exit $tests; gpu_check: exit $check"
[ "$tests" -eq 0 ] && [ "$check" -eq 0 ]
