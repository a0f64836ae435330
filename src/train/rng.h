// A small seeded generator (splitmix64) whose streams are the same on every
// platform and standard library: shuffles, augmentation and initialisation
// are reproducible from --seed.
#pragma once

#include <cmath>
#include <cstdint>

namespace qtk::train {

class Rng {
 public:
  // The seed is the whole state: Rng(r.state()) continues r's stream.
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t state() const { return s_; }
  uint64_t next() {
    uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n) (n > 0; the modulo bias is below 2^-40 for our n).
  uint64_t below(uint64_t n) { return next() % n; }
  // Uniform in [0, 1).
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  // Standard normal (Box-Muller).
  double normal() {
    const double u1 = 1.0 - uniform(), u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }

 private:
  uint64_t s_;
};

}  // namespace qtk::train
