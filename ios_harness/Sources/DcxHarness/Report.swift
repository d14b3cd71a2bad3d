import Foundation

// Property names are the JSON fields, spelled as the native runner spells them (runtimes/native/README.md).

/// Largest accepted differences from the reference (float32 Core ML against eager PyTorch).
public struct Tolerance: Codable, Equatable {
    public var forward = 1e-4  // max absolute error of any output element
    public var loss = 1e-4  // max per-step loss error, relative to max(1, |reference loss|)
    public var weights = 1e-4  // max absolute error of any final trainable weight

    public init() {}
}

/// Load and latency of one artifact under one compute-unit setting.
public struct Timing: Codable, Equatable {
    public var compute_units: String
    public var load_ms: Double  // compile + load
    public var first_ms: Double
    public var warmup: Int
    public var iterations: Int
    public var latency_ms: LatencySummary?
}

/// One gradient-matching scale tried for DC-CCL's MSE target.
public struct TargetScaleTrial: Codable, Equatable {
    public var k: Double
    public var loss_error: Double
    public var weight_error: Double
    public var matches: Bool
}

public struct ArtifactReport: Codable {
    public var program: String
    public var format = "coreml"
    public var kind: String
    public var file: String
    public var target: String
    public var ok = false
    public var problems: [String] = []

    // Timing, CPU only (the configuration the comparisons use); inference also under the default compute units.
    public var compile_ms: Double?
    public var load_ms: Double?
    public var first_ms: Double?
    public var warmup: Int?
    public var iterations: Int?
    public var latency_ms: LatencySummary?
    public var default_compute_units: Timing?
    public var phys_footprint_delta_kb: Int?  // process footprint after this artifact minus before it
    public var peak_phys_footprint_kb: Int?  // the process's high-water footprint so far

    // Inference.
    public var forward_error: Double?
    public var forward_error_by_output: [String: Double]?

    // Training.
    public var formulation: String?
    public var batch_size: Int?
    public var train_steps: Int?
    public var lr: Double?
    public var steps_per_s: Double?
    public var losses: [Double]?  // computed by the app from the prediction before each update
    public var coreml_losses: [Double]?  // MLMetricKey.lossValue of each update
    public var coreml_loss_ratio: Double?  // mean of coreml_losses / the app's loss of Core ML's loss layer
    public var loss_error: Double?
    public var weight_error: Double?
    public var weight_error_by_param: [String: Double]?
    public var frozen_in_coreml: [String]?
    public var reference_interpreter_weight_error: Double?  // manifest: dcx's interpreter of the same spec
    public var target_scale: Double?  // metadata dcx.target_scale
    public var target_scale_matches: Double?  // the k whose training matches the reference; nil if none did
    public var target_scale_trials: [TargetScaleTrial]?

    public init(artifact: Manifest.Artifact, target: String) {
        program = artifact.program
        kind = artifact.kind
        file = artifact.file
        self.target = target
    }
}

public struct RunReport: Codable {
    public var harness = "dcx-ios-harness"
    public var version = harnessVersion
    public var target: String
    public var os: String
    public var machine: String
    public var export: String
    public var tolerance: Tolerance
    public var results: [ArtifactReport] = []
    public var passed = 0
    public var failed = 0

    public init(target: String, os: String, machine: String, export: String, tolerance: Tolerance) {
        self.target = target
        self.os = os
        self.machine = machine
        self.export = export
        self.tolerance = tolerance
    }

    /// One JSON object on one line, keys sorted; non-finite numbers as strings ("nan", "inf").
    public func json() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf",
                                                                      nan: "nan")
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }
}

public let harnessVersion = "0.1.0"
