#include "runner.h"

#include <dlfcn.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <set>
#include <vector>

#include <executorch/devtools/etdump/etdump_flatcc.h>
#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>
#include <executorch/extension/threadpool/threadpool_guard.h>

#include "atomic_file.h"
#include "failure.h"
#include "json.h"
#include "measure.h"
#include "runtime_log.h"
#include "safetensors.h"
#include "threadpool_abi.h"
#include "training/optim/optim.h"

namespace dcx {

namespace {

using executorch::aten::ScalarType;
using executorch::aten::Tensor;
using executorch::extension::Module;
using executorch::extension::TensorPtr;
using executorch::runtime::Error;
using executorch::runtime::EValue;
using executorch::runtime::MethodMeta;
namespace st = safetensors;

constexpr char kTrainingFqn[] = "__et_training_fqn_";
constexpr char kTrainingGradientsIndex[] = "__et_training_gradients_index_";
constexpr char kTrainingParametersIndex[] = "__et_training_parameters_index_";

struct DTypePair {
  st::DType file;
  ScalarType program;
};

constexpr DTypePair kDTypes[] = {
    {st::DType::F64, ScalarType::Double}, {st::DType::F32, ScalarType::Float}, {st::DType::I64, ScalarType::Long},
    {st::DType::I32, ScalarType::Int},    {st::DType::I16, ScalarType::Short}, {st::DType::I8, ScalarType::Char},
    {st::DType::U8, ScalarType::Byte},    {st::DType::BOOL, ScalarType::Bool},
};

std::optional<st::DType> file_dtype(ScalarType t) {
  for (const auto& p : kDTypes)
    if (p.program == t) return p.file;
  return std::nullopt;
}

ScalarType program_dtype(st::DType d) {
  for (const auto& p : kDTypes)
    if (p.file == d) return p.program;
  return ScalarType::Float;  // unreachable: every file dtype has a program dtype
}

std::string dtype_text(ScalarType t) {
  auto d = file_dtype(t);
  return d ? st::dtype_name(*d) : "scalar type " + std::to_string(static_cast<int>(t));
}

std::string error_text(Error e) {
  char code[16];
  std::snprintf(code, sizeof(code), "0x%x", static_cast<unsigned>(e));
  return std::string(executorch::runtime::to_string(e)) + " (" + code + ")";
}

std::string with_log(std::string message) {
  std::string last = runtime_log::last_error();
  return last.empty() ? message : message + "; ExecuTorch: " + last;
}

bool readable_file(const std::string& path) {
  struct stat s {};
  return ::stat(path.c_str(), &s) == 0 && S_ISREG(s.st_mode);
}

// ---------------------------------------------------------------- the reference

// The optimizer of a training reference (metadata optimizer.*, written from dcx.optim.Spec): torch.optim's
// SGD (momentum, Nesterov, weight decay), Adam or AdamW.
struct OptimizerSpec {
  std::string type = "sgd";  // "sgd", "adam" or "adamw"
  double lr = 0, momentum = 0, weight_decay = 0, beta1 = 0, beta2 = 0, eps = 0;
  bool nesterov = false;

  bool adam() const { return type != "sgd"; }
  // the state it keeps per parameter, named as torch.optim names it
  std::vector<std::string> slots() const {
    if (adam()) return {"exp_avg", "exp_avg_sq"};
    return momentum != 0 ? std::vector<std::string>{"momentum_buffer"} : std::vector<std::string>{};
  }
};

struct Reference {
  std::optional<st::File> file;
  std::optional<std::string> program, kind;
  std::vector<std::string> inputs, outputs;
  std::vector<std::string> state;  // the program's state buffers, returned right after the loss
  std::optional<double> lr;
  std::optional<OptimizerSpec> optimizer;  // absent in references older than optimizer.type: plain SGD at lr
  std::optional<int> steps;

  const std::string& path() const { return file->path(); }

