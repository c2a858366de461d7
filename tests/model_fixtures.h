#pragma once
// Small models and settings shared by the training and evaluation tests: an MLP spec for the 8x8
// synthetic set, that MLP trained and quantized once per test binary, and quiet sweep options.
#include <torch/torch.h>

#include "bitrobust/eval/bit_error_eval.h"
#include "bitrobust/io/model_file.h"
#include "bitrobust/models/models.h"
#include "bitrobust/quant/model_quantization.h"
#include "bitrobust/train/trainer.h"
#include "test_util.h"

namespace bitrobust::test_util {

/// An MLP for test_util::synthetic_dataset's default 8x8 images and 4 classes.
inline models::ModelSpec tiny_mlp_spec(int64_t hidden = 16, const std::string& norm = "none") {
  models::ModelSpec s;
  s.arch = "mlp";
  s.norm = norm;
  s.in_channels = 1;
  s.height = s.width = 8;
  s.num_classes = 4;
  s.units = {hidden};
  return s;
}

/// An untrained tiny_mlp_spec(8) quantized with the rquant preset, as `bitrobust quantize` would
/// store it in a model file.
inline io::ModelFile quantized_model_file(int bits) {
  io::ModelFile f;
  f.spec = tiny_mlp_spec(8);
  f.net = models::build_model(f.spec);
  const quant::QuantizedModel q = quant::quantize_model(*f.net, quant::QuantScheme::preset("rquant", bits));
  quant::store_in_model_file(q, f);
  return f;
}

/// tiny_mlp_spec(32) trained for 2 epochs on 400 synthetic examples, quantized to 8 bits (rquant).
struct Trained {
  data::Dataset data = synthetic_dataset(400, 4, 8, 11);
  std::shared_ptr<models::Classifier> net;
  quant::QuantizedModel q;
  Trained() {
    torch::manual_seed(2);
    net = models::build_model(tiny_mlp_spec(32));
    train::TrainOptions o;
    o.epochs = 2;
    o.batch_size = 32;
    o.progress = false;
    train::train(*net, data, o);
    q = quant::quantize_model(*net, quant::QuantScheme::preset("rquant", 8));
  }
};
/// One Trained per test binary.
inline Trained& trained() {
  static Trained t;
  return t;
}

/// Sweep options for tests: seeds from 100, batch 128, no progress bar.
inline eval::SweepOptions quiet_sweep_options(std::vector<double> rates, int64_t patterns = 6) {
  eval::SweepOptions o;
  o.rates = std::move(rates);
  o.patterns = patterns;
  o.seed = 100;
  o.batch_size = 128;
  o.progress = false;
  return o;
}

}  // namespace bitrobust::test_util
