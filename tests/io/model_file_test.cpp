#include "bitrobust/io/model_file.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>

#include "bitrobust/common/error.h"
#include "test_util.h"

using namespace bitrobust;

TEST(ModelFile, RoundTripKeepsSpecWeightsMetaAndCodes) {
  test_util::TempDir dir;
  io::ModelFile f;
  f.spec.arch = "lenet";
  f.spec.norm = "rebn";
  f.net = models::build_model(f.spec);
  {
    torch::NoGradGuard g;
    for (auto& p : f.net->parameters()) p.uniform_(-1, 1);
  }
  f.meta = {{"dataset", "fashion-mnist"}, {"seed", 3}, {"test_error", 0.125}};
  f.meta["quantization"] = {{"scheme", "x"}, {"params", {{{"name", "conv1.weight"}}}}};
  f.quant_codes.push_back(torch::randint(0, 255, {4, 5}).to(torch::kByte));
  f.quant_ranges.push_back(torch::tensor({{-1.0f, 1.0f}}));
  const auto path = dir.file("m.pt");
  io::save_model_file(path, f);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  const auto g = io::load_model_file(path);
  EXPECT_EQ(g.spec.to_json(), f.spec.to_json());
  EXPECT_EQ(g.meta["seed"], 3);
  EXPECT_DOUBLE_EQ(g.meta["test_error"].get<double>(), 0.125);
  EXPECT_TRUE(g.meta.contains("versions"));
  auto a = f.net->named_parameters();
  for (const auto& item : g.net->named_parameters()) EXPECT_TRUE(torch::equal(item.value(), a[item.key()]));
  auto ab = f.net->named_buffers();
  for (const auto& item : g.net->named_buffers()) EXPECT_TRUE(torch::equal(item.value(), ab[item.key()]));
  ASSERT_EQ(g.quant_codes.size(), 1u);
  EXPECT_TRUE(torch::equal(g.quant_codes[0], f.quant_codes[0]));
  EXPECT_TRUE(torch::equal(g.quant_ranges[0], f.quant_ranges[0]));
}

TEST(ModelFile, BadFilesGiveClearErrors) {
  test_util::TempDir dir;
  auto expect_error = [](const std::string& path, const std::string& part) {
    try {
      io::load_model_file(path);
      ADD_FAILURE() << "no error for " << path;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  expect_error(dir.file("missing.pt"), "does not exist");
  { std::ofstream(dir.file("junk.pt")) << "not a model"; }
  expect_error(dir.file("junk.pt"), "not a readable model archive");
  // A truncated real file.
  io::ModelFile f;
  f.net = models::build_model(f.spec);
  io::save_model_file(dir.file("ok.pt"), f);
  const auto size = std::filesystem::file_size(dir.file("ok.pt"));
  std::filesystem::copy_file(dir.file("ok.pt"), dir.file("cut.pt"));
  std::filesystem::resize_file(dir.file("cut.pt"), size / 2);
  expect_error(dir.file("cut.pt"), "cut.pt");
  // A Torch archive that is not ours.
  torch::serialize::OutputArchive other;
  other.write("x", torch::ones({2}));
  other.save_to(dir.file("other.pt"));
  expect_error(dir.file("other.pt"), "not a bitrobust model");
  // Unwritable destination.
  EXPECT_THROW(io::save_model_file(dir.file("no/such/dir/m.pt"), f), Error);
}
