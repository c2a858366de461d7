// The CLI's contract: bad input gives one clear message and a non-zero exit, never a trace or abort.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "archive_util.h"
#include "data/data_files.h"
#include "model_fixtures.h"
#include "test_util.h"

using namespace bitrobust;

namespace {

void expect_clean_failure(const std::string& args, const std::string& message_part) {
  const test_util::CliResult r = test_util::run_cli(args);
  EXPECT_NE(r.status, 0) << args;
  EXPECT_LT(r.status, 128) << "crashed: " << args << "\n" << r.output;
  EXPECT_NE(r.output.find(message_part), std::string::npos) << args << "\n" << r.output;
  EXPECT_EQ(r.output.find("Exception raised from"), std::string::npos) << "stack trace leaked:\n" << r.output;
  EXPECT_EQ(r.output.find("terminate called"), std::string::npos) << r.output;
}

}  // namespace

TEST(Cli, HelpListsSubcommandsAndExitsZero) {
  const test_util::CliResult r = test_util::run_cli("--help");
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.output.find("train"), std::string::npos);
  EXPECT_NE(r.output.find("test"), std::string::npos);
  // An example and the environment variables close the top-level help.
  EXPECT_TRUE(test_util::contains(r.output, "\nExample (Fashion-MNIST")) << r.output;
  EXPECT_TRUE(test_util::contains(r.output, "Environment: BITROBUST_DATA")) << r.output;
  const test_util::CliResult train = test_util::run_cli("train --help");
  EXPECT_EQ(train.status, 0);
  // Usage names the program, not the path it was run by (found by a review).
  EXPECT_TRUE(test_util::contains(train.output, "Usage: bitrobust train [OPTIONS]")) << train.output;
  // A command's help ends with the environment variables, not the program's example again.
  EXPECT_TRUE(test_util::contains(train.output, "Environment: BITROBUST_DATA")) << train.output;
  EXPECT_FALSE(test_util::contains(train.output, "Example (Fashion-MNIST")) << train.output;
  // Defaults close their options' descriptions (CLI11 would glue them to the range: ">= 1=3").
  EXPECT_TRUE(test_util::contains(train.output, "training epochs (default 3)\n")) << train.output;
  EXPECT_TRUE(test_util::contains(train.output, "--epochs INT:an integer >= 1\n")) << train.output;
  EXPECT_TRUE(test_util::contains(train.output, "--device TEXT:{cpu,cuda}    where to compute (cuda: a GPU, with a CUDA build) (default cpu)\n")) << train.output;
  EXPECT_FALSE(test_util::contains(train.output, "=3")) << train.output;
  EXPECT_FALSE(test_util::contains(train.output, "(default )")) << train.output;
  // Options without a default, flags and lists get none.
  EXPECT_TRUE(test_util::contains(train.output, "--out TEXT REQUIRED         model file to write\n")) << train.output;
  EXPECT_TRUE(test_util::contains(train.output, "--resume                    continue from the checkpoint if it exists\n"))
      << train.output;
  EXPECT_EQ(test_util::run_cli("test --help").status, 0);
  const test_util::CliResult compare = test_util::run_cli("compare --help");
  EXPECT_TRUE(test_util::contains(compare.output, "results TEXT ... REQUIRED")) << compare.output;
}

TEST(Cli, UnknownFlagsAndBadValuesFailCleanly) {
  expect_clean_failure("train --dataset fashion-mnist --out x.pt --no-such-flag", "no-such-flag");
  expect_clean_failure("test --model m.pt --device tpu", "--device");
  expect_clean_failure("test --model m.pt --batch -3", "--batch");
  expect_clean_failure("train --dataset imagenet --out /tmp/x.pt --epochs 1", "imagenet");
  expect_clean_failure("train --dataset fashion-mnist --model vgg --out /tmp/x.pt", "--model: vgg not in {mlp,lenet,");
  expect_clean_failure("frobnicate", "unknown command 'frobnicate'");
  // Unexpected words in the order they were typed (CLI11 lists them reversed).
  expect_clean_failure("test --model m.pt --precision bf16 -l 10",
                       "The following arguments were not expected: --precision bf16 -l 10");
  // An error model needing more bits than the codes have names its option.
  expect_clean_failure("train --dataset fashion-mnist --out x.pt --scheme rquant --bits 4 --randbet 1% "
                       "--randbet-error-model lsb5",
                       "--randbet-error-model lsb5: bit errors: lsb5 needs at least 5 bits, codes have 4");
  // Options of CIFAR-10 alone, which another data set would silently ignore.
  expect_clean_failure("train --dataset fashion-mnist --out x.pt --cifar-protocol jpeg",
                       "--cifar-protocol jpeg: only CIFAR-10 has split protocols, and the data set is fashion-mnist");
  expect_clean_failure("train --dataset fashion-mnist --out x.pt --no-autoaugment",
                       "--no-autoaugment: training on fashion-mnist uses no AutoAugment to leave out");
  // An error model fixing both directions' rates would make --randbet's rate change nothing.
  expect_clean_failure("train --dataset fashion-mnist --out x.pt --scheme rquant --randbet 1% "
                       "--randbet-error-model random,0to1=0.1%,1to0=0.1%",
                       "--randbet-error-model: 'random,0to1=0.1%,1to0=0.1%' sets both the 0to1 and the 1to0 rate");
}

