import Foundation
import XCTest
@testable import DcxHarness

/// Against a real export folder, `DCX_EXPORT_DIR` (from `dcx export --recipe all --format coreml --out DIR`).
/// Everywhere: the manifest and every reference read, and agree with each other. With Core ML (macOS, iOS):
/// every artifact runs in Core ML and matches its reference.
final class ExportFolderTests: XCTestCase {
    private func exportFolder() throws -> ExportFolder {
        guard let path = ProcessInfo.processInfo.environment["DCX_EXPORT_DIR"] else {
            throw XCTSkip("DCX_EXPORT_DIR is not set: point it at a `dcx export --format coreml` folder")
        }
        // On a device the folder travels inside the test host app: a relative path is looked up there.
        let candidates = [URL(fileURLWithPath: path)] + (Bundle.main.resourceURL.map { [$0.appendingPathComponent(path)] } ?? [])
        let root = candidates.first { FileManager.default.fileExists(atPath: $0.appendingPathComponent("manifest.json").path) }
        return try ExportFolder(root ?? candidates[0])
    }

    func testReferencesAgreeWithTheManifest() throws {
        let folder = try exportFolder()
        XCTAssertFalse(folder.coreMLArtifacts.isEmpty, "no coreml artifact in \(folder.root.path)")
        for artifact in folder.coreMLArtifacts {
            let reference = try folder.reference(of: artifact)
            for name in reference.inputs {
                XCTAssertGreaterThan(try reference.input(name).count, 0, "\(artifact.program) input \(name)")
            }
            if artifact.kind == "infer" {
                for name in reference.outputs {
                    XCTAssertGreaterThan(try reference.output(name).count, 0, "\(artifact.program) output \(name)")
                }
                continue
            }
            XCTAssertEqual(try reference.losses().count, reference.steps)
            XCTAssertTrue(try reference.losses().allSatisfy { $0.isFinite && $0 > 0 }, artifact.program)
            XCTAssertEqual(reference.lr, artifact.optimizer?.lr)
            for step in 0 ..< reference.steps {
                let leading = try Set(reference.inputs.map { try reference.batch(step, $0).shape.first })
                XCTAssertEqual(leading.count, 1, "\(artifact.program) batch \(step): inputs differ in batch size")
            }
            for name in reference.trainable {
                let initial = try reference.initial(name), final = try reference.final(name)
                XCTAssertEqual(initial.shape, final.shape, name)
                XCTAssertGreaterThan(Objectives.maxAbsError(initial.values, final.values), 0, "\(name) never moved")
                XCTAssertNotNil(artifact.weights[name], "\(artifact.program): \(name) has no Core ML location")
            }
        }
    }

    #if canImport(CoreML)
    func testEveryArtifactMatchesItsReferenceInCoreML() async throws {
        let folder = try exportFolder()
        var options = HarnessOptions()
        options.iterations = 5
        let report = try await runHarness(exportFolder: folder.root, options: options)
        print(try report.json())
        for result in report.results {
            XCTAssertTrue(result.ok, "\(result.program): \(result.problems.joined(separator: "; "))")
        }
        XCTAssertEqual(report.results.count, folder.coreMLArtifacts.count)
    }
    #endif
}
