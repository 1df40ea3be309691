#!/bin/bash
# self-ensemble cost on the 15 LOL-v1 eval15 images: plain, then x8; 2 threads (this machine's default), no loader workers
cd /work/wt/measure && . .venv/bin/activate
unset OMP_NUM_THREADS
for mode in plain x8; do
  extra=""; [ $mode = x8 ] && extra="--self-ensemble"
  /usr/bin/time -f "$mode: wall %e s, user %U s, sys %S s, peak RSS %M KiB" python common_utils/evaluation/eval.py -n CIDNet -w pretrained/cidnet_lol_real.pth -d LOL-v1 --threads 2 --workers 0 --no-ms-ssim $extra -o /tmp/measure/se_$mode
done
