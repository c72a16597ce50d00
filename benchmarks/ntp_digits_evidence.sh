#!/usr/bin/env bash
# Non-Transferable Pruning evidence on the real digit domains (CPU scale): MNIST -> USPS (the
# paper's heat-map pair) and USPS -> MNIST, digits_cnn at 16 px, the paper's ADMM schedule
# (alpha 1, lambda 1e3, rho 0.005, gamma 1e-4, 20 W-epochs per iteration, <= 100 iterations,
# 10% of S and T for the owner) and one attacker recipe for every curve (Adam 1e-3, 10 epochs,
# final-epoch accuracy) on the paper's ten budgets. Baselines on MNIST -> USPS reuse the NTP run's
# source model (checkpoints/source_model copied). Every run resumes.
# Two lanes run side by side, one thread each (LANES=a or LANES=b runs one of them).
# Usage: MNIST=.../mnist.npz USPS=.../usps.npz [OUT_DIR=runs/ntp_digits] bash benchmarks/ntp_digits_evidence.sh
cd "$(dirname "$0")/.." && set -u
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
OB="${OBSTRUCT:-.venv/bin/obstruct}"
M=npz:${MNIST:?set MNIST to mnist.npz (x_train, y_train, x_test, y_test)}
U=npz:${USPS:?set USPS to usps.npz}
R=${OUT_DIR:-runs/ntp_digits}
mkdir -p $R
COMMON="--profile quick --arch digits_cnn --no-progress --set image_size=16 \
 --set max_source_train=10000 --set max_target_train=10000 --set max_test=2000 \
 --set ratios=0.001,0.002,0.005,0.008,0.01,0.05,0.1,0.2,0.5,1.0 \
 --set source_train.epochs=8 --set curve.epochs=10 --set source_finetune.epochs=3 --set prune_ratio=0.1 \
 --set ntp.epochs=20 --set ntp.max_iters=100 --set ntp.min_iters=10 --set ntp.sparsity=0.95"
run() { # name, extra args
  local name=$1; shift
  echo "== $name $(date +%T)"; /usr/bin/time -f "$name wall %e s user %U s maxrss %M KB" $OB ntp $COMMON --out $R/$name "$@" > $R/$name.log 2>&1
  tail -2 $R/$name.log
}
seed_from() { # reuse a finished source model
  mkdir -p $R/$2/checkpoints; [ -d $R/$2/checkpoints/source_model ] || cp -r $R/$1/checkpoints/source_model $R/$2/checkpoints/
}
lane_a() {
  run mnist-usps-ntp --source $M --target $U --method ntp --attack both
  seed_from mnist-usps-ntp mnist-usps-magnitude; run mnist-usps-magnitude --source $M --target $U --method magnitude --attack both --set ntp.sparsity=0.6
  seed_from mnist-usps-ntp mnist-usps-sparsity; run mnist-usps-sparsity --source $M --target $U --method sparsity --attack masked
}
lane_b() {
  run usps-mnist-ntp --source $U --target $M --method ntp --attack both
  seed_from mnist-usps-ntp mnist-usps-ntl; run mnist-usps-ntl --source $M --target $U --method ntl --attack dense
}
case ${LANES:-ab} in
  a) lane_a ;; b) lane_b ;;
  *) lane_a & lane_b & wait ;;
esac
echo "== done $(date +%T)"