TEST(Cli, MissingAndCorruptModelFilesFailCleanly) {
  bitrobust::test_util::TempDir dir;
  expect_clean_failure("test --model " + dir.file("missing.pt"), "does not exist");
  { std::ofstream(dir.file("junk.pt")) << "junk"; }
  expect_clean_failure("test --model " + dir.file("junk.pt") + " --dataset fashion-mnist", "junk.pt");
  // A real model file with one bit flipped in its largest record (NOTE [Record checksums]).
  io::ModelFile f = test_util::quantized_model_file(8);
  io::save_model_file(dir.file("good.pt"), f);
  const std::string record = test_util::copy_with_flipped_bit(dir.file("good.pt"), dir.file("flipped.pt"));
  expect_clean_failure("eval --model " + dir.file("good.pt") + " --error-model lsb9",
                       "--error-model lsb9: bit errors: lsb9 needs at least 9 bits, codes have 8");
  expect_clean_failure("pattern --model " + dir.file("good.pt") + " --rate 1% --error-model lsb9 --out " +
                           dir.file("p.txt"),
                       "--error-model lsb9: bit errors: lsb9 needs at least 9 bits, codes have 8");
  for (const std::string& command : std::vector<std::string>{"test", "eval", "export --out " + dir.file("codes")}) {
    expect_clean_failure(command + " --model " + dir.file("flipped.pt"),
                         "model file " + dir.file("flipped.pt") + " is damaged: its record " + record);
  }
}

TEST(Cli, MissingDataFolderFailsCleanly) {
  bitrobust::test_util::TempDir dir;
  expect_clean_failure("train --dataset mnist --data-root " + dir.file("nowhere") + " --out " + dir.file("m.pt"),
                       "nowhere");
}

TEST(Cli, CommandLineSyntaxErrorsUseTheProjectFormatAndStatusTwo) {
  for (const std::string args : {"test --model m.pt --batch -3", "train --dataset fashion-mnist --out x.pt --epochs 1 --epochs 2",
                                 "eval --model m.pt --patterns 1e3", "train --dataset fashion-mnist --out x.pt --init xavier",
                                 "train --dataset fashion-mnist --out x.pt --norm bogus", "train --dataset fashion-mnist --out x.pt --model vgg",
                                 "train --dataset fashion-mnist --out x.pt --randbet-mode sometimes",
                                 "train --dataset fashion-mnist --out x.pt --randbet-curriculum always", "eval --model m.pt --precision FP32",
                                 "frobnicate", "test --model m.pt --no-such-flag"}) {
    const test_util::CliResult r = test_util::run_cli(args);
    EXPECT_EQ(r.status, 2) << args << "\n" << r.output;
    EXPECT_EQ(r.output.rfind("bitrobust: error: ", 0), 0u) << args << "\n" << r.output;
  }
  EXPECT_EQ(test_util::run_cli("train --dataset fashion-mnist --out x.pt --epochs 1 --epochs 2").output,
            "bitrobust: error: --epochs given more than once (2 times); give it once (see --help)\n");
  // A mistyped required option is named as the typo, not only as the option missing (found by a
  // review: CLI11 reports the missing one first).
  EXPECT_EQ(test_util::run_cli("eval --modle m.pt --limit 5").output,
            "bitrobust: error: The following arguments were not expected: --modle m.pt (and --model is required) "
            "(see --help)\n");
  EXPECT_EQ(test_util::run_cli("eval --limit 5").output, "bitrobust: error: --model is required (see --help)\n");
  // (A missing or unknown command, also a "required" error to CLI11, keeps its own message.)
  EXPECT_EQ(test_util::run_cli("frobnicate").output.rfind("bitrobust: error: unknown command 'frobnicate' (commands: ", 0),
            0u);
  EXPECT_EQ(test_util::run_cli("--threads 2 eval").output.rfind("bitrobust: error: unknown option '--threads': a command "
                                                                "comes first", 0),
            0u);
}

