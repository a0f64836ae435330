// qtk: a thin command-line front end over the qtk library. Each command lives
// in its own cmd_*.cpp with its options table; this file only dispatches and
// turns outcomes into exit codes (0 ok, 1 failure, 2 usage error).
#include <csignal>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "cli.h"

namespace qtk::cli {
extern const CommandSpec kTrainCommand;  // tools/qtk/cmd_train.cpp
extern const CommandSpec kPruneCommand;  // tools/qtk/cmd_prune.cpp
extern const CommandSpec kDistillCommand;  // tools/qtk/cmd_train.cpp
extern const CommandSpec kQatCommand;  // tools/qtk/cmd_qat.cpp
namespace {

const CommandSpec* const kCommands[] = {&kInspectCommand, &kRunCommand, &kEvalCommand, &kQuantizeCommand,
                                         &kBenchCommand, &kTrainCommand, &kDistillCommand, &kAnalyzeCommand,
                                         &kPruneCommand, &kQatCommand};

const CommandSpec* find_command(std::string_view name) {
  for (const auto* c : kCommands)
    if (c->name == name) return c;
  return nullptr;
}

std::string top_level_help() {
  std::string h = std::string("qtk ") + kVersion + ": run and quantize ONNX models\n\n" +
                  "usage: qtk <command> [options]\n       qtk help [command]\n       qtk --version\n\ncommands:\n";
  for (const auto* c : kCommands) {
    std::string name(c->name);
    name.resize(10, ' ');
    h += "  " + name + std::string(c->summary) + "\n";
  }
  return h + "\nRun 'qtk <command> --help' for a command's options.\n";
}

Outcome unknown_command(const std::string& name) {
  std::string names;
  for (const auto* c : kCommands) names += (names.empty() ? "" : ", ") + std::string(c->name);
  return Outcome::usage("unknown command '" + name + "' (commands: " + names + "; see 'qtk --help')");
}

Outcome dispatch(const std::vector<std::string>& argv) {
  if (argv.empty()) return Outcome::usage("no command given (see 'qtk --help')");
  const std::string& first = argv[0];
  if (first == "--help" || first == "-h") return print_out(top_level_help());
  if (first == "--version") return print_out(std::string("qtk ") + kVersion + "\n");
  if (first == "help") {
    if (argv.size() == 1) return print_out(top_level_help());
    if (argv.size() > 2) return Outcome::usage("'qtk help' takes at most one command name");
    const CommandSpec* c = find_command(argv[1]);
    return c ? print_out(command_help(*c)) : unknown_command(argv[1]);
  }
  if (!first.empty() && first[0] == '-') return Outcome::usage("unknown option '" + first + "' (see 'qtk --help')");
  const CommandSpec* cmd = find_command(first);
  if (!cmd) return unknown_command(first);
  ParsedArgs args;
  QTK_CLI_RETURN_IF_FAILED(parse_args(*cmd, std::vector<std::string>(argv.begin() + 1, argv.end()), args));
  if (args.help) return print_out(command_help(*cmd));
  return cmd->run(args);
}

// The error contract is one line on stderr, whatever the library said.
std::string one_line(std::string m) {
  for (char& c : m)
    if (c == '\n' || c == '\r') c = ' ';
  while (!m.empty() && m.back() == ' ') m.pop_back();
  return m.empty() ? "unknown error" : m;
}

}  // namespace
}  // namespace qtk::cli

int main(int argc, char** argv) {
  using qtk::cli::Outcome;
  // A closed stdout pipe should be a write error we report, not a silent death by signal.
  std::signal(SIGPIPE, SIG_IGN);
  Outcome outcome;
  try {
    outcome = qtk::cli::dispatch(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const std::bad_alloc&) {
    outcome = Outcome::failure("out of memory");
  } catch (const std::exception& e) {
    outcome = Outcome::failure(std::string("internal error: ") + e.what());
  }
  if (!outcome.is_ok()) std::fprintf(stderr, "qtk: error: %s\n", qtk::cli::one_line(outcome.message).c_str());
  return outcome.exit_code();
}
