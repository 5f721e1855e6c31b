#!/usr/bin/env bash
# Runs hidden test cases of a Catch2 test binary on two MPI ranks on this machine:
#   tests/dist/run_mpi_tests.sh build/tests/attn_tests            # [mpi]: CPU tensors over MPI
#   tests/dist/run_mpi_tests.sh build/tests/attn_tests "[nccl]"   # CUDA build, >= 2 GPUs
# The cases fail (not skip) unless they see a world of exactly two.
set -euo pipefail

binary=${1:?usage: run_mpi_tests.sh TEST_BINARY [TAG (default [mpi])] [Catch2 arguments]}
tag=${2:-[mpi]}
shift $(( $# < 2 ? $# : 2 ))
mpirun=${MPIEXEC:-mpirun}

# --oversubscribe: CI machines may have fewer cores than ranks. --allow-run-as-root: containers.
# --timeout: a collective that one rank never joins hangs MPI; fail instead of stalling CI.
# vader's single-copy (CMA) needs ptrace rights that containers often lack.
export OMPI_MCA_btl_vader_single_copy_mechanism=${OMPI_MCA_btl_vader_single_copy_mechanism:-none}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
exec "$mpirun" --oversubscribe --allow-run-as-root --timeout "${ATTN_MPI_TEST_TIMEOUT:-300}" \
  -np 2 "$binary" "$tag" "$@"
