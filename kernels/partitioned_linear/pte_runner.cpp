// A minimal .pte runner for checking the partitioned linear's ExecuTorch kernels on a target (aarch64
// under qemu):
//
//   partitioned_linear_pte_runner MODEL.pte INPUT.f32 OUTPUT.f32
//
// Runs method "forward" on one float32 input read from INPUT.f32 (raw, in the shape the program
// declares) and writes output 0 as raw float32. The kernel library is linked in with --no-as-needed,
// so its registrations run before the program loads. A test tool for kernels/, not the on-device runner
// of runtimes/.
#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>

#include <cstdio>
#include <vector>

using executorch::extension::from_blob;
using executorch::extension::Module;
using executorch::runtime::Error;

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s MODEL.pte INPUT.f32 OUTPUT.f32\n", argv[0]);
    return 2;
  }
  Module module(argv[1]);
  auto meta = module.method_meta("forward");
  if (!meta.ok()) {
    std::fprintf(stderr, "cannot load %s: error 0x%x\n", argv[1], static_cast<int>(meta.error()));
    return 1;
  }
  auto in_meta = meta->input_tensor_meta(0);
  if (!in_meta.ok()) {
    std::fprintf(stderr, "input 0 is not a tensor\n");
    return 1;
  }
  std::vector<executorch::aten::SizesType> sizes(in_meta->sizes().begin(), in_meta->sizes().end());
  size_t numel = 1;
  for (auto s : sizes) numel *= static_cast<size_t>(s);
  std::vector<float> input(numel);
  FILE* f = std::fopen(argv[2], "rb");
  if (!f || std::fread(input.data(), sizeof(float), numel, f) != numel) {
    std::fprintf(stderr, "cannot read %zu floats from %s\n", numel, argv[2]);
    return 1;
  }
  std::fclose(f);
  auto tensor = from_blob(input.data(), sizes, executorch::aten::ScalarType::Float);
  auto result = module.forward(tensor);
  if (!result.ok()) {
    std::fprintf(stderr, "forward failed: error 0x%x\n", static_cast<int>(result.error()));
    return 1;
  }
  const auto& out = result->at(0).toTensor();
  f = std::fopen(argv[3], "wb");
  if (!f || std::fwrite(out.const_data_ptr<float>(), sizeof(float), out.numel(), f) !=
                static_cast<size_t>(out.numel())) {
    std::fprintf(stderr, "cannot write %s\n", argv[3]);
    return 1;
  }
  std::fclose(f);
  std::printf("ok: %zd outputs, output 0 has %zd elements\n", result->size(),
              static_cast<ssize_t>(out.numel()));
  return 0;
}
