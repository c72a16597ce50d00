#!/usr/bin/env bash
# Unlearnable Clusters evidence on CIFAR-10 (CPU scale): one recipe for every row (ResNet-20
# target, SGD 0.1 cosine, pad-crop-flip). Label-free protections are built once and reused across
# hacker label protocols (checkpoints/store copied), and the clean target of a label protocol is
# trained once (checkpoints/target_clean copied); every run resumes. Two lanes run side by side.
# Rows: UC under original labels and two random re-partitions (into 5 and 8 groups), class-wise EM
# (made with the original labels) under original and random-5 labels, UC against grayscale,
# random noise and TAP under the original labels. Lanes c and d (after a and b): the hacker repeated
# with two more target seeds on the same UC noise (original labels: is its response bimodal?), and
# UC against the JPEG (quality 10) and cutout countermeasures. Lane e: the same two countermeasures
# against the hacker of target seed 1 (the one that takes UC's shortcut without a defence). Lane f:
# another target architecture (VGG-11, at lr 0.02) on the same UC noise.
# Usage: CIFAR10_DIR=... RESNET20=... [OUT_DIR=runs/uc_cifar10] [N_TRAIN=5000] [EPOCHS=15] [UC_EPOCHS=4]
#        bash benchmarks/uc_cifar10_evidence.sh
cd "$(dirname "$0")/.." && set -u
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
OB="${OBSTRUCT:-.venv/bin/obstruct}"
D=folder:${CIFAR10_DIR:?set CIFAR10_DIR to an ImageFolder tree with train/ and test/ (e.g. the CIFAR-10 JPEG copy)}
R=${OUT_DIR:-runs/uc_cifar10}
mkdir -p $R
COMMON="--profile quick --dataset $D --target-model resnet20 --no-progress --set image_size=32 \
 --set max_train_samples=${N_TRAIN:-5000} --set max_test_samples=2000 --set train.epochs=${EPOCHS:-15} \
 --set surrogate=classifier:resnet20 --set uc.surrogate_checkpoint=${RESNET20:?set RESNET20 to the released CIFAR-10 ResNet-20 checkpoint (resnet20-12fca82f.th)} \
 --set surrogate_epochs=0 --set protector_model=resnet20 --set uc.epochs=${UC_EPOCHS:-4} \
 --set em.steps=1 --set em.stop_acc=0.9 --set em.max_rounds=30 --set em.shuffle_search=true"
run() { # name, extra args
  local name=$1; shift
  echo "== $name $(date +%T)"; /usr/bin/time -f "$name wall %e s user %U s maxrss %M KB" $OB uc $COMMON --out $R/$name "$@" > $R/$name.log 2>&1
  tail -2 $R/$name.log
}
seed_from() { # from, to, stage: copy a finished stage (waits for the source run to finish)
  while [ ! -f $R/$1/results.json ]; do sleep 20; done
  mkdir -p $R/$2/checkpoints; [ -d $R/$2/checkpoints/$3 ] || cp -r $R/$1/checkpoints/$3 $R/$2/checkpoints/
}
lane_a() {
  run uc-original --method uc --labels original
  seed_from uc-original uc-random8 store; run uc-random8 --method uc --labels random-8
  seed_from uc-original uc-random5 store; seed_from em-class-random5 uc-random5 target_clean
  run uc-random5 --method uc --labels random-5
}
lane_b() {
  run em-class-random5 --method em-class --labels random-5
  seed_from em-class-random5 em-class-original store; seed_from uc-original em-class-original target_clean
  run em-class-original --method em-class --labels original
  seed_from uc-original uc-grayscale store; run uc-grayscale --method uc --labels original --countermeasure grayscale
  seed_from uc-original random-original target_clean; run random-original --method random --labels original
  seed_from uc-original tap-original target_clean; run tap-original --method tap --labels original
}
lane_c() {
  for t in 1 2; do seed_from uc-original uc-original-t$t store; run uc-original-t$t --method uc --labels original --set target_seed=$t; done
}
lane_d() {
  for c in jpeg cutout; do seed_from uc-original uc-$c store; run uc-$c --method uc --labels original --countermeasure $c; done
}
lane_e() {
  for c in jpeg cutout; do seed_from uc-original uc-$c-t1 store; run uc-$c-t1 --method uc --labels original --countermeasure $c --set target_seed=1; done
}
lane_f() { # VGG-11 learns nothing from clean images in 15 epochs at lr 0.1 (20 %), so it trains at 0.02
  seed_from uc-original uc-vgg11-lr02 store; run uc-vgg11-lr02 --method uc --labels original --target-model vgg11 --set train.lr=0.02
}
case ${LANES:-abcdef} in
  a) lane_a ;; b) lane_b ;; c) lane_c ;; d) lane_d ;; e) lane_e ;; f) lane_f ;;
  *) (lane_a; lane_c; lane_e) & (lane_b; lane_d; lane_f) & wait ;;
esac
echo "== done $(date +%T)"