  static Reference read(const std::optional<std::string>& path) {
    Reference r;
    if (!path) return r;
    if (!readable_file(*path)) fail(kExitLoad, "--reference " + *path + ": no such file");
    try {
      r.file = st::File::read(*path);
    } catch (const st::Error& e) {
      fail(kExitLoad, std::string("--reference ") + e.what());
    }
    auto text = [&](const char* key) -> std::optional<std::string> {
      const std::string* v = r.file->metadata(key);
      return v ? std::optional<std::string>(*v) : std::nullopt;
    };
    auto bad = [&](const char* key, const std::string& why) {
      fail(kExitLoad, "--reference " + *path + ": metadata '" + key + "' " + why);
    };
    r.program = text("program");
    r.kind = text("kind");
    for (auto [key, list] : {std::pair{"inputs", &r.inputs}, std::pair{"outputs", &r.outputs},
                             std::pair{"state", &r.state}}) {
      if (auto v = text(key)) {
        try {
          *list = json::parse_string_list(*v);
        } catch (const json::ParseError& e) {
          bad(key, std::string("is not a JSON list of names: ") + e.what());
        }
      }
    }
    if (r.inputs.empty()) bad("inputs", "is missing or empty: re-export the artifact");
    // a finite number that `valid` takes (`wanted` says which), or `fallback` when the key is absent
    auto number = [&](const char* key, const char* wanted, bool (*valid)(double),
                      std::optional<double> fallback = std::nullopt) -> double {
      const std::optional<std::string> v = text(key);
      if (!v && fallback) return *fallback;
      if (!v) bad(key, "is missing");
      char* end = nullptr;
      const double x = std::strtod(v->c_str(), &end);
      if (end == v->c_str() || *end != '\0' || !std::isfinite(x) || !valid(x))
        bad(key, std::string("is not ") + wanted + ": '" + *v + "'");
      return x;
    };
    constexpr auto positive = [](double x) { return x > 0; };
    constexpr auto non_negative = [](double x) { return x >= 0; };
    constexpr auto below_one = [](double x) { return x >= 0 && x < 1; };
    if (text("lr")) r.lr = number("lr", "a positive number", positive);
    if (auto type = text("optimizer.type")) {
      OptimizerSpec o;
      o.type = *type;
      if (o.type != "sgd" && o.type != "adam" && o.type != "adamw")
        bad("optimizer.type", "is not sgd, adam or adamw: '" + *type + "'");
      o.lr = number("optimizer.lr", "a positive number", positive);
      o.weight_decay = number("optimizer.weight_decay", "a number >= 0", non_negative, 0.0);
      if (o.adam()) {
        o.beta1 = number("optimizer.beta1", "a number in [0, 1)", below_one);
        o.beta2 = number("optimizer.beta2", "a number in [0, 1)", below_one);
        o.eps = number("optimizer.eps", "a positive number", positive);
      } else {
        o.momentum = number("optimizer.momentum", "a number in [0, 1)", below_one, 0.0);
        const std::string nesterov = text("optimizer.nesterov").value_or("false");
        if (nesterov != "true" && nesterov != "false")
          bad("optimizer.nesterov", "is not true or false: '" + nesterov + "'");
        o.nesterov = nesterov == "true";
        if (o.nesterov && o.momentum == 0) bad("optimizer.nesterov", "is true with optimizer.momentum 0");
      }
      r.optimizer = o;
    }
    if (auto v = text("steps")) {
      char* end = nullptr;
      long steps = std::strtol(v->c_str(), &end, 10);
      if (end == v->c_str() || *end != '\0' || steps < 1 || steps > 1000000)
        bad("steps", "is not a positive integer: '" + *v + "'");
      r.steps = static_cast<int>(steps);
    }
    return r;
  }
};

// ---------------------------------------------------------------- inputs

// One set of method inputs: views of reference tensors, or generated data the set owns.
class InputSet {
 public:
  std::vector<EValue> values() const {
    std::vector<EValue> v;
    for (const TensorPtr& t : tensors_) v.emplace_back(*t);
    return v;
  }

  void add_view(const st::TensorView& view) {
    std::vector<executorch::aten::SizesType> sizes(view.shape.begin(), view.shape.end());
    tensors_.push_back(executorch::extension::from_blob(const_cast<uint8_t*>(view.data), std::move(sizes),
                                                        program_dtype(view.dtype)));
  }