// A decimal out of its range is a command-line error like an integer out of its range (status 2),
// and the message gives the range the option accepts.
TEST(Cli, DecimalsOutOfTheirRangeAreCommandLineErrors) {
  const std::string train = "train --dataset fashion-mnist --out x.pt --scheme rquant ";
  for (const auto& [args, message] : std::vector<std::pair<std::string, std::string>>{
           {train + "--clip -1", "--clip: must be a number in [1e-30, 1e+30], got '-1'"},
           {train + "--clip 1e31", "--clip: must be a number in [1e-30, 1e+30], got '1e31'"},
           {train + "--clip nan", "--clip: must be a number in [1e-30, 1e+30], got 'nan'"},
           {train + "--clip 0.1x", "--clip: must be a number in [1e-30, 1e+30], got '0.1x'"},
           {train + "--clip 1e-40", "--clip: must be a number in [1e-30, 1e+30], got '1e-40'"},
           {train + "--clip 0x10", "--clip: must be a number in [1e-30, 1e+30], got '0x10'"},  // (strtod: 16)
           {train + "--bits 0x8", "--bits: must be an integer in 2..16, got '0x8'"},
           {train + "--lr 0", "--lr: must be a number in (0, 1e+30], got '0'"},
           {train + "--lr -1", "--lr: must be a number in (0, 1e+30], got '-1'"},
           {train + "--lr nan", "--lr: must be a number in (0, 1e+30], got 'nan'"},
           {train + "--lr 1e39", "--lr: must be a number in (0, 1e+30], got '1e39'"},
           {train + "--momentum 2", "--momentum: must be a number in [0, 1), got '2'"},
           {train + "--momentum 1", "--momentum: must be a number in [0, 1), got '1'"},
           {train + "--weight-decay -1e-9", "--weight-decay: must be a number in [0, 1e+30], got '-1e-9'"},
           {train + "--weight-decay 1e39", "--weight-decay: must be a number in [0, 1e+30], got '1e39'"},
           {train + "--randbet 1% --randbet-start inf", "--randbet-start: must be a number in (0, 1e+30], got 'inf'"},
           {"quantize --model m.pt --out q.pt --clip 0", "--clip: must be a number in [1e-30, 1e+30], got '0'"}}) {
    const test_util::CliResult r = test_util::run_cli(args);
    EXPECT_EQ(r.status, 2) << args << "\n" << r.output;
    EXPECT_EQ(r.output, "bitrobust: error: " + message + " (see --help)\n") << args;
  }
  // The ends that are in the range are accepted: these fail later, for the missing model file.
  for (const std::string args : {"quantize --model m.pt --out q.pt --clip 1e30", "quantize --model m.pt --out q.pt --clip 1e-30"}) {
    const test_util::CliResult r = test_util::run_cli(args);
    EXPECT_EQ(r.status, 1) << args << "\n" << r.output;
    EXPECT_TRUE(test_util::contains(r.output, "m.pt does not exist")) << args << "\n" << r.output;
  }
}

TEST(Cli, ThreadCountsFarAboveTheCoresAreRefused) {
  expect_clean_failure("test --model m.pt --threads 100000", "--threads: 100000 is more than 4 per core on this machine");
  const test_util::CliResult r = test_util::run_cli("test --model m.pt --threads 100000");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_EQ(r.output.rfind("bitrobust: error: --threads: ", 0), 0u) << r.output;
  // Past int64 too: the limit named is the machine's, not the integer type's.
  expect_clean_failure("test --model m.pt --threads 99999999999999999999",
                       "--threads: 99999999999999999999 is more than 4 per core on this machine");
  expect_clean_failure("test --model m.pt --threads -1", "--threads: must be an integer >= 0, got '-1'");
}

TEST(Cli, OutputPathsAreCheckedBeforeAnyWork) {
  bitrobust::test_util::TempDir dir;
  // Neither data nor model exist: the bad output path must be what is reported.
  expect_clean_failure("train --dataset mnist --data-root " + dir.file("nowhere") + " --out " +
                           dir.file("no/such/folder/m.pt"),
                       "folder " + dir.file("no/such/folder") + " does not exist");
  std::filesystem::create_directory(dir.file("taken.pt"));
  expect_clean_failure("train --dataset mnist --data-root " + dir.file("nowhere") + " --out " + dir.file("taken.pt"),
                       "it is a folder");
  expect_clean_failure("test --model " + dir.file("missing.pt") + " --json " + dir.file("no/x.json"),
                       "--json file " + dir.file("no/x.json"));
}

