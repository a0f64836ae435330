// Command-line parsing and --help text, both driven by a command's options table.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <vector>

#include "cli.h"
#include "data/dataset.h"
#include "train/labelled_data.h"

namespace qtk::cli {
namespace {

const OptionSpec* find_option(const CommandSpec& cmd, std::string_view name) {
  for (const auto& o : cmd.options)
    if (o.name == name || (!o.alias.empty() && o.alias == name)) return &o;
  return nullptr;
}

std::string usage_line(const CommandSpec& cmd) {
  std::string u = "qtk " + std::string(cmd.name);
  if (!cmd.positionals.empty()) u += " " + std::string(cmd.positionals);
  // Options whose help says "(required)" are shown in the usage line.
  for (const auto& o : cmd.options)
    if (o.help.find("(required)") != std::string_view::npos)
      u += " " + std::string(o.alias.empty() ? o.name : o.alias) + " " + std::string(o.placeholder);
  return u + " [options]";
}

std::string see_help(const CommandSpec& cmd) { return " (see 'qtk " + std::string(cmd.name) + " --help')"; }

}  // namespace

const std::string* ParsedArgs::get(std::string_view name) const {
  auto it = values.find(name);
  return it == values.end() || it->second.empty() ? nullptr : &it->second.back();
}

std::vector<std::string> ParsedArgs::all(std::string_view name) const {
  auto it = values.find(name);
  return it == values.end() ? std::vector<std::string>{} : it->second;
}

Outcome parse_args(const CommandSpec& cmd, const std::vector<std::string>& args, ParsedArgs& out) {
  out = ParsedArgs{};
  // --help wins over everything else on the line, so it always works.
  for (const auto& a : args) {
    if (a == "--") break;
    if (a == "--help" || a == "-h") {
      out.help = true;
      return Outcome::ok();
    }
  }
  bool options_ended = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (options_ended || a == "-" || a.empty() || a[0] != '-') {
      out.positionals.push_back(a);
      continue;
    }
    if (a == "--") {
      options_ended = true;
      continue;
    }
    const size_t eq = a.find('=');
    const std::string name = a.substr(0, eq);
    const OptionSpec* spec = find_option(cmd, name);
    if (!spec) return Outcome::usage("unknown option '" + name + "' for 'qtk " + std::string(cmd.name) + "'" + see_help(cmd));
    std::string value;
    if (spec->placeholder.empty()) {
      if (eq != std::string::npos) return Outcome::usage("option " + name + " takes no value");
    } else if (eq != std::string::npos) {
      value = a.substr(eq + 1);
    } else if (i + 1 < args.size() && args[i + 1].rfind("--", 0) != 0) {
      value = args[++i];
    } else {
      return Outcome::usage("option " + name + " needs a value (" + std::string(spec->placeholder) + ")");
    }
    auto& slot = out.values[std::string(spec->name)];  // an alias files under the long name
    if (!slot.empty() && !spec->repeatable) return Outcome::usage("option " + name + " is given more than once");
    slot.push_back(std::move(value));
  }
  const int n = static_cast<int>(out.positionals.size());
  if (n < cmd.num_positionals)
    return Outcome::usage("missing " + std::string(cmd.positionals) + " (usage: " + usage_line(cmd) + ")");
  if (n > cmd.num_positionals)
    return Outcome::usage("unexpected argument '" + out.positionals[cmd.num_positionals] + "'" + see_help(cmd));
  return Outcome::ok();
}

std::string command_help(const CommandSpec& cmd) {
  std::string h = "usage: " + usage_line(cmd) + "\n\n" + std::string(cmd.description) + "\n\noptions:\n";
  static constexpr OptionSpec kHelp{"--help", "", "show this help and exit"};
  std::vector<const OptionSpec*> all;
  for (const auto& o : cmd.options) all.push_back(&o);
  all.push_back(&kHelp);
  size_t width = 0;
  auto names = [](const OptionSpec* o) {
    return (o->alias.empty() ? std::string() : std::string(o->alias) + ", ") + std::string(o->name);
  };
  for (const auto* o : all) width = std::max(width, names(o).size() + 1 + o->placeholder.size());
  for (const auto* o : all) {
    std::string left = names(o) + (o->placeholder.empty() ? "" : " " + std::string(o->placeholder));
    left.resize(width, ' ');
    h += "  " + left + "  " + std::string(o->help) + (o->repeatable ? " (repeatable)" : "") + "\n";
  }
  return h;
}

Outcome int_option(const ParsedArgs& args, std::string_view name, int64_t lo, int64_t hi, int64_t& value) {
  const std::string* text = args.get(name);
  if (!text) return Outcome::ok();
  int64_t v = 0;
  auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), v);
  if (ec != std::errc() || end != text->data() + text->size())
    return Outcome::usage("option " + std::string(name) + " needs an integer, got '" + *text + "'");
  if (v < lo || v > hi)
    return Outcome::usage("option " + std::string(name) + " must be in " + std::to_string(lo) + ".." +
                          std::to_string(hi) + ", got " + *text);
  value = v;
  return Outcome::ok();
}

Outcome real_option(const ParsedArgs& args, std::string_view name, double lo, double hi, double& value) {
  const std::string* text = args.get(name);
  if (!text) return Outcome::ok();
  double v = 0;
  auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), v);
  if (ec != std::errc() || end != text->data() + text->size() || !std::isfinite(v) || v < lo || v > hi) {
    char range[96];
    std::snprintf(range, sizeof range, "[%g, %g]", lo, hi);
    return Outcome::usage("option " + std::string(name) + " needs a number in " + range + ", got '" + *text + "'");
  }
  value = v;
  return Outcome::ok();
}

std::string content_key(const std::string& spec) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(spec, ec)) return spec;
  std::ifstream f(spec, std::ios::binary);
  uint64_t h = 1469598103934665603ull, n = 0;
  std::vector<char> buf(1 << 16);
  while (f) {
    f.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const auto got = static_cast<size_t>(f.gcount());
    for (size_t i = 0; i < got; ++i) h = (h ^ static_cast<unsigned char>(buf[i])) * 1099511628211ull;
    n += got;
  }
  char out[48];
  std::snprintf(out, sizeof out, "%016llx:%llu", static_cast<unsigned long long>(h), static_cast<unsigned long long>(n));
  return out;
}

bool same_file(const std::string& a, const std::string& b) {
  std::error_code ec;
  if (std::filesystem::exists(a, ec) && std::filesystem::exists(b, ec) && std::filesystem::equivalent(a, b, ec))
    return true;
  std::error_code ea, eb;
  const auto ca = std::filesystem::weakly_canonical(a, ea), cb = std::filesystem::weakly_canonical(b, eb);
  return !ea && !eb && ca == cb;
}

Outcome check_labelled_data_spec(const std::string& option, const std::string& spec) {
  const auto specs = data::known_dataset_specs();
  if (train::is_npz_spec(spec) || std::find(specs.begin(), specs.end(), spec) != specs.end()) return Outcome::ok();
  std::string known;
  for (const auto& s : specs) known += (known.empty() ? "" : ", ") + s;
  return Outcome::usage("unknown data set '" + spec + "' for " + option + " (known: " + known + ", FILE.npz)");
}

}  // namespace qtk::cli