  // Deterministic stand-in data: floats in [-1, 1), zeros for integers (valid indices and labels).
  void add_generated(const executorch::runtime::TensorInfo& info) {
    std::vector<executorch::aten::SizesType> sizes(info.sizes().begin(), info.sizes().end());
    storage_.emplace_back(info.nbytes(), 0);
    std::vector<uint8_t>& bytes = storage_.back();
    if (info.scalar_type() == ScalarType::Float) {
      auto* f = reinterpret_cast<float*>(bytes.data());
      uint32_t state = 12345u;
      for (size_t i = 0; i < bytes.size() / sizeof(float); ++i) {
        state = state * 1664525u + 1013904223u;
        f[i] = static_cast<float>(state >> 8) / static_cast<float>(1u << 23) - 1.0f;
      }
    }
    tensors_.push_back(executorch::extension::from_blob(bytes.data(), std::move(sizes), info.scalar_type()));
  }

 private:
  std::vector<TensorPtr> tensors_;
  std::vector<std::vector<uint8_t>> storage_;
};

// ---------------------------------------------------------------- the program

class Program {
 public:
  Program(const Options& o, std::unique_ptr<executorch::runtime::EventTracer> tracer)
      : options_(o), module_(o.model, Module::LoadMode::Mmap, std::move(tracer)) {}

  // Loads the program and the method; returns the time it took. Every failure names the model file.
  double load() {
    const std::string& model = options_.model;
    if (!readable_file(model)) fail(kExitLoad, "--model " + model + ": no such file");
    Stopwatch watch;
    Error e = module_.load();
    if (e != Error::Ok)
      fail(kExitLoad, with_log("--model " + model + ": not a loadable ExecuTorch program: " + error_text(e)));
    auto names = module_.method_names();
    if (!names.ok()) fail(kExitLoad, "--model " + model + ": cannot list its methods: " + error_text(names.error()));
    names_ = *names;
    if (!names_.count(options_.method)) {
      std::string have;
      for (const auto& n : std::set<std::string>(names_.begin(), names_.end()))
        if (n.rfind("__", 0) != 0) have += (have.empty() ? "" : ", ") + n;
      fail(kExitUsage, "--method " + options_.method + ": " + model + " has no such method (it has: " + have + ")");
    }
    e = module_.load_method(options_.method);
    if (e == Error::OperatorMissing) {
      std::string ops;
      for (const std::string& op : runtime_log::missing_operators()) ops += (ops.empty() ? "" : ", ") + op;
      fail(kExitLoad, "--model " + model + ": needs operator " + (ops.empty() ? "(unnamed)" : ops) +
                          ", which no loaded kernel library registers: pass --kernel-lib with the library "
                          "that implements it");
    }
    if (e != Error::Ok)
      fail(kExitLoad, with_log("--model " + model + ": cannot load method " + options_.method + ": " + error_text(e)));
    double ms = watch.ms();
    auto meta = module_.method_meta(options_.method);
    if (!meta.ok()) fail(kExitLoad, "--model " + model + ": no metadata for method " + options_.method);
    meta_.emplace(*meta);
    return ms;
  }

  const MethodMeta& meta() const { return *meta_; }
  bool training() const { return names_.count(kTrainingFqn + options_.method) > 0; }

  size_t planned_memory_bytes() const {
    size_t total = 0;
    for (size_t i = 0; i < meta_->num_memory_planned_buffers(); ++i) {
      auto size = meta_->memory_planned_buffer_size(i);
      if (size.ok()) total += static_cast<size_t>(*size);
    }
    return total;
  }

  std::vector<std::string> backends() const {
    std::vector<std::string> out;
    for (size_t i = 0; i < meta_->num_backends(); ++i) {
      auto name = meta_->get_backend_name(i);
      if (name.ok() && std::find(out.begin(), out.end(), *name) == out.end()) out.emplace_back(*name);
    }
    return out;
  }

  // Sets the inputs and runs the method once; returns the outputs (views of the method's memory).
  std::vector<EValue> execute(const InputSet& inputs) {
    Error e = module_.set_inputs(options_.method, inputs.values());
    if (e != Error::Ok) fail(kExitRun, with_log("setting the inputs of " + options_.method + " failed: " + error_text(e)));
    auto out = module_.execute(options_.method);
    if (!out.ok())
      fail(kExitRun, with_log("--model " + options_.model + ": " + options_.method + " failed: " + error_text(out.error())));
    return std::move(*out);
  }

