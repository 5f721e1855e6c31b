// BLEU and chrF (src/eval): small cases whose expected values were worked out by hand and
// confirmed with sacreBLEU 2.6.0. tests/eval/compare_sacrebleu.py checks hundreds of random
// corpora against sacreBLEU itself.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "base/error.h"
#include "eval/bleu.h"
#include "eval/chrf.h"
#include "eval/cli_commands.h"
#include "eval/tokenizer_13a.h"
#include "eval/unicode.h"
#include "test_util.h"

using namespace attn;
using namespace attn::eval;
using attn::testing::error_of;
using Catch::Contains;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path = fs::temp_directory_path() / ("attn_test_eval_" + std::to_string(::getpid()));
  TempDir() { fs::create_directories(path); }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string write(const std::string& name, const std::string& bytes) const {
    const fs::path p = path / name;
    std::ofstream(p, std::ios::binary) << bytes;
    return p.string();
  }
};

BleuScore bleu1(const std::string& hyp, const std::string& ref, bool lowercase = false) {
  BleuOptions options;
  options.lowercase = lowercase;
  return corpus_bleu({hyp}, {{ref}}, options);
}

}  // namespace

TEST_CASE("13a tokenization splits punctuation, numbers and entities like sacreBLEU", "[eval]") {
  CHECK(tokenize_13a("Hello, world!") == "Hello , world !");
  // '.' and ',' stay inside numbers; '$' is split off.
  CHECK(tokenize_13a("It costs $3.14, or 1,000.50 euros.") ==
        "It costs $ 3.14 , or 1,000.50 euros .");
  // '-' is split off after a digit only; a leading '-' stays on the number.
  CHECK(tokenize_13a("pages 10-20 and e-mail") == "pages 10 - 20 and e-mail");
  CHECK(tokenize_13a("1.000,50 2019-2020 -7") == "1.000,50 2019 - 2020 -7");
  // A period before a digit is split when a non-digit precedes it (the padding space counts).
  CHECK(tokenize_13a(".5 and 5. and a.b") == ". 5 and 5 . and a . b");
  CHECK(tokenize_13a("U.S.A. 3.") == "U . S . A . 3 .");
  // Entities are unescaped once each, in the order quot, amp, lt, gt: "&amp;lt;" becomes '<'.
  CHECK(tokenize_13a("&amp;lt; &quot;hi&quot; AT&amp;T &foo;") == "< \" hi \" AT & T & foo ;");
  CHECK(tokenize_13a("x<skipped>y") == "xy");
  CHECK(tokenize_13a("a-\nb c\nd") == "ab c d");
  // The apostrophe is not split; brackets are.
  CHECK(tokenize_13a("don't (stop) [now] {ok}") == "don't ( stop ) [ now ] { ok }");
  // Non-ASCII punctuation is left alone; Unicode whitespace separates tokens.
  CHECK(tokenize_13a("caf\u00e9, na\u00efve. \u4e2d\u6587\u3002") ==
        "caf\u00e9 , na\u00efve . \u4e2d\u6587\u3002");
  CHECK(tokenize_13a("a\u00a0b\u3000c\u2003d\te\u0085f\u2028g\x1ch") == "a b c d e f g h");
  CHECK(tokenize_13a("") == "");
}

TEST_CASE("Python's str whitespace and lowercasing", "[eval]") {
  const auto words = py_split(" a\u00a0b\u3000\u3000c\u2003d\te\u0085\u200bf ");
  REQUIRE(words.size() == 6);
  CHECK(words[0] == "a");
  CHECK(words[3] == "d");
  CHECK(words[4] == "e");
  CHECK(words[5] == "\u200bf");  // U+200B (zero width space) is not whitespace to Python
  CHECK(py_rstrip("abc \t\u3000\r") == "abc");
  CHECK(py_rstrip("\u00a0 ") == "");
  CHECK(remove_py_space("a b\u2003c") == "abc");

  CHECK(py_lower("The CAT \u00c9T\u00c9") == "the cat \u00e9t\u00e9");
  // Final sigma at the end of a word, medial sigma elsewhere, an isolated capital sigma
  // stays medial; 'İ' lowercases to two code points.
  CHECK(py_lower("\u039f\u0394\u039f\u03a3 \u03a3\u0391\u03a3 \u03a3 \u0130") ==
        "\u03bf\u03b4\u03bf\u03c2 \u03c3\u03b1\u03c2 \u03c3 i\u0307");
  // Case-ignorable characters (apostrophe, combining accent) are skipped by the sigma rule.
  CHECK(py_lower("\u0391\u03a3'") == "\u03b1\u03c2'");
  CHECK(py_lower("\u0391'\u03a3") == "\u03b1'\u03c2");
  CHECK(py_lower("\u0391\u03a3\u0301\u0392") == "\u03b1\u03c3\u0301\u03b2");
  CHECK(py_lower("\U00010400") == "\U00010428");  // Deseret: 4-byte UTF-8 both ways
}

