#include "core/cpu_features.h"

#include <sched.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <utility>

namespace qtk {

namespace {
// QTK_ISA=avx2 makes this process see an AVX2-only CPU (no AVX-512 of any
// kind), QTK_ISA=scalar one without AVX2: how the target machines and
// old CPUs are measured and tested on a newer one. Unset or "native": the CPU.
int isa_cap() {
  static const int cap = [] {
    const char* env = std::getenv("QTK_ISA");
    const std::string v = env ? env : "";
    if (v == "avx2") return 1;
    if (v == "scalar") return 0;
    if (!v.empty() && v != "native")
      std::fprintf(stderr, "qtk: warning: ignoring QTK_ISA=%s (use avx2, scalar or native)\n", v.c_str());
    return 2;
  }();
  return cap;
}
}  // namespace

#if defined(__x86_64__) || defined(__i386__)
// __builtin_cpu_supports also checks that the OS saves the wider register state.
bool cpu_has_avx2() {
  static const bool ok = isa_cap() >= 1 && __builtin_cpu_supports("avx2");
  return ok;
}
bool cpu_has_avx2_fma() {
  static const bool ok = cpu_has_avx2() && __builtin_cpu_supports("fma");
  return ok;
}
bool cpu_has_avx512f() {
  static const bool ok = isa_cap() >= 2 && cpu_has_avx2_fma() && __builtin_cpu_supports("avx512f");
  return ok;
}
bool cpu_has_avx512bw() {
  static const bool ok = isa_cap() >= 2 && cpu_has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl");
  return ok;
}
bool cpu_has_avx512_vnni() {
  static const bool ok = isa_cap() >= 2 && cpu_has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
  return ok;
}
bool cpu_has_avx512_vbmi() {
  static const bool ok = isa_cap() >= 2 && cpu_has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vbmi");
  return ok;
}
#else
bool cpu_has_avx2() { return false; }
bool cpu_has_avx2_fma() { return false; }
bool cpu_has_avx512f() { return false; }
bool cpu_has_avx512bw() { return false; }
bool cpu_has_avx512_vnni() { return false; }
bool cpu_has_avx512_vbmi() { return false; }
#endif

const char* cpu_instruction_set() {
  if (cpu_has_avx512_vnni()) return "avx512_vnni";
  if (cpu_has_avx512f()) return "avx512";
  if (cpu_has_avx2_fma()) return "avx2";
  return "scalar";
}

bool env_flag_set(const char* name) {
  const char* env = std::getenv(name);
  return env != nullptr && env[0] != '\0' && env[0] != '0';
}

int physical_core_count() {
  static const int n = [] {
    // Distinct (package, core) pairs among the CPUs in our affinity mask;
    // sysfs may be missing (containers), then fall back to logical CPUs.
    std::set<std::pair<std::string, std::string>> cores;
    cpu_set_t mask;
    const bool have_mask = sched_getaffinity(0, sizeof(mask), &mask) == 0;
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
      if (have_mask && !CPU_ISSET(cpu, &mask)) continue;
      const std::string dir = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
      std::ifstream pkg(dir + "physical_package_id"), core(dir + "core_id");
      std::string p, c;
      if (pkg >> p && core >> c) cores.emplace(p, c);
    }
    int logical = have_mask ? CPU_COUNT(&mask) : static_cast<int>(std::thread::hardware_concurrency());
    int found = cores.empty() ? logical : static_cast<int>(cores.size());
    return found > 0 ? found : 1;
  }();
  return n;
}

}  // namespace qtk