  // The training layout: the outputs are [loss, state (k), gradients (n), parameters (n)]; parameter names,
  // k, and where gradients and parameters start.
  struct TrainingLayout {
    std::vector<std::string> names;
    size_t state, gradients, parameters;
  };

  // The state buffers are what the outputs hold beyond the loss, gradients and parameters. The index methods
  // also count the graph's k buffer-mutation outputs, which the runtime does not return: less k each.
  TrainingLayout training_layout() {
    TrainingLayout layout;
    auto fqn = run_helper(kTrainingFqn);
    for (const EValue& v : fqn) {
      if (!v.isString()) fail(kExitLoad, "--model " + options_.model + ": " + kTrainingFqn + options_.method + " returned a non-string");
      layout.names.emplace_back(v.toString());
    }
    const size_t n = layout.names.size(), outputs = meta_->num_outputs();
    layout.state = outputs >= 1 + 2 * n ? outputs - 1 - 2 * n : 0;
    layout.gradients = helper_index(kTrainingGradientsIndex) - layout.state;
    layout.parameters = helper_index(kTrainingParametersIndex) - layout.state;
    if (layout.gradients != 1 + layout.state || layout.parameters != layout.gradients + n ||
        layout.parameters + n != outputs)
      fail(kExitLoad, "--model " + options_.model + ": training outputs do not follow loss, state, gradients, parameters");
    return layout;
  }

 private:
  std::vector<EValue> run_helper(const char* prefix) {
    const std::string name = prefix + options_.method;
    auto out = module_.execute(name);
    if (!out.ok()) fail(kExitLoad, with_log("--model " + options_.model + ": " + name + " failed: " + error_text(out.error())));
    return std::move(*out);
  }

  size_t helper_index(const char* prefix) {
    auto out = run_helper(prefix);
    if (out.size() != 1 || !out[0].isInt() || out[0].toInt() < 1)
      fail(kExitLoad, "--model " + options_.model + ": " + prefix + options_.method + " is not an output index");
    return static_cast<size_t>(out[0].toInt());
  }

