#include "bitrobust/common/runtime.h"

#include <gtest/gtest.h>
#include <omp.h>
#include <pthread.h>

#include <csignal>
#include <vector>

using namespace bitrobust;

// The output code holds termination signals back on the main thread while a temporary file is made
// and registered; the kernel would hand such a signal to a worker instead, so the workers hold them
// back always (found by a review: every thread's SigBlk read 0 during a training run).
TEST(Runtime, TerminationSignalsAreHeldBackOnTheWorkersAndNotOnTheMainThread) {
  configure_cpu_runtime(2);
  std::vector<int> blocked(2, -1);
  int team = 0;
#pragma omp parallel num_threads(2)
  {
#pragma omp single
    team = omp_get_num_threads();
    sigset_t current;
    ::pthread_sigmask(SIG_BLOCK, nullptr, &current);
    const int held = sigismember(&current, SIGINT) + sigismember(&current, SIGTERM) + sigismember(&current, SIGHUP);
    blocked[omp_get_thread_num()] = held;
  }
  EXPECT_EQ(blocked[0], 0) << "the main thread must take the signals";
  if (team < 2) GTEST_SKIP() << "OpenMP gave a team of one thread";
  EXPECT_EQ(blocked[1], 3) << "a worker must hold all three back";
}