TEST_CASE("BLEU of a perfect match is 100", "[eval]") {
  const BleuScore s = bleu1("The cat sat on the mat.", "The cat sat on the mat.");
  CHECK(s.score == Approx(100.0));
  CHECK(s.bp == 1.0);
  CHECK(s.sys_len == 7);
  CHECK(s.ref_len == 7);
  CHECK(s.counts == std::array<int64_t, 4>{7, 6, 5, 4});
  CHECK(s.totals == std::array<int64_t, 4>{7, 6, 5, 4});
  CHECK(format(s) ==
        "BLEU = 100.00 100.0/100.0/100.0/100.0 (BP = 1.000 ratio = 1.000 hyp_len = 7 ref_len = 7)");
}

TEST_CASE("BLEU of an empty hypothesis is 0 with brevity penalty 0", "[eval]") {
  const BleuScore s = bleu1("", "a b c");
  CHECK(s.score == 0.0);
  CHECK(s.bp == 0.0);
  CHECK(s.sys_len == 0);
  CHECK(s.ref_len == 3);
  CHECK(format(s) ==
        "BLEU = 0.00 0.0/0.0/0.0/0.0 (BP = 0.000 ratio = 0.000 hyp_len = 0 ref_len = 3)");
  // Both empty: no reference length, ratio 0, brevity penalty 1.
  const BleuScore e = bleu1("", "");
  CHECK(e.score == 0.0);
  CHECK(e.bp == 1.0);
  CHECK(e.ratio == 0.0);
}

TEST_CASE("BLEU brevity penalty is exp(1 - ref/hyp) for short hypotheses", "[eval]") {
  const BleuScore s = bleu1("a b c d", "a b c d e f");
  CHECK(s.precisions == std::array<double, 4>{100.0, 100.0, 100.0, 100.0});
  CHECK(s.bp == std::exp(1.0 - 6.0 / 4.0));
  CHECK(s.score == Approx(100.0 * std::exp(-0.5)));
  CHECK(format(s) ==
        "BLEU = 60.65 100.0/100.0/100.0/100.0 (BP = 0.607 ratio = 0.667 "
        "hyp_len = 4 ref_len = 6)");
  // Longer than the reference: no penalty.
  CHECK(bleu1("a b c d e f", "a b c d").bp == 1.0);
}

TEST_CASE("BLEU exp smoothing halves the credit of each order without a match", "[eval]") {
  // 1-grams 3/4, 2-grams 1/3 ("a b"), 3-grams 0/2 -> 1/(2*2), 4-grams 0/1 -> 1/(4*1).
  const BleuScore s = bleu1("a b c d", "a b x d");
  CHECK(s.counts == std::array<int64_t, 4>{3, 1, 0, 0});
  CHECK(s.totals == std::array<int64_t, 4>{4, 3, 2, 1});
  CHECK(s.precisions[0] == 75.0);
  CHECK(s.precisions[1] == Approx(100.0 / 3));
  CHECK(s.precisions[2] == 25.0);
  CHECK(s.precisions[3] == 25.0);
  const double want = std::exp((std::log(75.0) + std::log(100.0 / 3) + 2 * std::log(25.0)) / 4);
  CHECK(s.score == Approx(want).epsilon(1e-12));
  CHECK(format(s) ==
        "BLEU = 35.36 75.0/33.3/25.0/25.0 (BP = 1.000 ratio = 1.000 hyp_len = 4 ref_len = 4)");

  // An order with no n-grams at all (a 2-token corpus has no 3-grams) makes BLEU 0, but the
  // precisions up to it are still reported.
  const BleuScore t = bleu1("a b", "a b");
  CHECK(t.score == 0.0);
  CHECK(t.precisions == std::array<double, 4>{100.0, 100.0, 0.0, 0.0});
  // No match at any order: 0 and no smoothing.
  const BleuScore u = bleu1("x y z w", "a b c d");
  CHECK(u.score == 0.0);
  CHECK(u.precisions == std::array<double, 4>{0.0, 0.0, 0.0, 0.0});
}

