#include "eval/cli_commands.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "data/corpus.h"
#include "eval/bleu.h"
#include "eval/chrf.h"
#include "eval/unicode.h"

namespace attn::eval {
namespace {

struct Corpus {
  std::vector<std::string> hyps;
  std::vector<std::vector<std::string>> refs;
};

Corpus read_corpus(const std::vector<std::string>& paths) {
  ATTN_CHECK(paths.size() >= 2, "expected a hypothesis file and at least one reference, got ",
             paths.size(), " file(s)");
  Corpus c;
  c.hyps = read_lines_checked(paths[0], "hypotheses");
  ATTN_CHECK(!c.hyps.empty(), "hypotheses '", paths[0], "' have no lines");
  for (size_t k = 1; k < paths.size(); ++k) {
    c.refs.push_back(read_lines_checked(paths[k], "reference"));
    ATTN_CHECK(c.refs.back().size() == c.hyps.size(), "reference '", paths[k], "' has ",
               c.refs.back().size(), " lines but the hypotheses have ", c.hyps.size());
  }
  return c;
}

template <class T, size_t N>
nlohmann::ordered_json array_json(const std::array<T, N>& a) {
  return nlohmann::ordered_json(std::vector<T>(a.begin(), a.end()));
}

}  // namespace

std::vector<std::string> read_lines_checked(const std::string& path, const std::string& role) {
  const std::string text = data::read_file_bytes(path, role);
  const std::string name = path == "-" ? "<stdin>" : path;
  std::vector<std::string> lines;
  for (size_t pos = 0; pos < text.size();) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    data::check_utf8_line(line, name, static_cast<int64_t>(lines.size()) + 1);
    line.resize(py_rstrip(line).size());
    lines.push_back(std::move(line));
    pos = end + 1;
  }
  return lines;
}

int run_bleu_command(const std::vector<std::string>& hyp_and_refs_paths, bool lowercase, bool json,
                     std::ostream& out) {
  const Corpus c = read_corpus(hyp_and_refs_paths);
  BleuOptions options;
  options.lowercase = lowercase;
  const BleuScore s = corpus_bleu(c.hyps, c.refs, options);
  const std::string sig = signature(options, static_cast<int>(c.refs.size()));
  if (!json) {
    out << format(s) << "\n" << sig << "\n";
    return 0;
  }
  nlohmann::ordered_json j;
  j["name"] = "BLEU";
  j["score"] = s.score;
  j["signature"] = sig;
  j["counts"] = array_json(s.counts);
  j["totals"] = array_json(s.totals);
  j["precisions"] = array_json(s.precisions);
  j["bp"] = s.bp;
  j["ratio"] = s.ratio;
  j["sys_len"] = s.sys_len;
  j["ref_len"] = s.ref_len;
  j["text"] = format(s);
  out << j.dump() << "\n";
  return 0;
}

int run_chrf_command(const std::vector<std::string>& hyp_and_refs_paths, bool lowercase, bool json,
                     std::ostream& out) {
  const Corpus c = read_corpus(hyp_and_refs_paths);
  ChrfOptions options;
  options.lowercase = lowercase;
  const ChrfScore s = corpus_chrf(c.hyps, c.refs, options);
  const std::string sig = signature(options, static_cast<int>(c.refs.size()));
  if (!json) {
    out << format(s) << "\n" << sig << "\n";
    return 0;
  }
  nlohmann::ordered_json j;
  j["name"] = "chrF" + std::to_string(kChrfBeta);
  j["score"] = s.score;
  j["signature"] = sig;
  j["hyp_ngrams"] = array_json(s.stats.hyp);
  j["ref_ngrams"] = array_json(s.stats.ref);
  j["matching_ngrams"] = array_json(s.stats.match);
  j["text"] = format(s);
  out << j.dump() << "\n";
  return 0;
}

}  // namespace attn::eval
