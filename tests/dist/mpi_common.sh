# Shared by the two-rank MPI test scripts (sourced, not run): arguments, mpirun settings, a
# scratch directory removed at exit, and fail().
#   source mpi_common.sh NAME MPIRUN_TIMEOUT_S "$@"
# sets: attn (binary), src (source dir), mpi (the mpirun command as an array), tmp; defines
# fail MESSAGE.
test_name=$1
attn=${3:?usage: $test_name.sh ATTN_BINARY SOURCE_DIR}
src=${4:?usage: $test_name.sh ATTN_BINARY SOURCE_DIR}
mpirun=${MPIEXEC:-mpirun}
# OpenMPI's shared-memory transport: the single-copy mechanism needs ptrace rights containers
# often lack.
export OMPI_MCA_btl_vader_single_copy_mechanism=${OMPI_MCA_btl_vader_single_copy_mechanism:-none}
# Two ranks on a small machine: one thread each, and no spinning that would starve the other.
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
mpi=("$mpirun" --oversubscribe --allow-run-as-root --timeout "$2" -np 2)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "$test_name: FAIL: $*" >&2; exit 1; }