TEST(Cli, ReplayFixesRateSeedModelAndLayers) {
  for (const std::string option : {"--rates 1%", "--patterns 3", "--seed 7", "--error-model msb", "--layers fc"}) {
    expect_clean_failure("eval --model m.pt --replay p.txt " + option,
                         option.substr(0, option.find(' ')) + " cannot be combined with --replay");
  }
  expect_clean_failure("eval --model m.pt --seed -1", "--seed");
  for (const std::string option : {"--csv r.csv", "--plot r.svg", "--name mine"}) {  // these would be silently skipped
    expect_clean_failure("eval --model m.pt --replay p.txt " + option,
                         option.substr(0, option.find(' ')) + " describes a sweep and cannot be combined with --replay");
  }
}

// Options that only mean something with another one are errors without it, found before any data
// are read (the data folder here does not exist).
TEST(Cli, TrainOptionsWithoutWhatTheyModifyAreErrorsBeforeAnyWork) {
  bitrobust::test_util::TempDir dir;
  const std::string base = "train --dataset mnist --data-root " + dir.file("nowhere") + " --out " + dir.file("m.pt");
  expect_clean_failure(base + " --quant-include 'conv*'", "--quant-include/--quant-exclude choose what");
  expect_clean_failure(base + " --randbet-mode alternate", "--randbet-mode sets up random bit error training");
  expect_clean_failure(base + " --randbet-curriculum reference", "--randbet-curriculum sets up random bit error training");
  expect_clean_failure(base + " --scheme rquant --randbet-start 2", "--randbet-start sets up random bit error training");
}

TEST(Cli, AnOutputThatIsAnInputIsRefusedAndTheInputKept) {
  bitrobust::test_util::TempDir dir;
  { std::ofstream(dir.file("m.pt")) << "a model"; }
  expect_clean_failure("test --model " + dir.file("m.pt") + " --json " + dir.file("m.pt"),
                       "cannot write --json file " + dir.file("m.pt") + ": it is the model file (--model)");
  expect_clean_failure("quantize --model " + dir.file("m.pt") + " --out " + dir.file("m.pt") + " --scheme rquant",
                       "it is the model file (--model) this command reads");
  expect_clean_failure("eval --model " + dir.file("m.pt") + " --json " + dir.file("r.json") + " --csv " + dir.file("r.json"),
                       "cannot write --csv file " + dir.file("r.json") + ": it is also the --json file");
  expect_clean_failure("train --dataset mnist --out " + dir.file("t.pt") + " --checkpoint " + dir.file("t.pt"),
                       "cannot write checkpoint " + dir.file("t.pt") + ": it is also the model file (--out)");
  std::ifstream in(dir.file("m.pt"));
  std::string text;
  std::getline(in, text);
  EXPECT_EQ(text, "a model");
}

// A checkpoint replaces whatever has its name, but not a model file (found by a review: train
// --checkpoint naming another run's quantized model destroyed it). Found before any data are read.
TEST(Cli, ACheckpointNeverReplacesAModelFile) {
  bitrobust::test_util::TempDir dir;
  bitrobust::io::save_model_file(dir.file("q.pt"), bitrobust::test_util::quantized_model_file(8));
  const auto size = std::filesystem::file_size(dir.file("q.pt"));
  for (const std::string resume : {"", " --resume"}) {
    expect_clean_failure("train --dataset mnist --data-root " + dir.file("nowhere") + " --out " + dir.file("t.pt") +
                             " --checkpoint " + dir.file("q.pt") + resume,
                         "cannot write checkpoint " + dir.file("q.pt") +
                             ": it is a bitrobust model file, which the checkpoint would replace");
  }
  EXPECT_EQ(std::filesystem::file_size(dir.file("q.pt")), size);
  // Nor any other file that is not a checkpoint (a damaged one included), found once the data
  // are read (a data file given as the checkpoint is named as one).
  { std::ofstream(dir.file("notes.txt")) << "my notes"; }
  const std::string mnist = dir.file("mnist");
  std::filesystem::create_directories(mnist);
  for (const char* prefix : {"/train", "/t10k"}) {
    bitrobust::testing::write_file(mnist + prefix + "-images-idx3-ubyte",
                                   bitrobust::testing::idx_images(4, 28, 28, bitrobust::testing::pattern_pixels(4, 28 * 28)));
    bitrobust::testing::write_file(mnist + prefix + "-labels-idx1-ubyte", bitrobust::testing::idx_labels({0, 1, 2, 3}));
  }
  expect_clean_failure("train --dataset mnist --data-root " + mnist + " --out " + dir.file("t.pt") +
                           " --checkpoint " + dir.file("notes.txt"),
                       "cannot write checkpoint " + dir.file("notes.txt") +
                           ": it exists and is not a bitrobust training checkpoint");
  // With --resume the file was to be read: the message says so (found by a review).
  expect_clean_failure("train --dataset mnist --data-root " + mnist + " --out " + dir.file("t.pt") +
                           " --checkpoint " + dir.file("notes.txt") + " --resume",
                       "cannot resume from checkpoint " + dir.file("notes.txt") +
                           ": it cannot be read as a bitrobust training checkpoint: ");
  std::ifstream notes(dir.file("notes.txt"));
  std::string kept;
  std::getline(notes, kept);
  EXPECT_EQ(kept, "my notes");
  using bitrobust::io::ArchiveKind;
  EXPECT_EQ(bitrobust::io::archive_kind(dir.file("q.pt")), ArchiveKind::ModelFile);
  EXPECT_EQ(bitrobust::io::archive_kind(dir.file("notes.txt")), ArchiveKind::Other);
  EXPECT_EQ(bitrobust::io::archive_kind(dir.file("missing.pt")), ArchiveKind::Missing);
  EXPECT_EQ(bitrobust::io::archive_kind(dir.path()), ArchiveKind::Other);
}

