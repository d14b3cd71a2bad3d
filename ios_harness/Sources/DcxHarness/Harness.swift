import Foundation
#if canImport(CoreML)
import CoreML
#endif

public struct HarnessOptions {
    public var warmup = 3  // untimed predictions after the first (native runner's default)
    public var iterations = 20  // timed predictions (native runner's default)
    public var tolerance = Tolerance()

    public init() {}
}

/// Where this build runs, as the report's `target` names it.
public var harnessTarget: String {
    #if os(iOS) && targetEnvironment(simulator)
    return "ios-simulator"
    #elseif os(iOS)
    return "ios"
    #elseif os(macOS)
    return "macos"
    #else
    return "linux"
    #endif
}

/// One line for any error: a `HarnessError`'s message, else Foundation's description.
public func describe(_ error: Error) -> String {
    (error as? HarnessError)?.message ?? error.localizedDescription
}

#if canImport(CoreML)
/// The hardware model (`uname -m`: e.g. "arm64" on a Mac, "iPhone15,2" on a phone).
private var machineName: String {
    var system = utsname()
    uname(&system)
    return withUnsafeBytes(of: &system.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
}

/// Every Core ML artifact of an export folder, run in Core ML and compared with its reference.
public func runHarness(exportFolder root: URL, options: HarnessOptions = HarnessOptions()) async throws -> RunReport {
    let folder = try ExportFolder(root)
    let artifacts = folder.coreMLArtifacts
    guard !artifacts.isEmpty else {
        throw HarnessError("\(root.path)/manifest.json lists no coreml artifact: export with `--format coreml`")
    }
    let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("dcx-ios-harness-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: scratch) }
    var run = RunReport(target: harnessTarget, os: ProcessInfo.processInfo.operatingSystemVersionString,
                        machine: machineName, export: root.path, tolerance: options.tolerance)
    for artifact in artifacts {
        var report = ArtifactReport(artifact: artifact, target: harnessTarget)
        let before = physFootprintKB()
        do {
            let reference = try folder.reference(of: artifact)
            let url = try folder.resolve(artifact.file, field: "file")
            if artifact.kind == "train" {
                try await checkTraining(artifact, url, reference, scratch: scratch, options: options, into: &report)
            } else {
                try await checkInference(url, reference, scratch: scratch, options: options, into: &report)
            }
        } catch {
            report.problems.append(describe(error))
        }
        if let after = physFootprintKB() {
            report.peak_phys_footprint_kb = after.peak
            report.phys_footprint_delta_kb = before.map { after.now - $0.now }
        }
        report.ok = report.problems.isEmpty
        run.results.append(report)
    }
    run.passed = run.results.filter(\.ok).count
    run.failed = run.results.count - run.passed
    return run
}
#endif
