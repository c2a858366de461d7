#include <ATen/Parallel.h>
#include <torch/cuda.h>

#include <thread>

#include "bitrobust/common/error.h"
#include "commands.h"

namespace bitrobust::cli {

void add_common_options(CLI::App& cmd, CommonOptions& common) {
  cmd.add_option("--device", common.device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  cmd.add_option("--threads", common.threads, "CPU threads (default: all cores)")->check(CLI::NonNegativeNumber);
  cmd.add_option("--json", common.json, "write the run's figures to this JSON file");
  cmd.add_flag("--quiet", common.quiet, "no progress bar");
}

at::Device setup_runtime(const CommonOptions& common) {
  const int threads = common.threads > 0 ? common.threads : static_cast<int>(std::thread::hardware_concurrency());
  at::set_num_threads(std::max(1, threads));
  if (common.device == "cuda") {
    BR_CHECK(torch::cuda::is_available(), "--device cuda: no CUDA device available (or this build has no CUDA)");
    return at::Device(at::kCUDA);
  }
  return at::Device(at::kCPU);
}

void add_data_options(CLI::App& cmd, DataOptions& data, bool required) {
  auto* opt = cmd.add_option("--dataset", data.dataset, "mnist, fashion-mnist or cifar10");
  if (required) opt->required();
  cmd.add_option("--data-root", data.root, "folder holding the data set's files (default: where set-up puts it)");
  cmd.add_option("--cifar-protocol", data.protocol,
                 "CIFAR-10 split protocol: holdout (train 1-4, test 5), jpeg (JPEG test copy), official")
      ->check(CLI::IsMember({"holdout", "jpeg", "official"}));
}

data::Dataset load_data(const DataOptions& options, const std::string& split, at::Device device) {
  data::DatasetRequest request;
  request.name = options.dataset;
  request.split = split;
  request.root = options.root;
  request.protocol = options.protocol;
  data::Dataset d = data::load_dataset(request);
  return device.is_cpu() ? d : d.to(device);
}

}  // namespace bitrobust::cli
