import Foundation
import XCTest
@testable import DcxHarness

/// A manifest entry shaped as toolchain/dcx/manifest.py writes it (fields the harness ignores included).
private let artifactJSON = """
{"program": "coda.recommender.train", "recipe": "coda", "kind": "train", "format": "coreml",
 "file": "coda.recommender.train.mlmodel", "sha256": "ab", "size_bytes": 10,
 "inputs": [{"name": "item", "shape": [32], "dtype": "int32"}],
 "outputs": [{"name": "logits", "shape": [1], "dtype": "float32"}],
 "signatures": {"predict": {"inputs": [], "outputs": []}},
 "trainable": {"model.genre.weight": [16, 19], "model.mlp.2.bias": [1]}, "frozen": {},
 "optimizer": {"type": "sgd", "lr": 0.05}, "flops": {"forward": 1, "backward": null},
 "weights": {"model.mlp.2.bias": "model.mlp.2/bias"}, "weight_locations": [],
 "provenance": {"weights": "initialised", "seed": 0}, "requires": {"custom_ops": [], "kernel_libraries": []},
 "passes": [], "versions": {}, "export_seconds": 1.5, "notes": {},
 "deviations": [
   {"description": "frozen in Core ML", "measured": null, "parameters": ["model.genre.weight"]},
   {"description": "measured", "parameters": [],
    "measured": {"method": "m", "formulation": "bce_as_2class_ce", "steps": 20, "loss_max_abs_diff": 0.00123,
                 "weight_max_abs_diff": 0.0456, "weight_max_abs_diff_by_param": {"model.mlp.2.bias": 0.0456},
                 "alternative_drop_frozen_offset": {"steps": 20}}}],
 "reference": {"file": "reference/coda.recommender.train.safetensors", "sha256": "cd", "steps": 20}}
"""

final class ManifestTests: XCTestCase {
    private func manifest(_ artifacts: String, schema: Int = 3) -> Data {
        Data(#"{"schema": \#(schema), "dcx": "0.1.0", "artifacts": [\#(artifacts)], "failures": [], "references": []}"#.utf8)
    }

    func testDecodesTheFieldsTheHarnessUses() throws {
        let m = try Manifest.decode(manifest(artifactJSON), path: "manifest.json")
        let a = try XCTUnwrap(m.artifacts.first)
        XCTAssertEqual(a.program, "coda.recommender.train")
        XCTAssertEqual(a.kind, "train")
        XCTAssertEqual(a.optimizer?.lr, 0.05)
        XCTAssertEqual(a.weights["model.mlp.2.bias"], "model.mlp.2/bias")
        XCTAssertEqual(a.reference.steps, 20)
        XCTAssertEqual(a.frozenInCoreML, ["model.genre.weight"])
        XCTAssertEqual(a.measured?.weight_max_abs_diff, 0.0456)
        XCTAssertEqual(a.measured?.weight_max_abs_diff_by_param, ["model.mlp.2.bias": 0.0456])
    }

    func testRefusesAnotherSchemaWithTheFix() {
        XCTAssertThrowsError(try Manifest.decode(manifest(artifactJSON, schema: 1), path: "out/manifest.json")) {
            XCTAssertEqual(describe($0), "out/manifest.json: manifest schema 1 was written by another dcx version "
                           + "(this harness reads 3): re-export with `dcx export --force`")
        }
        XCTAssertThrowsError(try Manifest.decode(Data("[1]".utf8), path: "m.json")) {
            XCTAssertEqual(describe($0), "m.json does not parse as a JSON object: re-run `dcx export --force`")
        }
    }

    func testMissingFieldIsNamed() {
        let broken = artifactJSON.replacingOccurrences(of: #""program": "coda.recommender.train", "#, with: "")
        XCTAssertThrowsError(try Manifest.decode(manifest(broken), path: "m.json")) {
            XCTAssertEqual(describe($0), "m.json: field artifacts[0].program is missing: re-export")
        }
    }

    func testExportFolderRefusesPathsOutsideIt() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("dcx-harness-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: root) }
        let escaping = artifactJSON.replacingOccurrences(of: #""file": "coda.recommender.train.mlmodel""#,
                                                         with: #""file": "../elsewhere.mlmodel""#)
        try manifest(escaping).write(to: root.appendingPathComponent("manifest.json"))
        XCTAssertThrowsError(try ExportFolder(root)) {
            XCTAssertTrue(describe($0).hasSuffix("artifacts[0].file ../elsewhere.mlmodel lies outside the export folder: "
                                                 + "refused; re-export"))
        }
        XCTAssertThrowsError(try ExportFolder(root.appendingPathComponent("missing"))) {
            XCTAssertTrue(describe($0).hasSuffix("is not a directory: pass the folder that `dcx export --out` wrote"))
        }
    }
}
