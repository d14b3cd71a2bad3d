#if canImport(CoreML)
import CoreML

/// The dcx metadata of an updatable model (toolchain/dcx/export/coreml.py, pass make_updatable).
struct UpdatableModel {
    let formulation: String  // "exact_ce" | "bce_as_2class_ce" | "mse_gradient_matching"
    let labelInput: String  // the reference input holding the class index
    let lossTarget: String  // the training input of Core ML's loss layer
    let trainableOutput: String?  // gradient matching: s
    let frozenOutput: String?  // gradient matching: m
    let targetScale: Double?  // gradient matching: k
    let batchSize: Int

    init(_ model: MLModel, path: String) throws {
        let meta = model.modelDescription.metadata[.creatorDefinedKey] as? [String: String] ?? [:]
        func value(_ key: String) throws -> String {
            guard let v = meta[key], !v.isEmpty else {
                throw HarnessError("\(path): metadata \(key) is missing: re-export with `dcx export --format coreml`")
            }
            return v
        }
        formulation = try value("dcx.formulation")
        labelInput = try value("dcx.label_input")
        lossTarget = try value("dcx.loss_target")
        guard let batch = Int(try value("dcx.batch_size")), batch > 0 else {
            throw HarnessError("\(path): metadata dcx.batch_size is not a positive integer")
        }
        batchSize = batch
        if formulation == "mse_gradient_matching" {
            trainableOutput = try value("dcx.trainable_output")
            frozenOutput = try value("dcx.frozen_output")
            guard let k = Double(try value("dcx.target_scale")) else {
                throw HarnessError("\(path): metadata dcx.target_scale is not a number")
            }
            targetScale = k
        } else {
            trainableOutput = nil
            frozenOutput = nil
            targetScale = nil
        }
    }
}

/// What one pass over the reference batches gave.
struct TrainingRun {
    var losses: [Double] = []  // the app's loss of each step, before its update
    var lossLayerValues: [Double] = []  // the same batch's loss as Core ML's loss layer defines it, computed here
    var coreMLLosses: [Double] = []  // MLMetricKey.lossValue of each update
    var stepMs: [Double] = []  // prediction, loss and target, update, writing the updated model
    var weights: [String: [Double]] = [:]  // trainable PyTorch parameter -> Core ML's values after the last step
    var unreadable: [String: String] = [:]  // parameter -> why its value could not be read back
}

/// One `MLUpdateTask` over `data` (one epoch, one mini-batch): the update context once it completes.
private func update(_ url: URL, _ data: MLBatchProvider, _ config: MLModelConfiguration) async throws -> MLUpdateContext {
    try await withCheckedThrowingContinuation { continuation in
        do {
            let task = try MLUpdateTask(forModelAt: url, trainingData: data, configuration: config) { context in
                if context.task.state == .failed {
                    continuation.resume(throwing: context.task.error ?? HarnessError("MLUpdateTask failed without an error"))
                } else {
                    continuation.resume(returning: context)
                }
            }
            task.resume()
        } catch {
            continuation.resume(throwing: error)
        }
    }
}

