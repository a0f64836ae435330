// irun MODEL IN.npz OUT.npz [integer 0|1] [threads]: run a model in qtk (optionally the
// integer session) on an .npz of inputs, write outputs to an .npz.
#include <cstdio>
#include <map>
#include "data/npy.h"
#include "qtk/model.h"
#include "qtk/session.h"
using namespace qtk;
int main(int argc, char** argv) {
  if (argc < 4) { std::fprintf(stderr, "usage\n"); return 2; }
  auto m = load_model(argv[1]);
  if (!m.ok()) { std::fprintf(stderr, "load: %s\n", m.status().message().c_str()); return 1; }
  auto in = data::read_npz(argv[2]);
  if (!in.ok()) { std::fprintf(stderr, "npz: %s\n", in.status().message().c_str()); return 1; }
  std::map<std::string, Tensor> feeds;
  for (auto& [n, t] : *in) feeds.emplace(n, t);
  SessionOptions o;
  o.integer = argc > 4 && argv[4][0] == '1';
  o.threads = argc > 5 ? std::atoi(argv[5]) : 1;
  auto s = Session::create(*m, o);
  if (!s.ok()) { std::fprintf(stderr, "session: %s\n", s.status().message().c_str()); return 1; }
  auto out = (*s)->run(feeds);
  if (!out.ok()) { std::fprintf(stderr, "run: %s\n", out.status().message().c_str()); return 1; }
  data::NamedTensors arrays;
  for (size_t i = 0; i < out->size(); ++i) arrays.emplace_back((*s)->outputs()[i].name, (*out)[i]);
  auto st = data::write_npz(arrays, argv[3]);
  if (!st.ok()) { std::fprintf(stderr, "write: %s\n", st.message().c_str()); return 1; }
  return 0;
}
