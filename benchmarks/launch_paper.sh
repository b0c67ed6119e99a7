#!/usr/bin/env bash
# The paper setting on 2 nodes x 8 GPUs: FLUX.1-dev, one prompt per GPU per round, FSDP full shard, the training
# state saved after every round and resumed when the script is started again. Run it on both nodes:
#
#   NODE_RANK=0 MASTER_ADDR=10.0.0.1 METHOD=g2rpo bash benchmarks/launch_paper.sh    # on the first node
#   NODE_RANK=1 MASTER_ADDR=10.0.0.1 METHOD=g2rpo bash benchmarks/launch_paper.sh    # on the second
#
# The flux-dev tier reads its folders from G2RPO_FLUX_DIR, G2RPO_REWARD_DIR, G2RPO_TRAIN_PROMPTS, G2RPO_EVAL_PROMPTS
# (and optionally G2RPO_TEXT_CACHE); see docs/paper-tier.md. SEED (the training seed, default 0), NNODES, NPROC, PRESET,
# THREADS, OUT, PYTHON (the interpreter; default python) and MLFLOW (a tracking URI; default a sqlite store in OUT, logged by rank 0) override the defaults
# (the tests run this script with NNODES=1 NPROC=2 PRESET=smoke on CPU). Not run on GPUs by us: the machines this
# project is built on have none.
set -euo pipefail
: "${NODE_RANK:?set NODE_RANK: 0 on the first node, 1 on the second}"
: "${MASTER_ADDR:?set MASTER_ADDR to the address of the first node}"
METHOD=${METHOD:-g2rpo}
PRESET=${PRESET:-paper}
SEED=${SEED:-0}
OUT=${OUT:-runs/$PRESET-$METHOD-seed$SEED}
mkdir -p "$OUT"
# the interpreter's own launcher: a virtual environment need not be activated for `torchrun` to be on PATH
PYTHON=${PYTHON:-python}
exec "$PYTHON" -m torch.distributed.run --nnodes "${NNODES:-2}" --nproc_per_node "${NPROC:-8}" --node_rank "$NODE_RANK" \
    --master_addr "$MASTER_ADDR" --master_port "${MASTER_PORT:-29500}" \
    -m benchmarks.train --method "$METHOD" --preset "$PRESET" --seed "$SEED" --fsdp --threads "${THREADS:-4}" \
    --checkpoint "$OUT/state" --save "$OUT/policy.safetensors" --mlflow "${MLFLOW:-sqlite:///$OUT/mlflow.db}"