/// The reference batches through Core ML as an app drives it (dcx.formats.coreml.reference_session): per-sample
/// feature providers; before every update one prediction gives the app's loss and, for gradient matching, the MSE
/// target `s - k (softmax(m + s) - onehot(y))`; one `MLUpdateTask` per batch, chained through the written model.
func train(_ compiled: URL, _ info: UpdatableModel, _ artifact: Manifest.Artifact, _ reference: ProgramReference,
           scale: Double?, scratch: URL) async throws -> TrainingRun {
    let config = configuration(.cpuOnly)
    var modelURL = compiled
    var model: MLModel = try MLModel(contentsOf: compiled, configuration: config)
    guard let targetDescription = model.modelDescription.trainingInputDescriptionsByName[info.lossTarget] else {
        throw HarnessError("\(artifact.file): the model has no training input \(info.lossTarget) (metadata "
                           + "dcx.loss_target): re-export")
    }
    let outputNames = Set(model.modelDescription.outputDescriptionsByName.keys)
    guard let logitsOutput = info.trainableOutput ?? (outputNames.contains("logits") || outputNames.count != 1
                                                      ? "logits" : outputNames.first),
          outputNames.contains(logitsOutput) else {
        throw HarnessError("\(artifact.file): no output logits (or dcx.trainable_output) for the loss: re-export")
    }
    let runDirectory = scratch.appendingPathComponent(UUID().uuidString)
    try FileManager.default.createDirectory(at: runDirectory, withIntermediateDirectories: true)
    var run = TrainingRun()
    for step in 0 ..< reference.steps {
        var samples = try referenceFeatures(model, reference, step: step)
        let labels = try reference.batch(step, info.labelInput)
        guard samples.count == info.batchSize, labels.shape.first == info.batchSize else {
            throw HarnessError("\(reference.file.path): batch \(step) holds \(samples.count) samples, the model's "
                               + "mini-batch (dcx.batch_size) is \(info.batchSize)")
        }
        let watch = Stopwatch()  // the app's step: prediction, loss and target, update, writing the updated model
        let predictions = try model.predictions(fromBatch: try batchProvider(samples))
        var loss = 0.0, lossLayer = 0.0
        for i in 0 ..< samples.count {
            let label = Int(labels.sample(i)[0].rounded())
            let output = predictions.features(at: i)
            let logits = try outputValues(output, logitsOutput)
            if let frozen = info.frozenOutput, let k = scale {
                let m = try outputValues(output, frozen)
                loss += Objectives.crossEntropy(zip(logits, m).map { $0 + $1 }, label: label)
                let target = Objectives.gradientMatchingTarget(trainable: logits, frozen: m, label: label, scale: k)
                lossLayer += Objectives.meanSquaredError(logits, target)
                samples[i][info.lossTarget] = try featureValue(target, for: targetDescription)
            } else {
                let ce = Objectives.crossEntropy(logits, label: label)
                loss += ce
                lossLayer += ce
                samples[i][info.lossTarget] = try featureValue([Double(label)], for: targetDescription)
            }
        }
        run.losses.append(loss / Double(samples.count))
        run.lossLayerValues.append(lossLayer / Double(samples.count))
        let context = try await update(modelURL, try batchProvider(samples), config)
        run.coreMLLosses.append((context.metrics[.lossValue] as? NSNumber)?.doubleValue ?? .nan)
        let next = runDirectory.appendingPathComponent("step\(step).mlmodelc")
        try context.model.write(to: next)
        model = context.model
        modelURL = next
        run.stepMs.append(watch.ms)
    }
    for name in reference.trainable {
        guard let location = artifact.weights[name] else {
            run.unreadable[name] = "manifest.json maps it to no Core ML layer"
            continue
        }
        do {
            run.weights[name] = try parameterValues(model, location)
        } catch {
            run.unreadable[name] = "\(location): \(describe(error))"
        }
    }
    try? FileManager.default.removeItem(at: runDirectory)
    return run
}

/// A layer parameter of an updatable model, "<layer>/<field>" as manifest.json's `weights` names it.
private func parameterValues(_ model: MLModel, _ location: String) throws -> [Double] {
    let parts = location.split(separator: "/", omittingEmptySubsequences: false)
    guard parts.count == 2 else { throw HarnessError("\(location) is not <layer>/<field>") }
    let key: MLParameterKey
    switch parts[1] {
    case "weights": key = .weights
    case "bias": key = .biases
    default: throw HarnessError("Core ML exposes no parameter key for field \(parts[1])")
    }
    guard let array = try model.parameterValue(for: key.scoped(to: String(parts[0]))) as? MLMultiArray else {
        throw HarnessError("the value is not an MLMultiArray")
    }
    return array.logicalValues
}

/// Scales tried for the gradient-matching target, the exported one first: `D / 2` assumes Core ML's MSE is the mean
/// over the D logits; 1 fits a halved sum, 1/2 a plain sum, D a halved mean.
func candidateScales(exported k: Double, classes: Int) -> [Double] {
    var seen: [Double] = []
    for candidate in [k, 1, Double(classes), 0.5] where !seen.contains(candidate) {
        seen.append(candidate)
    }
    return seen
}