  const Options& options_;
  Module module_;
  std::unordered_set<std::string> names_;
  std::optional<MethodMeta> meta_;
};

// Builds the method's inputs from the reference tensors `<prefix><name>`, or generates them.
InputSet make_inputs(const Program& program, const Reference& ref, const std::string& prefix) {
  const MethodMeta& meta = program.meta();
  InputSet set;
  if (ref.file && ref.inputs.size() != meta.num_inputs())
    fail(kExitLoad, "--reference " + ref.path() + ": lists " + std::to_string(ref.inputs.size()) +
                        " inputs, the method takes " + std::to_string(meta.num_inputs()));
  for (size_t i = 0; i < meta.num_inputs(); ++i) {
    auto info = meta.input_tensor_meta(i);
    if (!info.ok()) fail(kExitLoad, "input " + std::to_string(i) + " of the method is not a tensor: not supported");
    if (!ref.file) {
      set.add_generated(*info);
      continue;
    }
    const std::string name = prefix + ref.inputs[i];
    const st::TensorView* view = ref.file->find(name);
    if (!view) fail(kExitLoad, "--reference " + ref.path() + ": has no tensor " + name);
    std::vector<int64_t> want(info->sizes().begin(), info->sizes().end());
    if (program_dtype(view->dtype) != info->scalar_type() || view->shape != want)
      fail(kExitLoad, "--reference " + ref.path() + ": " + name + " is " + st::dtype_name(view->dtype) + " " +
                          st::shape_text(view->shape) + ", the method takes " + dtype_text(info->scalar_type()) +
                          " " + st::shape_text(want));
    set.add_view(*view);
  }
  return set;
}

void add_tensor(st::Writer& writer, const std::string& name, const Tensor& t) {
  auto dtype = file_dtype(t.scalar_type());
  if (!dtype) fail(kExitRun, name + " has " + dtype_text(t.scalar_type()) + ", which safetensors output does not support");
  writer.add(name, *dtype, std::vector<int64_t>(t.sizes().begin(), t.sizes().end()), t.const_data_ptr(), t.nbytes());
}

void load_kernel_libraries(const std::vector<std::string>& libs) {
  for (const std::string& lib : libs) {
    if (!readable_file(lib)) fail(kExitLoad, "--kernel-lib " + lib + ": no such file");
    if (!::dlopen(lib.c_str(), RTLD_NOW | RTLD_GLOBAL)) {
      const char* why = ::dlerror();
      fail(kExitLoad, "--kernel-lib " + lib + ": cannot load: " + (why ? why : "unknown error"));
    }
  }
}

// --threads: 1 runs everything on the calling thread, N > 1 sizes the pool, 0 keeps ExecuTorch's default.
std::unique_ptr<executorch::extension::threadpool::NoThreadPoolGuard> configure_threads(int threads) {
  namespace tp = executorch::extension::threadpool;
  if (threads == 1) return std::make_unique<tp::NoThreadPoolGuard>();
  if (threads > 1 && !tp::get_threadpool()->_unsafe_reset_threadpool(static_cast<uint32_t>(threads)))
    fail(kExitUsage, "--threads " + std::to_string(threads) + ": ExecuTorch could not size its thread pool");
  return nullptr;
}

void write_latency(json::Writer& w, const std::vector<double>& samples) {
  auto s = summarize(samples);
  if (!s) {
    w.null("latency_ms");
    return;
  }
  w.begin_object("latency_ms")
      .value("mean", s->mean)
      .value("trimmed_mean", s->trimmed_mean)
      .value("p50", s->p50)
      .value("p90", s->p90)
      .value("min", s->min)
      .value("max", s->max)
      .end_object();
}

void optional_text(json::Writer& w, const char* key, const std::optional<std::string>& v) {
  if (v) w.value(key, *v);
  else w.null(key);
}

// Inference: one first run, the warm-up runs, the timed runs; the outputs of the last run.
void infer(Program& program, const Options& o, const Reference& ref, json::Writer& w, st::Writer& outputs) {
  if (o.train_steps) fail(kExitUsage, "--train-steps: " + o.model + " is an inference program");
  if (o.lr) fail(kExitUsage, "--lr: " + o.model + " is an inference program");
  const int warmup = o.warmup.value_or(kDefaultWarmup);
  const int iterations = o.iterations.value_or(kDefaultIterations);
  const InputSet inputs = make_inputs(program, ref, "input/");
  if (ref.file && !ref.outputs.empty() && ref.outputs.size() != program.meta().num_outputs())
    fail(kExitLoad, "--reference " + ref.path() + ": lists " + std::to_string(ref.outputs.size()) +
                        " outputs, the method returns " + std::to_string(program.meta().num_outputs()));
  Stopwatch first;
  program.execute(inputs);
  w.value("first_ms", first.ms());
  for (int i = 0; i < warmup; ++i) program.execute(inputs);
  std::vector<double> samples;
  std::vector<EValue> out;
  for (int i = 0; i < iterations; ++i) {
    Stopwatch watch;
    out = program.execute(inputs);
    samples.push_back(watch.ms());
  }
  for (size_t i = 0; i < out.size(); ++i) {
    if (!out[i].isTensor()) fail(kExitRun, "output " + std::to_string(i) + " is not a tensor: not supported");
    std::string name = i < ref.outputs.size() ? ref.outputs[i] : std::to_string(i);
    add_tensor(outputs, "output/" + name, out[i].toTensor());
  }
  w.value("warmup", warmup).value("iterations", iterations);
  write_latency(w, samples);
}

// The optimizer stepping the program's own parameter tensors (its outputs) with dcx's fused update kernels
// (kernels/training/optim), which compute in float32 as torch.optim does. Its per-parameter state starts at
// zero, as torch.optim's does, and lives here from step to step.
class Optimizer {
 public:
  Optimizer(OptimizerSpec spec, const Program::TrainingLayout& layout) : spec_(std::move(spec)), layout_(layout) {}

