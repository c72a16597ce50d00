#!/usr/bin/env bash
# Unlearnable Clusters evidence on CIFAR-10 (CPU scale), measured honestly:
# - every row is 3 independent hackers (hackers=3: their own initial weights and data order, never
#   the protector's), reported by the runner as mean and spread, with the clean row of the same hackers;
# - UC's protector has no labels: its surrogate is a ResNet-20 pre-trained with SimCLR on the
#   protector's 5,000 images (simclr:resnet20), never the released supervised ResNet-20;
# - EM is class-wise error-minimising noise crafted with the labels the protocol gives the protector:
#   the original classes (protocols original, random-5) or a random 2-group coarse labelling (finer-2:
#   the hacker then trains on all 10 classes, the paper's label-agnostic failure case of EM).
# The hacker recipe is the earlier evidence's: 5,000 training images (seeded subset), 2,000 test
# images, ResNet-20 trained 15 epochs (SGD 0.1 cosine, pad-crop-flip). UC under finer-2 is UC under
# original (UC reads no labels and the hacker trains on the original classes in both).
# Stores and clean hackers are shared between runs by copying their finished checkpoint folders
# (same data, seeds and recipe); every run resumes. Two lanes run side by side at one thread each.
# Usage: CIFAR10_DIR=... [OUT_DIR=runs/uc_cifar10] [N_TRAIN=5000] [EPOCHS=15] [SIMCLR_EPOCHS=20]
#        [UC_EPOCHS=4] [VGG=1] bash benchmarks/uc_cifar10_evidence.sh
cd "$(dirname "$0")/.." && set -u
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
OB="${OBSTRUCT:-.venv/bin/obstruct}"
D=folder:${CIFAR10_DIR:?set CIFAR10_DIR to an ImageFolder tree with train/ and test/ (e.g. the CIFAR-10 JPEG copy)}
R=${OUT_DIR:-runs/uc_cifar10}
mkdir -p "$R"
COMMON="--profile quick --dataset $D --target-model resnet20 --no-progress --set image_size=32 --set hackers=3 \
 --set max_train_samples=${N_TRAIN:-5000} --set max_test_samples=2000 --set train.epochs=${EPOCHS:-15} \
 --set surrogate=simclr:resnet20 --set surrogate_epochs=${SIMCLR_EPOCHS:-20} --set simclr.batch_size=256 \
 --set simclr.temperature=0.5 --set protector_model=resnet20 --set uc.epochs=${UC_EPOCHS:-4} \
 --set em.steps=1 --set em.stop_acc=0.9 --set em.max_rounds=30 --set em.shuffle_search=true"
CMD=uc
source benchmarks/evidence_lib.sh  # the repository root is the working folder (cd above)
CLEAN="hacker0/clean hacker1/clean hacker2/clean"
lane_a() {
  run uc-original --method uc --labels original
  share uc-original uc-random5 store; share em-class-random5 uc-random5 $CLEAN; run uc-random5 --method uc --labels random-5
}
lane_b() {
  run em-class-random5 --method em-class --labels random-5
  share em-class-random5 em-class-original store; share uc-original em-class-original $CLEAN
  run em-class-original --method em-class --labels original
  share uc-original em-class-finer2 $CLEAN; run em-class-finer2 --method em-class --labels finer-2
}
lane_a & lane_b & wait
if [ "${VGG:-1}" = 1 ]; then  # another architecture, at a learning rate that learns clean data (lr 0.02)
  V="--target-model vgg11 --set train.lr=0.02"
  share uc-original uc-original-vgg store; run uc-original-vgg --method uc --labels original $V &
  share em-class-finer2 em-class-finer2-vgg store; run em-class-finer2-vgg --method em-class --labels finer-2 $V &
  wait
fi
echo "done $(date +%T)"
