// The RErr plot (report::rerr_plot_svg): where each point lands, read back from the SVG.
#include "bitrobust/report/eval_report.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <regex>
#include <string>
#include <vector>

namespace bitrobust {
namespace {

struct Point {
  double x, y;
};

/// The points drawn (one circle per rate and sweep), in drawing order.
std::vector<Point> circles(const std::string& svg) {
  static const std::regex circle(R"re(<circle cx="([-0-9.e]+)" cy="([-0-9.e]+)")re");
  std::vector<Point> points;
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), circle); it != std::sregex_iterator(); ++it) {
    points.push_back({std::stod((*it)[1]), std::stod((*it)[2])});
  }
  return points;
}

/// A sweep result as `eval --json` writes it, with only what the plot reads; rerr by rate.
nlohmann::json sweep(const std::string& error_model, const std::vector<std::pair<double, double>>& rerr) {
  nlohmann::json results = nlohmann::json::array();
  for (const auto& [rate, mean] : rerr) {
    results.push_back({{"rate", rate}, {"rerr_mean", mean}, {"rerr_min", mean - 0.01}, {"rerr_max", mean + 0.01}});
  }
  return {{"error_model", error_model}, {"scheme", "u8-asym-tensor-round"}, {"model_name", "net"},
          {"clean_error", 0.05}, {"results", results}};
}

/// sweep() at 0.1% and 1% with two patterns each (their RErr the min and the max), as tables and
/// pairing read it.
nlohmann::json two_pattern_sweep() {
  auto j = sweep("random", {{1e-3, 0.10}, {1e-2, 0.30}});
  j["patterns"] = 2;
  j["seed"] = 100;
  for (auto& r : j["results"]) {
    r["per_pattern"] = {r["rerr_min"], r["rerr_max"]};
    r["rerr_std"] = 0.01 * std::sqrt(2.0);
  }
  return j;
}

TEST(RerrPlot, RatesLieOnALogAxisAndRateZeroIsTheCleanModelInTheLegend) {
  // Listed out of order: the line still runs from the lowest rate to the highest.
  const auto j = sweep("random", {{0.01, 0.30}, {0.0, 0.05}, {1e-4, 0.06}, {1e-3, 0.10}});
  const std::string svg = report::rerr_plot_svg({j}, "t");
  const auto points = circles(svg);
  ASSERT_EQ(points.size(), 3u) << svg;  // rate 0 without errors is not a point
  EXPECT_LT(points[0].x, points[1].x);
  EXPECT_LT(points[1].x, points[2].x);
  EXPECT_NEAR(points[1].x - points[0].x, points[2].x - points[1].x, 1e-3);  // one decade each
  // Higher RErr is drawn higher (smaller y), linearly: 0.06 -> 0.10 -> 0.30.
  EXPECT_GT(points[0].y, points[1].y);
  EXPECT_GT(points[1].y, points[2].y);
  EXPECT_NEAR((points[0].y - points[1].y) / (points[1].y - points[2].y), 0.04 / 0.20, 1e-3);
  EXPECT_NE(svg.find(", clean 5.00%"), std::string::npos);
  EXPECT_EQ(svg.find("text-anchor=\"middle\">0</text>"), std::string::npos);  // no column for p = 0
}

TEST(RerrPlot, RateZeroWithErrorsInOneDirectionGetsItsOwnColumnLeftOfTheAxis) {
  // "random,0to1=0.02": at p = 0 bits still flip from 0 to 1, so that RErr is a result to plot.
  const auto with_errors = sweep("random,0to1=0.02", {{0.0, 0.20}, {1e-3, 0.22}, {1e-2, 0.40}});
  const auto clean_at_zero = sweep("random", {{0.0, 0.05}, {1e-3, 0.07}, {1e-2, 0.35}});
  const std::string svg = report::rerr_plot_svg({with_errors, clean_at_zero}, "t");
  const auto points = circles(svg);
  ASSERT_EQ(points.size(), 5u) << svg;
  const Point zero = points[0], first = points[1], second = points[2];
  EXPECT_LT(zero.x, first.x);
  EXPECT_LT(first.x, second.x);
  EXPECT_GT(zero.y, first.y);  // RErr 20% below 22%
  // The second sweep's rates share the axis; its rate 0 is the clean model, not a point.
  EXPECT_DOUBLE_EQ(points[3].x, first.x);
  EXPECT_DOUBLE_EQ(points[4].x, second.x);
  EXPECT_NE(svg.find("text-anchor=\"middle\">0</text>"), std::string::npos) << svg;
}