  void step(const std::vector<EValue>& out) {
    ++steps_;
    for (size_t k = 0; k < layout_.names.size(); ++k) {
      Tensor param = out[layout_.parameters + k].toTensor();
      const Tensor grad = out[layout_.gradients + k].toTensor();
      if (param.scalar_type() != ScalarType::Float || grad.scalar_type() != ScalarType::Float ||
          param.numel() != grad.numel())
        fail(kExitRun, "parameter " + layout_.names[k] + " or its gradient is not float32 of one shape");
      if (slots_.size() == k) slots_.emplace_back(spec_.slots().size(), std::vector<float>(param.numel(), 0.0f));
      std::vector<std::vector<float>>& s = slots_[k];
      float* p = param.mutable_data_ptr<float>();
      const float* g = grad.const_data_ptr<float>();
      const int64_t n = param.numel();
      const float lr = static_cast<float>(spec_.lr);
      int rc;
      if (spec_.adam())
        rc = training_adam_update(p, g, s[0].data(), s[1].data(), n, spec_.lr, spec_.beta1, spec_.beta2, spec_.eps,
                                  spec_.weight_decay, spec_.type == "adamw", steps_);
      else if (spec_.momentum == 0 && spec_.weight_decay == 0)
        rc = training_sgd_update(p, g, n, lr);
      else
        rc = training_sgd_momentum_update(p, g, s.empty() ? nullptr : s[0].data(), n, lr,
                                          static_cast<float>(spec_.momentum), spec_.nesterov,
                                          static_cast<float>(spec_.weight_decay), steps_ == 1);
      if (rc != DCX_OK)
        fail(kExitRun, "the " + spec_.type + " update of " + layout_.names[k] + " failed: " + dcx_strerror(rc));
    }
  }

  // optim/final/<parameter>/<slot>, each of its parameter's shape (from the last outputs)
  void write(st::Writer& outputs, const std::vector<EValue>& out) const {
    const std::vector<std::string> names = spec_.slots();
    for (size_t k = 0; k < slots_.size(); ++k) {
      const Tensor param = out[layout_.parameters + k].toTensor();
      for (size_t j = 0; j < names.size(); ++j)
        outputs.add("optim/final/" + layout_.names[k] + "/" + names[j], st::DType::F32,
                    std::vector<int64_t>(param.sizes().begin(), param.sizes().end()), slots_[k][j].data(),
                    slots_[k][j].size() * sizeof(float));
    }
  }