TEST_CASE("BLEU statistics are summed over the corpus before scoring", "[eval]") {
  const BleuScore s = corpus_bleu({"a b c d", "a b"}, {{"a b x d", "a b"}});
  CHECK(s.counts == std::array<int64_t, 4>{5, 2, 0, 0});
  CHECK(s.totals == std::array<int64_t, 4>{6, 4, 2, 1});
  CHECK(s.sys_len == 6);
  CHECK(s.ref_len == 6);
}

TEST_CASE("BLEU with several references: closest length (shorter on ties), max clipping",
          "[eval]") {
  // 5 tokens between references of 4 and 6: a tie, the shorter wins.
  CHECK(corpus_bleu({"a b c d e"}, {{"a b c d"}, {"a b c d e f"}}).ref_len == 4);
  CHECK(corpus_bleu({"a b c d e"}, {{"a b c d e f"}, {"a b c d"}}).ref_len == 4);
  CHECK(corpus_bleu({"a b c d e"}, {{"a b c"}, {"a b c d e f"}}).ref_len == 6);
  // "the" is clipped at 2, its largest count in any one reference (not the sum, 3).
  const BleuScore s = corpus_bleu({"the the the the"}, {{"the cat"}, {"the the cat"}});
  CHECK(s.counts == std::array<int64_t, 4>{2, 1, 0, 0});
  CHECK(s.totals == std::array<int64_t, 4>{4, 3, 2, 1});
  CHECK(s.ref_len == 3);
  CHECK(format(s) ==
        "BLEU = 31.95 50.0/33.3/25.0/25.0 (BP = 1.000 ratio = 1.333 hyp_len = 4 ref_len = 3)");
}

TEST_CASE("BLEU -lc lowercases with Python's rules", "[eval]") {
  CHECK(bleu1("The Cat", "the cat").counts[0] == 0);
  CHECK(bleu1("The Cat", "the cat", true).precisions[0] == 100.0);
  // Final sigma: the lowercased hypothesis matches a reference written with 'ς'.
  const BleuScore s = bleu1("\u039f\u0394\u039f\u03a3 \u03a3\u039f\u03a6\u039f\u03a3",
                            "\u03bf\u03b4\u03bf\u03c2 \u03c3\u03bf\u03c6\u03bf\u03c2", true);
  CHECK(s.counts[0] == 2);
  CHECK(s.counts[1] == 1);

  BleuOptions lc;
  lc.lowercase = true;
  CHECK(signature(BleuOptions{}, 1) ==
        "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0");
  CHECK(signature(lc, 3) == "nrefs:3|case:lc|eff:no|tok:13a|smooth:exp|version:2.6.0");
}

TEST_CASE("chrF matches sacreBLEU's defaults", "[eval]") {
  CHECK(corpus_chrf({"abc"}, {{"abc"}}).score == 100.0);
  // Whitespace does not count: "a b c" and "abc" are the same characters.
  CHECK(corpus_chrf({"a b c"}, {{"abc"}}).score == 100.0);
  const ChrfScore s = corpus_chrf({"the cat"}, {{"the cats"}});
  CHECK(s.score == Approx(77.57103344229319).epsilon(1e-14));
  CHECK(s.stats.hyp == std::array<int64_t, 6>{6, 5, 4, 3, 2, 1});
  CHECK(s.stats.ref == std::array<int64_t, 6>{7, 6, 5, 4, 3, 2});
  CHECK(s.stats.match == std::array<int64_t, 6>{6, 5, 4, 3, 2, 1});
  CHECK(format(s) == "chrF2 = 77.57");
  // Orders the reference is too short for are left out of the average (effective order).
  CHECK(corpus_chrf({"ab"}, {{"abc"}}).score == Approx(63.636363636363626).epsilon(1e-14));
  CHECK(corpus_chrf({""}, {{"abc"}}).score == 0.0);
  // The best reference per segment is used.
  CHECK(corpus_chrf({"the cat"}, {{"a dog"}, {"the cats"}}).score ==
        Approx(77.57103344229319).epsilon(1e-14));

  ChrfOptions lc;
  lc.lowercase = true;
  CHECK(corpus_chrf({"The CAT"}, {{"the cat"}}).score == Approx(8.88888888888889));
  CHECK(corpus_chrf({"The CAT"}, {{"the cat"}}, lc).score == 100.0);
  CHECK(signature(ChrfOptions{}, 1) ==
        "nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0");
  CHECK(signature(lc, 2) == "nrefs:2|case:lc|eff:yes|nc:6|nw:0|space:no|version:2.6.0");
}