/// A training artifact: trained on the reference batches in Core ML, losses and final weights against eager PyTorch;
/// for gradient matching, the scale k that makes Core ML's steps the exact DC-CCL steps.
func checkTraining(_ artifact: Manifest.Artifact, _ url: URL, _ reference: ProgramReference, scratch: URL,
                   options: HarnessOptions, into report: inout ArtifactReport) async throws {
    let compiled = try await compileModel(url, into: scratch)
    let loadWatch = Stopwatch()
    let model = try MLModel(contentsOf: compiled.url, configuration: configuration(.cpuOnly))
    report.compile_ms = compiled.ms
    report.load_ms = compiled.ms + loadWatch.ms
    let info = try UpdatableModel(model, path: artifact.file)
    let referenceLosses = try reference.losses()
    let finals = try Dictionary(uniqueKeysWithValues: reference.trainable.map { ($0, try reference.final($0).values) })
    let frozen = artifact.frozenInCoreML
    let tol = options.tolerance

    /// Errors of one run against the reference; Core ML-frozen parameters keep their initial values.
    func evaluate(_ run: TrainingRun) throws -> (loss: Double, weights: Double, byParam: [String: Double]) {
        var byParam: [String: Double] = [:]
        for (name, want) in finals {
            if let got = run.weights[name], got.count == want.count {
                byParam[name] = Objectives.maxAbsError(got, want)
            } else if frozen.contains(name) {
                byParam[name] = Objectives.maxAbsError(try reference.initial(name).values, want)
            }
        }
        return (Objectives.lossError(run.losses, reference: referenceLosses), byParam.values.max() ?? .nan, byParam)
    }

    /// Core ML trains as the reference says: exactly, or, where parameters are frozen in Core ML, with the gap
    /// dcx's interpreter of the same spec measured at export (3 significant digits).
    func matches(_ loss: Double, _ byParam: [String: Double]) -> Bool {
        guard !frozen.isEmpty, let measured = artifact.measured?.weight_max_abs_diff_by_param else {
            return loss <= tol.loss && byParam.count == finals.count && byParam.values.allSatisfy { $0 <= tol.weights }
        }
        return finals.keys.allSatisfy { name in
            guard let got = byParam[name], let want = measured[name] else { return false }
            return abs(got - want) <= max(tol.weights, 5e-3 * want)
        }
    }

    let scales: [Double?] = info.targetScale.map { k in
        let classes = model.modelDescription.outputDescriptionsByName[info.trainableOutput!]?
            .multiArrayConstraint?.shape.reduce(1) { $0 * $1.intValue } ?? 0
        return candidateScales(exported: k, classes: classes)
    } ?? [nil]
    var trials: [TargetScaleTrial] = []
    for (index, scale) in scales.enumerated() {
        let run = try await train(compiled.url, info, artifact, reference, scale: scale, scratch: scratch)
        let errors = try evaluate(run)
        let ok = matches(errors.loss, errors.byParam)
        if let k = scale {
            trials.append(TargetScaleTrial(k: k, loss_error: errors.loss, weight_error: errors.weights, matches: ok))
        }
        if index == 0 {  // the exported formulation: the numbers reported
            report.formulation = info.formulation
            report.batch_size = info.batchSize
            report.train_steps = run.losses.count
            report.lr = artifact.optimizer?.lr
            report.first_ms = run.stepMs.first
            report.warmup = 0
            report.iterations = run.stepMs.count - 1
            report.latency_ms = LatencySummary(Array(run.stepMs.dropFirst()))
            report.steps_per_s = Double(run.stepMs.count) / (run.stepMs.reduce(0, +) / 1000)
            report.losses = run.losses
            report.coreml_losses = run.coreMLLosses
            report.coreml_loss_ratio = zip(run.coreMLLosses, run.lossLayerValues).map { $0 / $1 }.reduce(0, +)
                / Double(run.coreMLLosses.count)
            report.loss_error = errors.loss
            report.weight_error = errors.weights
            report.weight_error_by_param = errors.byParam
            report.frozen_in_coreml = frozen.sorted()
            report.reference_interpreter_weight_error = artifact.measured?.weight_max_abs_diff
            report.target_scale = info.targetScale
            for (name, why) in run.unreadable where !frozen.contains(name) {
                report.problems.append("parameter \(name) could not be read back (\(why))")
            }
            if !ok && scale == nil {
                report.problems.append("training differs from the reference: loss error \(errors.loss), weight error "
                                       + "\(errors.weights) (tolerance \(tol.loss), \(tol.weights))")
            }
        }
        if ok && scale != nil {
            report.target_scale_matches = scale
            break
        }
    }
    if info.targetScale != nil {
        report.target_scale_trials = trials
        if report.target_scale_matches != info.targetScale {
            report.problems.append(report.target_scale_matches.map {
                "Core ML's MSE normalisation differs from the exported assumption: k = \($0) matches, not "
                    + "dcx.target_scale = \(info.targetScale!); change add_gradient_matching_mse's target_scale"
            } ?? "no gradient-matching scale tried (\(scales.compactMap { $0 })) reproduces the reference steps")
        }
    }
}
#endif
