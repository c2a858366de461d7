#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include "bitrobust/common/cpu_description.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  bitrobust::choose_openblas_core();  // as the program does (NOTE [OpenBLAS core])
  at::set_num_threads(2);
  return RUN_ALL_TESTS();
}