 private:
  const OptimizerSpec spec_;
  const Program::TrainingLayout& layout_;
  std::vector<std::vector<std::vector<float>>> slots_;  // [parameter][slot][element]
  int64_t steps_ = 0;
};

// Training: every step runs forward+backward on the next batch and updates the parameters.
void train(Program& program, const Options& o, const Reference& ref, json::Writer& w, st::Writer& outputs) {
  if (o.warmup || o.iterations)
    fail(kExitUsage, std::string(o.warmup ? "--warmup" : "--iterations") + ": " + o.model +
                         " is a training program: every step trains, use --train-steps");
  if (ref.file && !ref.steps) fail(kExitLoad, "--reference " + ref.path() + ": metadata 'steps' is missing");
  OptimizerSpec spec = ref.optimizer.value_or(OptimizerSpec{});
  if (o.lr) spec.lr = *o.lr;
  else if (!ref.optimizer && ref.lr) spec.lr = *ref.lr;
  if (!(spec.lr > 0)) fail(kExitUsage, "--lr: required for a training program without a reference that gives lr");
  const int steps = o.train_steps.value_or(ref.steps.value_or(0));
  if (steps < 1) fail(kExitUsage, "--train-steps: required for a training program without a reference");
  const auto layout = program.training_layout();
  if (ref.file && layout.state != ref.state.size())
    fail(kExitLoad, "--reference " + ref.path() + ": lists " + std::to_string(ref.state.size()) +
                        " state buffers in its metadata 'state', the program returns " + std::to_string(layout.state));
  Optimizer optimizer(spec, layout);
  std::vector<InputSet> batches;
  for (int b = 0; b < ref.steps.value_or(1); ++b)
    batches.push_back(make_inputs(program, ref, "batch/" + std::to_string(b) + "/"));

  std::vector<double> losses, samples;
  double total_ms = 0;
  for (int step = 0; step < steps; ++step) {
    Stopwatch watch;
    std::vector<EValue> out = program.execute(batches[step % batches.size()]);
    const Tensor loss = out[0].toTensor();
    if (loss.scalar_type() != ScalarType::Float || loss.numel() != 1) fail(kExitRun, "the loss is not a float32 scalar");
    losses.push_back(loss.const_data_ptr<float>()[0]);
    optimizer.step(out);
    const double ms = watch.ms();
    total_ms += ms;
    if (step == 0) w.value("first_ms", ms);
    else samples.push_back(ms);
    if (step + 1 == steps) {
      for (size_t k = 0; k < layout.names.size(); ++k)
        add_tensor(outputs, "param/final/" + layout.names[k], out[layout.parameters + k].toTensor());
      optimizer.write(outputs, out);
      for (size_t i = 0; i < ref.state.size(); ++i) add_tensor(outputs, "state/final/" + ref.state[i], out[1 + i].toTensor());
    }
  }
  outputs.add("loss", st::DType::F64, {static_cast<int64_t>(losses.size())}, losses.data(),
              losses.size() * sizeof(double));
  w.value("warmup", 0).value("iterations", samples.size());
  write_latency(w, samples);
  w.value("train_steps", steps).value("lr", spec.lr).value("steps_per_s", steps / (total_ms / 1000.0));
  w.begin_array("losses");
  for (double l : losses) w.element(l);
  w.end_array().begin_array("parameters");
  for (const std::string& n : layout.names) w.element(n);
  w.end_array();
}

}  // namespace

std::string run(const Options& o) {
  const Reference ref = Reference::read(o.reference);
  const std::optional<long> baseline_kb = peak_rss_kb();  // before kernel libraries and the model
  auto guard = configure_threads(o.threads);
  load_kernel_libraries(o.kernel_libs);

  executorch::etdump::ETDumpGen* etdump = nullptr;
  std::unique_ptr<executorch::runtime::EventTracer> tracer;
  if (o.etdump) {
    auto gen = std::make_unique<executorch::etdump::ETDumpGen>();
    etdump = gen.get();
    tracer = std::move(gen);
  }
  Program program(o, std::move(tracer));
  const double load_ms = program.load();
  const bool training = program.training();
  if (ref.kind && *ref.kind != (training ? "train" : "infer"))
    fail(kExitLoad, "--reference " + ref.path() + ": is for a " + *ref.kind + " program, --model " + o.model +
                        " is a" + (training ? " training" : "n inference") + " program");

  json::Writer w;
  w.begin_object().value("runner", "dcx_runner").value("version", kRunnerVersion).value("model", o.model);
  optional_text(w, "program", ref.program);
  w.value("kind", training ? "train" : "infer")
      .value("method", o.method)
      .value("inputs", ref.file ? "reference" : "generated")
      .begin_array("backends");
  for (const std::string& b : program.backends()) w.element(b);
  w.end_array().value("threads", o.threads).begin_array("kernel_libs");
  for (const std::string& lib : o.kernel_libs) w.element(lib);
  w.end_array().value("load_ms", load_ms);

  st::Writer outputs;
  if (training) train(program, o, ref, w, outputs);
  else infer(program, o, ref, w, outputs);

  const std::optional<long> peak_kb = peak_rss_kb();
  if (peak_kb) w.value("peak_rss_kb", *peak_kb);
  else w.null("peak_rss_kb");
  if (peak_kb && baseline_kb) w.value("peak_rss_delta_kb", *peak_kb - *baseline_kb);
  else w.null("peak_rss_delta_kb");
  w.value("planned_memory_bytes", program.planned_memory_bytes());

  if (o.outputs) {
    outputs.set_metadata("dcx.runner.version", kRunnerVersion);
    outputs.set_metadata("kind", training ? "train" : "infer");
    outputs.set_metadata("method", o.method);
    if (ref.program) outputs.set_metadata("program", *ref.program);
    try {
      outputs.write(*o.outputs);
    } catch (const st::Error& e) {
      fail(kExitRun, std::string("--outputs ") + e.what());
    }
  }
  optional_text(w, "outputs", o.outputs);
  if (etdump) {
    // The buffer stays allocated: flatcc owns its deallocator, and the process ends right after.
    const executorch::etdump::ETDumpResult dump = etdump->get_etdump_data();
    if (!dump.buf) fail(kExitRun, "--etdump " + *o.etdump + ": ExecuTorch recorded no ETDump");
    std::string why = write_atomically(*o.etdump, {{static_cast<const char*>(dump.buf), dump.size}});
    if (!why.empty()) fail(kExitRun, "--etdump " + *o.etdump + ": cannot write (" + why + ")");
  }
  optional_text(w, "etdump", o.etdump);
  w.end_object();
  return w.str();
}

}  // namespace dcx
