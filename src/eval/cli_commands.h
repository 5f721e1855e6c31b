// The `attn bleu` and `attn chrf` subcommands as library functions; src/cli only parses the
// options and calls these.
//
//   attn bleu HYP REF [REF...] [-lc] [--json]
//   attn chrf HYP REF [REF...] [-lc] [--json]
//
// HYP "-" reads the hypotheses from stdin. Text output is two lines, the score as sacreBLEU
// prints it and its signature:
//   BLEU = 12.34 45.6/20.1/10.2/5.1 (BP = 1.000 ratio = 1.023 hyp_len = 1234 ref_len = 1206)
//   nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0
// --json prints one JSON object with the full-precision score and its statistics instead.
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace attn::eval {

// The lines of a hypothesis or reference file as sacreBLEU's command line reads them: split
// at '\n' only, each with trailing (Unicode) whitespace removed, so "\r\n" files work. Unlike
// data::read_lines a leading byte-order mark is kept, because sacreBLEU keeps it. "-" reads
// stdin. `role` names the file in errors ("cannot open reference 'x': ...", invalid UTF-8
// with line and byte).
std::vector<std::string> read_lines_checked(const std::string& path,
                                            const std::string& role = "file");

// `hyp_and_refs_paths`: the hypotheses first, then one file per reference stream (at least
// one). Errors (attn::Error) on unreadable files, invalid UTF-8, an empty hypothesis file or
// a reference whose line count differs: "reference 'r.de' has 99 lines but the hypotheses
// have 100". Returns the exit code (0).
int run_bleu_command(const std::vector<std::string>& hyp_and_refs_paths, bool lowercase, bool json,
                     std::ostream& out);
int run_chrf_command(const std::vector<std::string>& hyp_and_refs_paths, bool lowercase, bool json,
                     std::ostream& out);

}  // namespace attn::eval
