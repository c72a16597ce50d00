#!/usr/bin/env bash
# Unlearnable Clusters evidence on CIFAR-10 (CPU scale): one recipe for every row. Label-free
# protections are built once and reused across hacker label protocols (store/ copied), and the
# clean target of a label protocol is trained once (target_clean/ copied); every run resumes.
# Usage: CIFAR10_DIR=... RESNET20=... [OUT_DIR=runs/uc_cifar10] bash benchmarks/uc_cifar10_evidence.sh
cd "$(dirname "$0")/.." && set -u
export HF_HUB_OFFLINE=1
OB="${OBSTRUCT:-.venv/bin/obstruct}"
D=folder:${CIFAR10_DIR:?set CIFAR10_DIR to an ImageFolder tree with train/ and test/ (e.g. the CIFAR-10 JPEG copy)}
R=${OUT_DIR:-runs/uc_cifar10}
mkdir -p $R
COMMON="--profile quick --dataset $D --target-model resnet20 --no-progress \
 --set max_train_samples=3000 --set max_test_samples=2000 --set train.epochs=10 \
 --set surrogate=classifier:resnet20 --set uc.surrogate_checkpoint=${RESNET20:?set RESNET20 to the released CIFAR-10 ResNet-20 checkpoint (resnet20-12fca82f.th)} \
 --set surrogate_epochs=0 --set protector_model=resnet20 --set uc.epochs=2 --set em.steps=5 --set em.max_rounds=5"
run() { # name, extra args
  local name=$1; shift
  echo "== $name $(date +%T)"; /usr/bin/time -f "$name wall %e s user %U s maxrss %M KB" $OB uc $COMMON --out $R/$name "$@" > $R/$name.log 2>&1
  tail -2 $R/$name.log
}
seed_from() { # copy a finished stage from one run folder into another (label-free protection / same clean row)
  mkdir -p $R/$2/checkpoints; cp -r $R/$1/checkpoints/$3 $R/$2/checkpoints/
}
run uc-original --method uc --labels original
seed_from uc-original em-original target_clean
run em-original --method em-sample --labels original
seed_from uc-original uc-random5 store
run uc-random5 --method uc --labels random-5
seed_from em-original em-random5 store; seed_from uc-random5 em-random5 target_clean
run em-random5 --method em-sample --labels random-5
seed_from uc-original uc-random2 store
run uc-random2 --method uc --labels random-2
seed_from uc-original uc-grayscale store
run uc-grayscale --method uc --labels original --countermeasure grayscale
echo "== done $(date +%T)"
