#if canImport(CoreML)
import CoreML

/// `MLModel.compileModel(at:)`, the result moved into `scratch` (removed when the run ends).
func compileModel(_ url: URL, into scratch: URL) async throws -> (url: URL, ms: Double) {
    let watch = Stopwatch()
    let compiled = try await MLModel.compileModel(at: url)
    let ms = watch.ms
    let destination = scratch.appendingPathComponent(UUID().uuidString + ".mlmodelc")
    try FileManager.default.moveItem(at: compiled, to: destination)
    return (destination, ms)
}

func configuration(_ units: MLComputeUnits) -> MLModelConfiguration {
    let config = MLModelConfiguration()
    config.computeUnits = units
    return config
}

func computeUnitsName(_ units: MLComputeUnits) -> String {
    switch units {
    case .cpuOnly: return "cpu_only"
    case .cpuAndGPU: return "cpu_and_gpu"
    case .all: return "all"
    case .cpuAndNeuralEngine: return "cpu_and_neural_engine"
    @unknown default: return "unknown(\(units.rawValue))"
    }
}

/// An inference artifact (ML program): loaded CPU only, its outputs on the reference inputs against eager PyTorch,
/// and its timing CPU only and under the default compute units.
func checkInference(_ url: URL, _ reference: ProgramReference, scratch: URL, options: HarnessOptions,
                    into report: inout ArtifactReport) async throws {
    let compiled = try await compileModel(url, into: scratch)
    report.compile_ms = compiled.ms
    func measure(_ units: MLComputeUnits) throws -> (timing: Timing, outputs: MLFeatureProvider) {
        let watch = Stopwatch()
        let model = try MLModel(contentsOf: compiled.url, configuration: configuration(units))
        let loadMs = compiled.ms + watch.ms
        let inputs = try MLDictionaryFeatureProvider(dictionary: referenceFeatures(model, reference, step: nil)[0])
        return try time(model, inputs: inputs, loadMs: loadMs, units: units, options: options)
    }
    let cpu = try measure(.cpuOnly)
    report.load_ms = cpu.timing.load_ms
    report.first_ms = cpu.timing.first_ms
    report.warmup = cpu.timing.warmup
    report.iterations = cpu.timing.iterations
    report.latency_ms = cpu.timing.latency_ms
    var errors: [String: Double] = [:]
    for name in reference.outputs {
        let want = try reference.output(name).values
        let got = try outputValues(cpu.outputs, name)
        guard got.count == want.count else {
            report.problems.append("output \(name): \(got.count) values, the reference has \(want.count)")
            continue
        }
        errors[name] = Objectives.maxAbsError(got, want)
    }
    report.forward_error_by_output = errors
    report.forward_error = errors.values.max()
    if let worst = report.forward_error, worst > options.tolerance.forward {
        report.problems.append("forward error \(worst) exceeds \(options.tolerance.forward)")
    }
    report.default_compute_units = try measure(.all).timing
}

/// One first prediction, `warmup` untimed ones, `iterations` timed ones (as the native runner counts them).
private func time(_ model: MLModel, inputs: MLFeatureProvider, loadMs: Double, units: MLComputeUnits,
                  options: HarnessOptions) throws -> (timing: Timing, outputs: MLFeatureProvider) {
    let first = Stopwatch()
    var outputs = try model.prediction(from: inputs)
    let firstMs = first.ms
    for _ in 0 ..< options.warmup {
        outputs = try model.prediction(from: inputs)
    }
    var samples: [Double] = []
    for _ in 0 ..< options.iterations {
        let watch = Stopwatch()
        outputs = try model.prediction(from: inputs)
        samples.append(watch.ms)
    }
    return (Timing(compute_units: computeUnitsName(units), load_ms: loadMs, first_ms: firstMs, warmup: options.warmup,
                   iterations: options.iterations, latency_ms: LatencySummary(samples)), outputs)
}
#endif
