// How this process was launched (mpirun, srun or by hand), read from the launcher's
// environment variables before MPI is initialized, so that a plain `attn train` never starts
// MPI; and the MPI lifetime: initialization once, finalization at exit, abort on failure.
#pragma once

#include <string>

namespace attn::dist {

struct LaunchInfo {
  int world_size = 1;
  int rank = 0;
  int local_rank = 0;             // among the processes on this machine
  std::string launcher = "none";  // "none", "mpirun", "srun"
};

// mpirun (Open MPI): OMPI_COMM_WORLD_{SIZE,RANK,LOCAL_RANK}. srun: SLURM_STEP_NUM_TASKS,
// SLURM_PROCID, SLURM_LOCALID. SLURM_STEP_NUM_TASKS (set by srun for its job step) rather
// than SLURM_NTASKS: a batch script itself sees SLURM_NTASKS=<tasks of the job> and
// SLURM_PROCID=0 without being one of several tasks. mpirun wins over srun (mpirun inside a
// Slurm allocation). Anything else is a world of one. Malformed or inconsistent values throw
// naming the variable.
LaunchInfo detect_launch();

// True when MPI has been initialized by make_communicator and not finalized yet.
bool mpi_active();

// One line on stderr, "attn: <kind>: <message>", with "rank R: " before the message when
// MPI is active in a job of several ranks, so that the line says which rank failed. For main()
// and the MPI watchdog (mpi_communicator.h).
void print_failure(const char* kind, const std::string& message);

// For main() after an error in a run with several processes: MPI_Abort, which makes the
// launcher kill every rank (a normal exit would call MPI_Finalize and wait for peers that are
// blocked in a collective). Does not return when MPI is active; returns otherwise.
void abort_job(int exit_code);

// Finalizes MPI now if this process initialized it (also done at exit). Idempotent.
void finalize_mpi();

}  // namespace attn::dist