TEST_CASE("BLEU and chrF reject inconsistent input", "[eval]") {
  CHECK_THAT(error_of([] {
               corpus_bleu({"a", "b"}, {{"a"}});
             }),
             Contains("corpus_bleu: reference stream 1 has 1 lines but the hypotheses have 2"));
  CHECK_THAT(error_of([] { corpus_chrf({"a"}, {}); }),
             Contains("corpus_chrf: no reference stream given"));
  CHECK_THAT(error_of([] { corpus_bleu({"a\xC3"}, {{"a"}}); }),
             Contains("corpus_bleu: hypothesis 1 is not valid UTF-8"));
}

TEST_CASE("bleu and chrf commands read files like sacreBLEU and print its lines", "[eval]") {
  TempDir dir;
  const std::string hyp = dir.write("hyp", "The cat sat on the mat.\r\nHello \u3000\n");
  const std::string ref = dir.write("ref", "The cat sat on the mat.\nHello\n");
  std::ostringstream out;
  CHECK(run_bleu_command({hyp, ref}, false, false, out) == 0);
  CHECK(out.str() ==
        "BLEU = 100.00 100.0/100.0/100.0/100.0 (BP = 1.000 ratio = 1.000 hyp_len = 8 "
        "ref_len = 8)\nnrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0\n");

  std::ostringstream chrf;
  CHECK(run_chrf_command({hyp, ref, ref}, true, false, chrf) == 0);
  CHECK(chrf.str() == "chrF2 = 100.00\nnrefs:2|case:lc|eff:yes|nc:6|nw:0|space:no|version:2.6.0\n");

  std::ostringstream json;
  run_bleu_command({hyp, ref}, false, true, json);
  CHECK_THAT(json.str(), Contains("\"name\":\"BLEU\",\"score\":"));
  CHECK_THAT(json.str(), Contains("\"counts\":[8,6,5,4],\"totals\":[8,6,5,4]"));
  CHECK_THAT(json.str(), Contains("\"sys_len\":8,\"ref_len\":8"));

  // Lines end at '\n' only (U+2028 and U+0085 are inside a line), trailing whitespace goes,
  // a byte-order mark stays (sacreBLEU keeps it as a character).
  const std::string odd = dir.write("odd", "\xEF\xBB\xBFx\u2028y \ny\u0085z\t\r\n\nlast");
  const std::vector<std::string> lines = read_lines_checked(odd);
  REQUIRE(lines.size() == 4);
  CHECK(lines[0] == "\xEF\xBB\xBFx\u2028y");
  CHECK(lines[1] == "y\u0085z");
  CHECK(lines[2] == "");
  CHECK(lines[3] == "last");

  const std::string short_ref = dir.write("short", "a\n");
  CHECK_THAT(error_of([&] {
               run_bleu_command({hyp, short_ref}, false, false, out);
             }),
             Contains("reference '" + short_ref + "' has 1 lines but the hypotheses have 2"));
  CHECK_THAT(error_of([&] {
               run_chrf_command({hyp, ref, short_ref}, false, false, out);
             }),
             Contains("reference '" + short_ref + "' has 1 lines but the hypotheses have 2"));
  CHECK_THAT(error_of([&] { run_bleu_command({hyp}, false, false, out); }),
             Contains("at least one reference"));
  CHECK_THAT(error_of([&] {
               run_bleu_command({(dir.path / "nope").string(), ref}, false, false, out);
             }),
             Contains("cannot open hypotheses"));
  const std::string bad = dir.write("bad", "ok\nb\xC0\xAF\n");
  CHECK_THAT(error_of([&] {
               run_bleu_command({bad, ref}, false, false, out);
             }),
             Contains("invalid UTF-8 in '" + bad + "' line 2, byte 2"));
  const std::string empty = dir.write("empty", "");
  CHECK_THAT(error_of([&] {
               run_bleu_command({empty, empty}, false, false, out);
             }),
             Contains("have no lines"));
}