// Compare's table: no model name is cut, and every row is as wide as the header ("±" counted as
// the one character a terminal shows).
TEST(CompareTable, ColumnsFitTheirModelNamesAndStayAligned) {
  auto long_named = sweep("random", {{0.0, 0.05}, {1e-3, 0.06}, {1e-2, 0.10}});
  long_named["model_name"] = "rquant8_clip0.1_randbet1_seed7";  // 30 characters
  long_named["patterns"] = 25;
  for (auto& r : long_named["results"]) r["rerr_std"] = 0.01;
  auto short_named = long_named;
  short_named["model_name"] = "normal8";
  const std::string table = report::compare_table({long_named, short_named});
  EXPECT_NE(table.find("rquant8_clip0.1_randbet1_seed7"), std::string::npos) << table;
  std::vector<std::string> lines;
  for (size_t begin = table.find('\n') + 1, end; (end = table.find('\n', begin)) != std::string::npos; begin = end + 1) {
    lines.push_back(table.substr(begin, end - begin));
  }
  ASSERT_EQ(lines.size(), 4u) << table;  // names, clean, 0.1%, 1%
  const auto shown = [](const std::string& s) {
    size_t n = 0;
    for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
    return n;
  };
  for (const std::string& line : lines) EXPECT_EQ(shown(line), 10u + 2 + 30 + 2 + 22) << table;
  EXPECT_NE(lines[2].find("6.00 ±1.00"), std::string::npos) << table;
}

