// Shared pieces of the qtk command-line tool: what a command returns, its
// options table (which drives both parsing and --help), and output helpers.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "qtk/status.h"
#include "qtk/tensor.h"

namespace qtk::cli {

// Keep in step with project(qtk VERSION ...) in CMakeLists.txt.
inline constexpr const char* kVersion = "0.1.0";

// The result of a command; main() turns it into an exit code and one
// "qtk: error: ..." line.
struct Outcome {
  enum class Kind { kOk, kFailure, kUsage };
  Kind kind = Kind::kOk;
  std::string message;

  static Outcome ok() { return {}; }
  static Outcome usage(std::string m) { return {Kind::kUsage, std::move(m)}; }
  static Outcome failure(std::string m) { return {Kind::kFailure, std::move(m)}; }
  static Outcome failure(const Status& s) { return {Kind::kFailure, s.message()}; }
  bool is_ok() const { return kind == Kind::kOk; }
  int exit_code() const { return kind == Kind::kOk ? 0 : kind == Kind::kUsage ? 2 : 1; }
};

struct OptionSpec {
  std::string_view name;         // "--input"
  std::string_view placeholder;  // "[NAME=]FILE.npy"; empty for a flag without a value
  std::string_view help;
  bool repeatable = false;
  std::string_view alias = {};   // a short form, e.g. "-o" for "--output"
};

struct ParsedArgs {
  std::vector<std::string> positionals;
  std::map<std::string, std::vector<std::string>, std::less<>> values;  // option name -> values ("" for flags)
  bool help = false;

  bool has(std::string_view name) const { return values.find(name) != values.end(); }
  // The (last) value of an option, or nullptr when absent.
  const std::string* get(std::string_view name) const;
  std::vector<std::string> all(std::string_view name) const;
};

struct CommandSpec {
  std::string_view name;
  std::string_view positionals;  // e.g. "MODEL", shown in the usage line
  int num_positionals;           // exact number required
  std::string_view summary;      // one line for `qtk --help`
  std::string_view description;  // a paragraph for `qtk <cmd> --help`
  std::span<const OptionSpec> options;
  Outcome (*run)(const ParsedArgs& args);
};

// Parses `args` (everything after the command name) against the command's
// options table: "--opt value", "--opt=value", "--" ends options, "-h"/"--help"
// anywhere asks for help. Unknown options, missing values and a wrong number
// of positional arguments are usage errors naming the culprit.
Outcome parse_args(const CommandSpec& cmd, const std::vector<std::string>& args, ParsedArgs& out);
std::string command_help(const CommandSpec& cmd);

// Integer option in [lo, hi]; leaves `value` unchanged when the option is absent.
Outcome int_option(const ParsedArgs& args, std::string_view name, int64_t lo, int64_t hi, int64_t& value);
// Finite real option in [lo, hi]; leaves `value` unchanged when the option is absent.
Outcome real_option(const ParsedArgs& args, std::string_view name, double lo, double hi, double& value);

// True when a and b name the same file, whether or not b exists yet
// (symlinks, "./", hard links): outputs must never overwrite inputs.
bool same_file(const std::string& a, const std::string& b);
// A file's contents as a fingerprint (FNV-1a 64 and size), for checkpoints
// to tell whether a model or data file changed at the same path; a spec
// that names no file (fashion-mnist:train) stands for itself.
std::string content_key(const std::string& spec);
// Labelled data for training commands: a known data set (fashion-mnist:train)
// or FILE.npz; a usage error naming `option` and the known sets otherwise.
Outcome check_labelled_data_spec(const std::string& option, const std::string& spec);

// Formatting shared by the commands.
std::string format_shape(const Shape& shape);
// The first `count` values of a tensor, e.g. "0.125, -3, 7.5, ...".
std::string format_values(const Tensor& t, int64_t count);
std::string format_bytes(uint64_t bytes);
std::string format_count(uint64_t n);  // 235146 -> "235,146"
// Writes to stdout; fails on a write error (e.g. a closed pipe or a full disk).
Outcome print_out(const std::string& text);
// "qtk: warning: ..." on stderr, one line.
void print_warning(const std::string& text);

// A progress bar on stderr ("<label> [#####     ] done/total <unit>"),
// redrawn at most every 100 ms and erased when done == total. Empty (no
// output at all) when stderr is not a terminal, so logs and pipes stay clean.
std::function<void(int64_t done, int64_t total)> terminal_progress(std::string label, std::string unit);

extern const CommandSpec kInspectCommand;
extern const CommandSpec kRunCommand;
extern const CommandSpec kEvalCommand;
extern const CommandSpec kQuantizeCommand;
extern const CommandSpec kBenchCommand;
extern const CommandSpec kAnalyzeCommand;

}  // namespace qtk::cli

// Inside a command: unwrap an Expected or return its error as a failure.
#define QTK_CLI_ASSIGN_OR_FAIL_IMPL(tmp, lhs, expr)  \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return ::qtk::cli::Outcome::failure(tmp.status()); \
  lhs = std::move(tmp).value()
#define QTK_CLI_ASSIGN_OR_FAIL(lhs, expr) QTK_CLI_ASSIGN_OR_FAIL_IMPL(QTK_CONCAT(qtk_cli_tmp_, __LINE__), lhs, expr)
#define QTK_CLI_RETURN_IF_FAILED(expr)             \
  do {                                             \
    ::qtk::cli::Outcome qtk_cli_outcome_ = (expr); \
    if (!qtk_cli_outcome_.is_ok()) return qtk_cli_outcome_; \
  } while (0)
