// The runner's command line.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace dcx {

struct Options {
  std::string model;
  std::optional<std::string> reference;
  std::string method = "forward";
  std::optional<int> train_steps;
  std::optional<int> iterations;  // inference only; default kDefaultIterations
  std::optional<int> warmup;      // inference only; default kDefaultWarmup
  std::optional<std::string> outputs;
  std::vector<std::string> kernel_libs;
  std::optional<std::string> etdump;
  std::optional<double> lr;
  int threads = 1;
  bool verbose = false;
};

constexpr const char* kRunnerVersion = "0.2.0";  // bump when the CLI, the JSON result or the outputs file changes
constexpr int kDefaultIterations = 20;
constexpr int kDefaultWarmup = 3;

extern const char* const kUsage;

// Returns nullopt when --help or --version was printed; throws Failure(kExitUsage) on bad flags.
std::optional<Options> parse_options(int argc, char** argv);

}  // namespace dcx