// NOTE [Paired comparison]: per pattern differences, their mean and Student t interval, and the
// counts of lower and higher patterns; results that did not meet the same patterns say why.
TEST(PairedTable, DifferencesArePerPatternWithAStudentInterval) {
  const auto with = [](std::vector<double> rerr, std::vector<int64_t> bits, const std::string& name) {
    nlohmann::json j = sweep("random", {{0.0, 0.05}, {1e-2, 0.10}});
    j["model_name"] = name;
    j["seed"] = 100;
    j["patterns"] = rerr.size();
    j["results"][0]["per_pattern"] = std::vector<double>(rerr.size(), 0.05);
    j["results"][1]["per_pattern"] = rerr;
    j["results"][1]["bits_changed"] = bits;
    return j;
  };
  const auto base = with({0.10, 0.12, 0.11, 0.13}, {5, 6, 7, 8}, "clip");
  // Differences -0.01, -0.03, +0.01, -0.02: mean -0.0125, sample std 0.0170783, t(3) = 3.182.
  const auto better = with({0.09, 0.09, 0.12, 0.11}, {5, 6, 7, 8}, "randbet");
  auto other_seed = better;
  other_seed["seed"] = 200;
  other_seed["model_name"] = "seed200";
  const auto other_shapes = with({0.09, 0.09, 0.12, 0.11}, {5, 6, 7, 9}, "wider");
  auto other_bits = better;  // stuck-at errors change only some selected bits: the scheme tells the widths
  other_bits["scheme"] = "u4-asym-tensor-round";
  other_bits["model_name"] = "four";
  const std::string table = report::paired_table({base, better, other_seed, other_shapes, other_bits});
  const double half = 3.182 * 0.0170783 / 2;
  char expected[128];
  std::snprintf(expected, sizeof expected, "    1%%           -1.25  [%+.2f, %+.2f]  3 / 1 of 4\n", 100 * (-0.0125 - half),
                100 * (-0.0125 + half));
  EXPECT_NE(table.find(std::string("  randbet\n") + expected), std::string::npos) << table << "expected " << expected;
  EXPECT_NE(table.find("  seed200: not paired (seed 100 against 200)"), std::string::npos) << table;
  EXPECT_NE(table.find("  wider: not paired (their patterns changed other numbers of bits"), std::string::npos) << table;
  EXPECT_NE(table.find("  four: not paired (8-bit codes against 4-bit codes)"), std::string::npos) << table;
  EXPECT_EQ(table.find("0%  "), std::string::npos) << "rate 0 is the clean model, not a pattern:\n" << table;
  EXPECT_EQ(report::paired_table({base}), "");
  // Against another result: the differences change sign.
  const std::string reversed = report::paired_table({base, better}, 1);
  std::snprintf(expected, sizeof expected, "    1%%           +1.25  [%+.2f, %+.2f]  1 / 3 of 4\n", 100 * (0.0125 - half),
                100 * (0.0125 + half));
  EXPECT_NE(reversed.find("paired with randbet"), std::string::npos) << reversed;
  EXPECT_NE(reversed.find(std::string("  clip\n") + expected), std::string::npos) << reversed << "expected " << expected;
  // Stuck-at errors change only some selected bits, so their counts cannot tell the layouts apart;
  // the recorded layout can (and "limit" does not matter when the same images were evaluated).
  auto stuck = base, stuck_wide = better;
  stuck["error_model"] = stuck_wide["error_model"] = "stuck_at_1";
  stuck["layout"] = report::layout_of({{16, 64}, {16}}, {8, 8});
  stuck_wide["layout"] = report::layout_of({{32, 64}, {32}}, {8, 8});
  stuck_wide["model_name"] = "stuck-wide";
  stuck["limit"] = 0;
  stuck_wide["limit"] = 10000;
  EXPECT_NE(report::paired_table({stuck, stuck_wide}).find("  stuck-wide: not paired (other parameter shapes or bit widths"),
            std::string::npos)
      << report::paired_table({stuck, stuck_wide});
  stuck_wide["layout"] = stuck["layout"];
  // Other images under the same data set's name and count (another data root) are not paired.
  stuck["data"] = "crc32 0000abcd";
  stuck_wide["data"] = "crc32 0000abce";
  EXPECT_NE(report::paired_table({stuck, stuck_wide})
                .find("  stuck-wide: not paired (other images (data \"crc32 0000abcd\" against \"crc32 0000abce\"))"),
            std::string::npos)
      << report::paired_table({stuck, stuck_wide});
  stuck_wide["data"] = stuck["data"];
  EXPECT_NE(report::paired_table({stuck, stuck_wide}).find("  stuck-wide\n    1%  "), std::string::npos)
      << report::paired_table({stuck, stuck_wide});
  EXPECT_EQ(report::layout_of({{16, 64}, {16}}, {8, 8}).substr(0, 24), "2 tensors, 8320 bits, cr");
  EXPECT_NE(report::layout_of({{16, 64}, {16}}, {8, 8}), report::layout_of({{64, 16}, {16}}, {8, 8}));
  EXPECT_NE(report::layout_of({{16, 64}, {16}}, {8, 8}), report::layout_of({{16, 64}, {16}}, {8, 4}));
  // One pattern: a difference, but no interval.
  const std::string one = report::paired_table({with({0.10}, {5}, "a"), with({0.12}, {5}, "b")});
  EXPECT_NE(one.find("    1%           +2.00  [-]  0 / 1 of 1\n"), std::string::npos) << one;
  // Equal patterns: no "-0.00" from a difference of -1e-17 (found by a review).
  const auto tiny = with({0.1 + 0.2, 0.3}, {5, 6}, "same");  // (0.1 + 0.2 is 0.30000000000000004)
  const std::string same = report::paired_table({tiny, with({0.3, 0.3}, {5, 6}, "lower by 5e-17")});
  EXPECT_EQ(same.find("-0.00"), std::string::npos) << same;
  EXPECT_NE(same.find("+0.00"), std::string::npos) << same;
  // An interval that crosses 0 by less than 0.005 points keeps its sign (it had printed
  // "[+0.00, +0.01]", which reads as a difference that does not cross 0).
  const auto flat = with({0.1, 0.1, 0.1, 0.1}, {5, 6, 7, 8}, "flat");
  const std::string near_zero = report::paired_table({flat, with({0.10011, 0.10001, 0.10006, 0.10004}, {5, 6, 7, 8}, "up")});
  EXPECT_NE(near_zero.find("+0.01  [-0.00, +0.01]  0 / 4 of 4"), std::string::npos) << near_zero;
  // Results of rate 0 alone have no pattern to pair: said in words, not an empty block.
  auto clean_a = with({0.10}, {5}, "a"), clean_b = with({0.10}, {5}, "b");
  for (auto* j : {&clean_a, &clean_b}) j->at("results").erase(1);
  EXPECT_NE(report::paired_table({clean_a, clean_b}).find("  b: no rate with bit errors in both results to pair\n"),
            std::string::npos)
      << report::paired_table({clean_a, clean_b});
}

}  // namespace

