// libFuzzer harness: the data readers (IDX image and label files, CIFAR-10 batch files; raw or
// gzip). The first byte picks the reader; for IDX the next two bytes split the rest into the image
// and the label file. Properties: a refusal is a bitrobust::Error; an accepted data set has as many
// labels as images, every label below the class count, and the shape the format promises.
#include <cstdint>
#include <string>

#include "bitrobust/data/dataset.h"
#include "fuzz_util.h"

using namespace bitrobust;

namespace {

void check_dataset(const data::Dataset& d, int64_t num_classes) {
  if (d.images.dim() != 4 || d.labels.dim() != 1 || d.images.size(0) != d.labels.size(0))
    fuzz::property_failed("images and labels disagree in count, or have the wrong rank");
  if (d.size() <= 0) fuzz::property_failed("an accepted data set is empty");
  const at::Tensor labels = d.labels.to(at::kLong);
  if (labels.min().item<int64_t>() < 0 || labels.max().item<int64_t>() >= num_classes)
    fuzz::property_failed("a label outside the classes was accepted");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 3) return 0;
  if (data[0] % 2 == 0) {
    const size_t split = std::min<size_t>(size - 3, (size_t{data[1]} << 8) | data[2]);
    const std::string images = fuzz::write_input_file(data + 3, split, "images.idx");
    const std::string labels = fuzz::write_input_file(data + 3 + split, size - 3 - split, "labels.idx");
    data::Dataset d;
    if (fuzz::accepted([&] { d = data::read_idx(images, labels); })) check_dataset(d, 10);
  } else {
    // A small limit keeps gzip bombs cheap; the limit itself is part of what is checked.
    const std::string batch = fuzz::write_input_file(data + 1, size - 1, "cifar.bin");
    data::Dataset d;
    if (fuzz::accepted([&] { d = data::read_cifar10({batch}, uint64_t{1} << 20); })) {
      check_dataset(d, 10);
      if (d.channels() != 3 || d.height() != 32 || d.width() != 32)
        fuzz::property_failed("a CIFAR-10 image is not 3x32x32");
    }
  }
  return 0;
}
