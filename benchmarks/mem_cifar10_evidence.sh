#!/usr/bin/env bash
# Multimodal Unlearnable Examples evidence on CIFAR-10 with templated captions (CPU scale): a
# tiny-rn CLIP trained from scratch by one recipe (400 steps of batch 128, AdamW 1e-3) on clean,
# EM-protected and MEM-3-protected pairs (5,000 training images, 1,000 test images), then MEM-3
# against the hacker's random-resized-crop and trigger-stripping countermeasures. EM and MEM share
# one schedule (rounds x surrogate steps x PGD steps). The clean hacker of the first run is
# reused by the others (checkpoints/hacker0/clean copied; same data and recipe); every run resumes.
# Two lanes run side by side, one thread each. Lane c (after them): MEM-3 against JPEG (quality 10),
# transfer to a tiny-vit hacker (noise and triggers made with tiny-rn) for MEM-3 and EM, and MEM-5.
# Lane d: the hacker repeated with two more seeds (hacker_seed) on the MEM-3, EM and MEM-5 pairs. Lane e:
# the random-noise and error-maximising (TAP) baselines on the same recipe (TAP also for hacker seed 1).
# Usage: CIFAR10_DIR=... [OUT_DIR=runs/mem_cifar10] [ROUNDS=8] [CLEAN_FROM=.../checkpoints/hacker0/clean] bash benchmarks/mem_cifar10_evidence.sh
cd "$(dirname "$0")/.." && set -u
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
OB="${OBSTRUCT:-.venv/bin/obstruct}"
D=folder:${CIFAR10_DIR:?set CIFAR10_DIR to an ImageFolder tree with train/ and test/ (e.g. the CIFAR-10 JPEG copy)}
R=${OUT_DIR:-runs/mem_cifar10}
ROUNDS=${ROUNDS:-8}
mkdir -p $R
COMMON="--profile quick --dataset $D --no-progress --set max_train_samples=5000 --set max_test_samples=1000 \
 --set captions_per_image=1 --set context_length=24 --set train.steps=400 --set train.batch_size=128 \
 --set train.warmup_steps=40 --set train.lr=1e-3"
SCHED="rounds=$ROUNDS train_steps=50 pgd_steps=6 step_size=2/255 batch_size=128"
sched() { for kv in $SCHED; do printf -- "--set %s.%s " $1 $kv; done; }
run() { # name, extra args
  local name=$1; shift
  echo "== $name $(date +%T)"; /usr/bin/time -f "$name wall %e s user %U s maxrss %M KB" $OB mem $COMMON --out $R/$name "$@" > $R/$name.log 2>&1
  tail -2 $R/$name.log
}
copy_stage() { # from, to, stage (a folder under checkpoints/, e.g. store or hacker0/clean)
  mkdir -p "$(dirname $R/$2/checkpoints/$3)"; [ -d $R/$2/checkpoints/$3 ] || cp -r $R/$1/checkpoints/$3 $R/$2/checkpoints/$3
}
if [ -n "${CLEAN_FROM:-}" ]; then # a finished clean hacker of the same COMMON settings (its stage folder)
  for name in mem3 em; do mkdir -p $R/$name/checkpoints/hacker0; [ -d $R/$name/checkpoints/hacker0/clean ] || cp -r $CLEAN_FROM $R/$name/checkpoints/hacker0/clean; done
fi
MEM_ARGS="--method mem --trigger-tokens 3 $(sched mem) --set mem.text_rounds=3 --set mem.num_candidates=8"
lane_a() {
  run mem3 $MEM_ARGS
  copy_stage mem3 mem3-strip store; run mem3-strip $MEM_ARGS --set countermeasure=strip
}
lane_b() {
  while [ ! -f $R/mem3/checkpoints/hacker0/clean/model.safetensors ]; do sleep 20; done
  copy_stage mem3 em hacker0/clean
  run em --method em $(sched em)
  while [ ! -f $R/mem3/results.json ]; do sleep 20; done
  copy_stage mem3 mem3-crop store; run mem3-crop $MEM_ARGS --set countermeasure=crop
}
lane_c() {
  copy_stage mem3 mem3-jpeg store; run mem3-jpeg $MEM_ARGS --set countermeasure=jpeg
  copy_stage mem3 mem3-vit store; run mem3-vit $MEM_ARGS --hacker tiny-vit
  copy_stage em em-vit store; copy_stage mem3-vit em-vit hacker0/clean; run em-vit --method em $(sched em) --hacker tiny-vit
  copy_stage mem3 mem5 hacker0/clean; run mem5 ${MEM_ARGS/--trigger-tokens 3/--trigger-tokens 5}
}
lane_d() {
  for h in 1 2; do for m in mem3 em mem5; do
    copy_stage $m $m-h$h store
    case $m in
      mem3) run $m-h$h $MEM_ARGS --set hacker_seed=$h ;;
      em) copy_stage mem3-h$h em-h$h hacker0/clean; run em-h$h --method em $(sched em) --set hacker_seed=$h ;;
      mem5) copy_stage mem3-h$h mem5-h$h hacker0/clean; run mem5-h$h ${MEM_ARGS/--trigger-tokens 3/--trigger-tokens 5} --set hacker_seed=$h ;;
    esac
  done; done
}
lane_e() {
  copy_stage mem3 random hacker0/clean; run random --method random
  copy_stage mem3 tap hacker0/clean; run tap --method tap
  copy_stage tap tap-h1 store; copy_stage mem3-h1 tap-h1 hacker0/clean; run tap-h1 --method tap --set hacker_seed=1
}
case ${LANES:-abcde} in
  a) lane_a ;; b) lane_b ;; c) lane_c ;; d) lane_d ;; e) lane_e ;;
  *) (lane_a & lane_b & wait); (lane_c; lane_e) & lane_d & wait ;;
esac
echo "== done $(date +%T)"