// Why two results are not paired quotes their fields, which may hold anything a file held.
TEST(PairedTable, UnpairedReasonsArePrintedWithoutControlCharacters) {
  auto a = sweep("random", {{1e-3, 0.10}});
  a["patterns"] = 2;
  a["seed"] = 100;
  a["layers"] = "";
  a["results"][0]["per_pattern"] = {0.09, 0.11};
  auto b = a;
  b["model_name"] = "evil";
  b["layers"] = "fc\xC2\x9B" "2J\xE2\x80\xAE" "evil";
  const std::string paired = report::paired_table({a, b});
  EXPECT_TRUE(paired.find("evil: not paired (") != std::string::npos) << paired;
  EXPECT_EQ(paired.find("\xC2\x9B"), std::string::npos) << paired;
  EXPECT_EQ(paired.find("\xE2\x80\xAE"), std::string::npos) << paired;
}

// One model evaluated twice (other --layers or --limit) shows up under one name: each of its
// columns, paired rows and legend entries gets the result's position, as --paired-with counts.
TEST(CompareTable, ResultsSharingANameAreToldApartByTheirPosition) {
  auto a = two_pattern_sweep();
  auto other = a;
  other["model_name"] = "other";
  const std::string table = report::compare_table({a, other, a});
  EXPECT_NE(table.find("net #1"), std::string::npos) << table;
  EXPECT_NE(table.find("net #3"), std::string::npos) << table;
  EXPECT_EQ(table.find("other #"), std::string::npos) << table;
  const std::string paired = report::paired_table({a, other, a}, 2);
  EXPECT_EQ(paired.rfind("paired with net #3 ", 0), 0u) << paired;
  EXPECT_NE(paired.find("  net #1"), std::string::npos) << paired;
  const std::string svg = report::rerr_plot_svg({a, other, a}, "t");
  EXPECT_NE(svg.find(">net #1</text>"), std::string::npos) << svg;
  EXPECT_NE(svg.find(">net #3</text>"), std::string::npos) << svg;
  EXPECT_NE(svg.find(">other</text>"), std::string::npos) << svg;
  // Distinct names are left as they are.
  EXPECT_EQ(report::compare_table({a, other}).find('#'), std::string::npos);
}

// A name that reads like a suffixed one ("net #2") must not meet the suffix another result gets.
TEST(CompareTable, ANameLikeASuffixedOneStillGetsAColumnOfItsOwn) {
  auto a = two_pattern_sweep();
  auto b = a;
  b["model_name"] = "net #2";
  const std::string svg = report::rerr_plot_svg({a, a, b}, "t");
  for (const char* name : {">net #1</text>", ">net #2 #2</text>", ">net #2 #3</text>"}) {
    EXPECT_NE(svg.find(name), std::string::npos) << name << "\n" << svg;
  }
  const std::string table = report::compare_table({a, a, b});
  for (const char* name : {"net #1", "net #2 #2", "net #2 #3"}) EXPECT_NE(table.find(name), std::string::npos) << table;
}

// A sweep restricted to some layers, or run at another precision, says so in its table's header:
// it would otherwise read as a whole-model sweep at full precision.
TEST(SweepTable, HeaderNamesLayersAndPrecisionWhereTheyAreNotTheDefault) {
  auto j = sweep("random", {{1e-3, 0.10}});
  j["patterns"] = 1;
  j["seed"] = 100;
  j["results"][0]["rerr_std"] = 0.0;
  const auto header = [](const nlohmann::json& result) {
    const std::string table = report::sweep_table(result);
    return table.substr(0, table.find('\n'));
  };
  EXPECT_EQ(header(j), "net  scheme u8-asym-tensor-round  errors random  1 pattern from seed 100");
  j["layers"] = "";
  j["precision"] = "fp32";
  EXPECT_EQ(header(j), "net  scheme u8-asym-tensor-round  errors random  1 pattern from seed 100");
  j["layers"] = "conv1\\.weight";
  j["precision"] = "bf16";
  EXPECT_EQ(header(j), "net  scheme u8-asym-tensor-round  errors random  1 pattern from seed 100  layers "
                       "'conv1\\.weight'  precision bf16");
}

