#!/usr/bin/env bash
# The GPU check of the training step, as one script for a machine with one CUDA device:
#   1. benchmarks/throughput.py: ungated against gated densenet40 (training and evaluation images/s),
#      eager and compiled, in fp32 and in bf16 with channels_last;
#   2. a 2-epoch CIFAR-shaped run (synthetic 32x32 images, 50,000 train / 10,000 test) of the ungated
#      and the gated model, with the data on the device, eager and compiled: epoch times in run.log.
# Everything lands under $OUT (default gpu_check/); about five minutes on an H200.
#   bash benchmarks/gpu.sh      # dry run on a CPU: DEVICE=cpu STEPS=2 EPOCH_IMAGES=256 TEST_IMAGES=64 bash benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-50}
EPOCH_IMAGES=${EPOCH_IMAGES:-50000}
TEST_IMAGES=${TEST_IMAGES:-10000}
mkdir -p "$OUT"
python - <<'PY' | tee "$OUT/machine.txt"
import torch
print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device")
PY
python benchmarks/throughput.py --device "$DEVICE" --precision fp32 --compile --batch 64 --steps "$STEPS" \
    --out "$OUT/throughput_fp32.json" | tee "$OUT/throughput_fp32.txt"
python benchmarks/throughput.py --device "$DEVICE" --precision bf16 --channels-last --compile --batch 64 \
    --steps "$STEPS" --out "$OUT/throughput_bf16_cl.json" | tee "$OUT/throughput_bf16_cl.txt"
for gate in none acs; do
  regularizer=$([ $gate = none ] && echo none || echo flops)
  for compile in false true; do
    python run.py dataset=synthetic "dataset.options.train_size=$EPOCH_IMAGES" "dataset.options.test_size=$TEST_IMAGES" \
        dataset.batch_size=64 gate=$gate regularizer=$regularizer trainer.max_epochs=2 "trainer.device=$DEVICE" trainer.compile=$compile \
        trainer.channels_last=true trainer.progress=false logger=none \
        "hydra.run.dir=$OUT/run_${gate}_compile_${compile}" 2>&1 | grep -E "epoch|done|error"
  done
done
