#pragma once
// A small MLP trained on the synthetic set and quantized to 8 bits (rquant), built once per test
// binary and shared by the evaluation tests.
#include <torch/torch.h>

#include "bitrobust/models/models.h"
#include "bitrobust/quant/model_quantization.h"
#include "bitrobust/train/trainer.h"
#include "test_util.h"

namespace bitrobust::test_util {

// A small trained and quantized MLP on the synthetic set: shared by the tests below.
struct Trained {
  data::Dataset data = test_util::synthetic_dataset(400, 4, 8, 11);
  std::shared_ptr<models::Classifier> net;
  quant::QuantizedModel q;
  Trained() {
    models::ModelSpec s;
    s.arch = "mlp";
    s.norm = "none";
    s.in_channels = 1;
    s.height = s.width = 8;
    s.num_classes = 4;
    s.units = {32};
    torch::manual_seed(2);
    net = models::build_model(s);
    train::TrainOptions o;
    o.epochs = 2;
    o.batch_size = 32;
    o.progress = false;
    train::train(*net, data, o);
    q = quant::quantize_model(*net, quant::QuantScheme::preset("rquant", 8));
  }
};
inline Trained& trained() {
  static Trained t;
  return t;
}

}  // namespace bitrobust::test_util