// A name holding a newline or a terminal escape keeps the tables' lines and the terminal's state.
TEST(CompareTable, NamesWithControlCharactersArePrintedReplaced) {
  auto a = two_pattern_sweep();
  auto b = a;
  a["model_name"] = std::string("evil\n\x1b[2Jname\xff\xC2\x9B" "1m\xE2\x80\xAEtxt");
  b["model_name"] = "plain";
  for (const std::string& text : {report::sweep_table(a), report::compare_table({a, b}), report::paired_table({b, a})}) {
    EXPECT_EQ(text.find('\x1b'), std::string::npos) << text;
    EXPECT_EQ(text.find("\xff"), std::string::npos) << text;
    EXPECT_NE(text.find("evil\xEF\xBF\xBD\xEF\xBF\xBD[2Jname\xEF\xBF\xBD\xEF\xBF\xBD" "1m\xEF\xBF\xBDtxt"),
              std::string::npos)
        << text;
  }
}

TEST(RerrPlot, TitlesAndNamesThatAreNotXmlTextAreReplaced) {
  // Bytes that are not UTF-8 and control characters (a name from a file or the command line) would
  // make the SVG unreadable; each becomes U+FFFD, and markup characters are escaped.
  auto j = sweep("random", {{1e-3, 0.10}, {1e-2, 0.30}});
  j["model_name"] = std::string("n\xfe\x02<&");
  const std::string svg = report::rerr_plot_svg({j}, std::string("bad\xff\x01\"t\""));
  const std::string fffd = "\xEF\xBF\xBD";
  EXPECT_NE(svg.find("bad" + fffd + fffd + "&quot;t&quot;"), std::string::npos) << svg;
  EXPECT_NE(svg.find("n" + fffd + fffd + "&lt;&amp;"), std::string::npos) << svg;
  for (size_t i = 0; i < svg.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(svg[i]);
    EXPECT_FALSE(c < 0x20 && c != '\n' && c != '\t' && c != '\r') << "control byte at " << i;
    EXPECT_NE(c, 0xFE);
    EXPECT_NE(c, 0xFF);
  }
  // U+FFFE and U+FFFF are valid UTF-8 but not XML characters.
  j["model_name"] = std::string("a\xEF\xBF\xBE" "b\xEF\xBF\xBF" "c");
  EXPECT_NE(report::rerr_plot_svg({j}, "t").find("a" + fffd + "b" + fffd + "c"), std::string::npos);
}

// Every result keeps its legend entry inside the canvas, and results past the eighth, whose colours
// repeat, are drawn dashed with hollow legend squares.
TEST(RerrPlot, LongLegendsGrowTheCanvasAndRepeatedColoursAreDashed) {
  std::vector<nlohmann::json> many(12, sweep("random", {{1e-3, 0.10}, {1e-2, 0.30}}));
  const std::string svg = report::rerr_plot_svg(many, "t");
  const std::smatch height = [&] {
    std::smatch m;
    std::regex_search(svg, m, std::regex(R"re(height="([0-9.]+)")re"));
    return m;
  }();
  ASSERT_FALSE(height.empty());
  double last_legend_y = 0;
  static const std::regex rect(R"re(<rect x="[0-9.]+" y="([0-9.]+)" width="12")re");
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), rect); it != std::sregex_iterator(); ++it) {
    last_legend_y = std::max(last_legend_y, std::stod((*it)[1]));
  }
  EXPECT_LT(last_legend_y + 40, std::stod(height[1])) << "the 12th entry (its scheme line) must fit";
  size_t dashed = 0;
  for (size_t at = svg.find("stroke-dasharray"); at != std::string::npos; at = svg.find("stroke-dasharray", at + 1)) ++dashed;
  EXPECT_EQ(dashed, 4u);
  EXPECT_EQ(report::rerr_plot_svg({many[0]}, "t").find("stroke-dasharray"), std::string::npos);
}

}  // namespace bitrobust