// A pattern listing more flips than a file may hold is refused before any is drawn (found by a
// review: 100% of a large model ran out of memory after minutes); a lower rate or --layers fits.
TEST(Cli, APatternTooLargeToListIsRefusedBeforeDrawing) {
  bitrobust::test_util::TempDir dir;
  bitrobust::io::ModelFile f;
  f.spec = bitrobust::test_util::tiny_mlp_spec(100000);  // 6,900,004 weights: 55.2 M bits at 8
  f.net = bitrobust::models::build_model(f.spec);
  bitrobust::quant::store_in_model_file(
      bitrobust::quant::quantize_model(*f.net, bitrobust::quant::QuantScheme::preset("rquant", 8)), f);
  bitrobust::io::save_model_file(dir.file("wide.pt"), f);
  expect_clean_failure("pattern --model " + dir.file("wide.pt") + " --rate 100% --out " + dir.file("p.txt"),
                       "pattern --rate 100%: about 55200032 of the 55200032 bits errors may hit would be listed, "
                       "more than the 50000000 `pattern` lists");
  EXPECT_FALSE(std::filesystem::exists(dir.file("p.txt")));
  const auto fits = bitrobust::test_util::run_cli("pattern --model " + dir.file("wide.pt") +
                                                  " --rate 1% --layers 'fc_out.*' --out " + dir.file("p.txt"));
  EXPECT_EQ(fits.status, 0) << fits.output;
}

TEST(Cli, EmptyOptionValuesAreErrorsNotDefaults) {
  expect_clean_failure("test --model m.pt --json ''", "--json: empty value");
  expect_clean_failure("eval --model '' --rates 1%", "--model: empty value");
}

// What a command prints goes through stdio's buffer: a write that fails (a full disk, a closed
// descriptor) must end the run with an error, not status 0 and nothing written.
TEST(Cli, AFailedWriteToStandardOutputIsAnError) {
  bitrobust::test_util::TempDir dir;
  io::save_model_file(dir.file("m.pt"), test_util::quantized_model_file(8));
  const auto errors = [&]() {
    std::ifstream in(dir.file("err"));
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  };
  EXPECT_EQ(test_util::run_cli("info --model " + dir.file("m.pt") + " >/dev/null; echo status=$?").output, "status=0\n");
  for (const std::string& out : {">/dev/full", ">&-"}) {
    const test_util::CliResult r =
        test_util::run_cli("info --model " + dir.file("m.pt") + " " + out + " 2>" + dir.file("err") + "; echo status=$?");
    EXPECT_EQ(r.output, "status=1\n") << out;
    EXPECT_TRUE(test_util::contains(errors(), "bitrobust: error: cannot write standard output: ")) << out << ": " << errors();
  }
  // --help too (CLI11 prints it; the flush is ours).
  EXPECT_EQ(test_util::run_cli("--help >/dev/full 2>" + dir.file("err") + "; echo status=$?").output, "status=1\n");
  EXPECT_TRUE(test_util::contains(errors(), "bitrobust: error: cannot write standard output: ")) << errors();
}
