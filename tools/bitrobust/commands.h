#pragma once
// The CLI's subcommands: each file registers one on the CLI11 app and runs it.
#include <CLI/CLI.hpp>

#include <ATen/core/Tensor.h>
#include <functional>
#include <string>

#include "bitrobust/data/dataset.h"

namespace bitrobust::cli {

/// Options every subcommand shares.
struct CommonOptions {
  std::string device = "cpu";
  int threads = 0;         ///< 0 = all cores
  std::string json;        ///< result file ("" = none)
  bool quiet = false;
};

void add_common_options(CLI::App& cmd, CommonOptions& common);
/// Applies --threads and checks --device; returns the torch device.
at::Device setup_runtime(const CommonOptions& common);

/// Data set options shared by train, test, eval.
struct DataOptions {
  std::string dataset;
  std::string root;
  std::string protocol = "holdout";
};
void add_data_options(CLI::App& cmd, DataOptions& data, bool required);
data::Dataset load_data(const DataOptions& options, const std::string& split, at::Device device);

using Runner = std::function<int()>;
Runner register_train(CLI::App& app);
Runner register_test(CLI::App& app);

}  // namespace bitrobust::cli
