#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <string>

#include "bitrobust/common/cpu_description.h"

namespace bitrobust::test_util {
std::string openblas_core_at_load;  // test_util.h
}

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (const auto core = reinterpret_cast<char* (*)()>(::dlsym(RTLD_DEFAULT, "openblas_get_corename"))) {
    bitrobust::test_util::openblas_core_at_load = core();
  }
  bitrobust::choose_openblas_core();  // as the program does (NOTE [OpenBLAS core])
  at::set_num_threads(2);
  return RUN_ALL_TESTS();
}
