#!/usr/bin/env bash
# Multimodal Unlearnable Examples evidence on the instance-caption set `synthetic-scenes` (CPU scale):
# every caption names the objects, colours, positions and relations of its own scene (99.9% distinct),
# so retrieval measures instance learning, not class learning as templated CIFAR captions do.
# 5,000 training pairs (one caption per image) and 1,000 test images; 3 independent hackers per row
# (hackers=3: their own initial weights and data order, never the surrogate's), each a tiny-rn CLIP
# from scratch, 400 steps of batch 128 (AdamW 1e-3), reported as mean and spread beside the clean
# row of the same hackers and the analytic chance level. EM and MEM-3 share one reduced schedule
# (ROUNDS rounds x 100 surrogate steps, 5 PGD steps of 2/255, batch 128; MEM: triggers in the first
# 2 rounds, K 16): the official 20 x 200 x 8-step schedule is about 2 hours of one CPU core per
# protection at this size. The clean hackers of the first run are copied into the others.
# Usage: [OUT_DIR=runs/mem_scenes] [ROUNDS=5] [N_TRAIN=5000] [STEPS=400] bash benchmarks/mem_scenes_evidence.sh
cd "$(dirname "$0")/.." && set -u
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
OB="${OBSTRUCT:-.venv/bin/obstruct}"
R=${OUT_DIR:-runs/mem_scenes}
ROUNDS=${ROUNDS:-5}
mkdir -p "$R"
COMMON="--profile quick --dataset synthetic-scenes --no-progress --set hackers=3 \
 --set max_train_samples=${N_TRAIN:-5000} --set max_test_samples=1000 --set captions_per_image=1 \
 --set context_length=32 --set train.steps=${STEPS:-400} --set train.batch_size=128 --set train.warmup_steps=40 \
 --set train.lr=1e-3"
SCHED="rounds=$ROUNDS train_steps=100 pgd_steps=5 step_size=2/255 batch_size=128"
sched() { for kv in $SCHED; do printf -- "--set %s.%s " "$1" "$kv"; done; }
CMD=mem
source benchmarks/evidence_lib.sh  # the repository root is the working folder (cd above)
CLEAN="hacker0/clean hacker1/clean hacker2/clean"
run mem3 --method mem --trigger-tokens 3 $(sched mem) --set mem.text_rounds=2 --set mem.num_candidates=16
share mem3 em $CLEAN; run em --method em $(sched em)
if [ "${RANDOM_ROW:-1}" = 1 ]; then share mem3 random $CLEAN; run random --method random; fi
echo "done $(date +%T)"
