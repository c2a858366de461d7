#pragma once
// Image classification data sets (MNIST, Fashion-MNIST, CIFAR-10): file readers, loading by name,
// per-channel normalization, augmentation and batch assembly.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace bitrobust::data {

/// An in-memory labelled image set.
struct Dataset {
  at::Tensor images;  ///< uint8 [N, C, H, W], contiguous (CPU after loading)
  at::Tensor labels;  ///< int64 [N], each in [0, num_classes)
  int64_t num_classes = 10;
  std::string name;    ///< "mnist" | "fashion-mnist" | "cifar10" | custom
  std::string split;   ///< "train" | "test"
  std::string source;  ///< the files read (comma separated), for messages and metadata
  std::vector<std::string> files;  ///< the files read, one by one (outputs must not overwrite them)

  int64_t size() const;  ///< N (0 when empty)
  int64_t channels() const;
  int64_t height() const;
  int64_t width() const;
  /// A copy with images and labels on `device` (e.g. to keep the whole set GPU-resident).
  Dataset to(at::Device device) const;
  /// The first min(n, size()) examples (a view, no copy); n < 0 is an error.
  Dataset head(int64_t n) const;
  /// "crc32 <8 hex digits>" of the images' bytes and then the labels (as uint8): which examples a
  /// result was computed on, whatever the files were called. Images and labels are read where
  /// they are (a device copy is copied back).
  std::string fingerprint() const;
};

/// Reads an IDX image file (magic 0x00000803: uint8 [N, rows, cols]) and its IDX label file
/// (magic 0x00000801: uint8 [N]); either may be gzip-compressed or raw. Throws bitrobust::Error
/// naming the file and the problem: missing or unreadable, wrong magic number, wrong number of
/// dimensions or zero sizes, truncated, trailing data, a label >= num_classes, image/label counts differ.
/// The result has name "", split "", C = 1.
Dataset read_idx(const std::string& images_file, const std::string& labels_file, int64_t num_classes = 10);

/// Reads CIFAR-10 binary batch files (raw or gzip-compressed), concatenated in order: each record
/// is 1 label byte (< 10) and 3072 pixel bytes (red, green, blue planes of 32x32, row-major).
/// Files may hold any positive whole number of records (the official ones hold 10000). Files are
/// read in parallel. Throws bitrobust::Error naming the file and the problem.
/// A file holding more than max_file_bytes uncompressed (default 256 MiB, 8.7 times a batch file;
/// a small gzip file can hold gigabytes) is an error naming it.
Dataset read_cifar10(const std::vector<std::string>& files, uint64_t max_file_bytes = uint64_t{1} << 28);

/// Which data set to load.
/// NOTE [Data root]: `root` empty -> the data root is $BITROBUST_DATA if set, else the compile-time
/// BITROBUST_DEFAULT_DATA_DIR if defined, else ./data; MNIST is read from <data root>/mnist and
/// CIFAR-10 from <data root>/cifar10; Fashion-MNIST from <data root>/fashion-mnist if that folder
/// exists, else /usr/share/datasets/fashion-mnist (Debian package dataset-fashion-mnist).
/// `root` given -> it overrides all of these: the files are read from <root>/<folder> if that folder
/// exists (folder = mnist, fashion-mnist, cifar10), else from <root> itself.
/// IDX files: the raw name (e.g. train-images-idx3-ubyte) if present, else with .gz.
/// CIFAR-10 files: <name>.bin if present, else <name>.bin.gz.
struct DatasetRequest {
  std::string name;            ///< one of dataset_names()
  std::string split = "test";  ///< "train" | "test"
  std::string root;            ///< empty = default resolution (see NOTE [Data root])
  /// CIFAR-10 only (ignored, but still validated, for the others):
  ///   "holdout"  (default) train = data_batch_1..4, test = data_batch_5 (exact, clean);
  ///   "jpeg"     train = data_batch_1..5, test = test_batch_jpeg (JPEG-compressed copy of the test set);
  ///   "official" train = data_batch_1..5, test = test_batch.
  std::string protocol = "holdout";
};

/// Loads a data set by name. Unknown name, split or protocol -> bitrobust::Error listing the valid
/// ones; missing files -> an Error naming where it looked.
Dataset load_dataset(const DatasetRequest& request);
/// "mnist", "fashion-mnist", "cifar10".
std::vector<std::string> dataset_names();
/// "holdout", "jpeg", "official".
std::vector<std::string> cifar10_protocols();
/// The data root used when DatasetRequest::root is empty (see NOTE [Data root]).
std::string default_data_root();

/// Per-channel normalization applied to pixels / 255: (x / 255 - mean[c]) / std[c].
struct Normalization {
  std::vector<float> mean, std;
};
/// mnist, fashion-mnist: mean and std of the training pixels; cifar10: (0.4914, 0.4822, 0.4465) /
/// (0.2470, 0.2435, 0.2616). Unknown name -> Error listing the valid ones.
Normalization normalization_for(const std::string& dataset_name);

/// Training-time augmentation (see NOTE [Augmentation order] in augment_kernels.h).
struct AugmentOptions {
  bool random_crop = false;
  int padding = 4;  ///< padding on each side for the random crop, in pixels
  bool horizontal_flip = false;
  int cutout = 0;   ///< Cutout square side in pixels (0 = off)
  bool autoaugment = false;     ///< AutoAugment's CIFAR-10 policy, as the reference (RGB only)
  /// Fill crop padding and AutoAugment's shear/translate borders with int(255 * mean[c]) of the
  /// normalization, as the reference; false = black (torchvision's default).
  bool fill_with_mean = false;
  /// Whether any augmentation is on.
  bool any() const { return (random_crop && padding > 0) || horizontal_flip || autoaugment || cutout > 0; }
  /// "crop4(mean)+flip+autoaugment+cutout16", "none"...: what a run trained with, for records.
  std::string describe() const;
};
/// cifar10: the reference's pipeline (crop with padding 4, horizontal flip, AutoAugment, Cutout 16,
/// padding filled with the mean); mnist, fashion-mnist: none.
AugmentOptions default_augmentation(const std::string& dataset_name);

/// A normalized float batch [B, C, H, W] on images.device() built from the examples at `indices`
/// (integer [B], any device; values in [0, size())), augmented if `augment` is not null. Each
/// example's augmentation is drawn from Philox keyed by (seed, epoch, example index), so a batch
/// is reproducible regardless of batch composition, thread count or device (CPU and CUDA results
/// are bit-identical). CPU indices on a CUDA data set are checked on the host; CUDA indices cost
/// one device synchronization for the range check.
at::Tensor make_batch(const Dataset& data, const at::Tensor& indices, const Normalization& norm,
                      const AugmentOptions* augment, uint64_t seed, uint64_t epoch);

/// The labels at `indices`, on the labels' device.
at::Tensor batch_labels(const Dataset& data, const at::Tensor& indices);

/// Per-epoch shuffle: a permutation of [0, n) from Philox keyed by (seed, epoch) (Fisher-Yates).
std::vector<int64_t> shuffled_indices(int64_t n, uint64_t seed, uint64_t epoch);

}  // namespace bitrobust::data
