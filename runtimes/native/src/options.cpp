#include "options.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "failure.h"

namespace dcx {

const char* const kUsage =
    "usage: dcx_runner --model M.pte [--reference R.safetensors] [--method forward]\n"
    "                  [--iterations N] [--warmup N] [--train-steps N] [--lr X]\n"
    "                  [--outputs OUT.safetensors] [--kernel-lib LIB.so]... [--etdump OUT.etdp]\n"
    "                  [--threads N] [--verbose] [--version] [--help]\n"
    "\n"
    "Runs one method of an ExecuTorch program and prints one JSON object on stdout.\n"
    "Inference: inputs are the reference's input/<name> tensors (generated when no reference is\n"
    "given), then one first run, --warmup runs and --iterations timed runs (default 3 and 20).\n"
    "Training programs (a joint forward+backward graph): --train-steps steps on the reference's\n"
    "batch/<step>/<name> tensors, each followed by the reference's optimizer (SGD with momentum,\n"
    "Nesterov and weight decay, Adam or AdamW; plain SGD at its lr when it names none) on the\n"
    "program's parameters; --lr overrides the learning rate (plain SGD without a reference).\n"
    "--outputs writes output/<name> (inference), or param/final/<name>, optim/final/<name>/<slot>,\n"
    "state/final/<buffer> and loss (training).\n"
    "--kernel-lib loads a library of custom kernels before the program (repeatable).\n"
    "--threads: 1 (default) runs single-threaded, N > 1 sizes ExecuTorch's thread pool, 0 keeps\n"
    "its default. --verbose echoes ExecuTorch's log on stderr.\n"
    "Exit codes: 0 ok, 2 bad usage, 3 a file cannot be loaded, 4 the run failed.\n";

namespace {

[[noreturn]] void usage_error(const std::string& message) {
  fail(kExitUsage, message + " (see dcx_runner --help)");
}

int parse_count(const std::string& flag, const char* text, int minimum) {
  errno = 0;
  char* end = nullptr;
  long v = std::strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v < minimum || v > 1000000000)
    usage_error(flag + ": expected an integer >= " + std::to_string(minimum) + ", got '" + text + "'");
  return static_cast<int>(v);
}

double parse_positive(const std::string& flag, const char* text) {
  errno = 0;
  char* end = nullptr;
  double v = std::strtod(text, &end);
  if (errno != 0 || end == text || *end != '\0' || !(v > 0.0) || v > 1e30)
    usage_error(flag + ": expected a positive number, got '" + text + "'");
  return v;
}

}  // namespace

std::optional<Options> parse_options(int argc, char** argv) {
  Options o;
  bool have_model = false;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::fputs(kUsage, stdout);
      return std::nullopt;
    }
    if (flag == "--version") {
      std::printf("dcx_runner %s\n", kRunnerVersion);
      return std::nullopt;
    }
    if (flag == "--verbose") {
      o.verbose = true;
      continue;
    }
    if (flag.rfind("--", 0) != 0) usage_error("unexpected argument '" + flag + "'");
    if (i + 1 >= argc) usage_error(flag + ": missing value");
    const char* value = argv[++i];
    if (flag == "--model") {
      o.model = value;
      have_model = true;
    } else if (flag == "--reference") {
      o.reference = value;
    } else if (flag == "--method") {
      o.method = value;
    } else if (flag == "--train-steps") {
      o.train_steps = parse_count(flag, value, 1);
    } else if (flag == "--iterations") {
      o.iterations = parse_count(flag, value, 1);
    } else if (flag == "--warmup") {
      o.warmup = parse_count(flag, value, 0);
    } else if (flag == "--outputs") {
      o.outputs = value;
    } else if (flag == "--kernel-lib") {
      o.kernel_libs.emplace_back(value);
    } else if (flag == "--etdump") {
      o.etdump = value;
    } else if (flag == "--lr") {
      o.lr = parse_positive(flag, value);
    } else if (flag == "--threads") {
      o.threads = parse_count(flag, value, 0);
    } else {
      usage_error("unknown flag " + flag);
    }
  }
  if (!have_model) usage_error("--model is required");
  return o;
}

}  // namespace dcx
