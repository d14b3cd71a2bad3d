import Foundation
import XCTest
@testable import DcxHarness

final class ReferenceTests: XCTestCase {
    private let trainingMetadata = [
        "dcx.reference.schema": "1", "program": "toy.train", "kind": "train", "inputs": #"["x", "label"]"#,
        "outputs": #"["loss"]"#, "trainable": #"["fc.weight"]"#, "steps": "2", "lr": "0.05",
    ]

    func testTrainingReferenceFields() throws {
        let data = safetensorsBytes([
            ("batch/0/x", .f32, [2, 3], [1, 2, 3, 4, 5, 6]), ("batch/1/label", .i64, [2], [1, 0]),
            ("loss", .f64, [2], [0.7, 0.6]), ("param/initial/fc.weight", .f32, [1, 3], [0, 0, 0]),
            ("param/final/fc.weight", .f32, [1, 3], [0.5, 0.25, -1]),
        ], metadata: trainingMetadata)
        let reference = try ProgramReference(file: SafetensorsFile(data: data, path: "toy.safetensors"))
        XCTAssertEqual(reference.program, "toy.train")
        XCTAssertEqual(reference.kind, "train")
        XCTAssertEqual(reference.inputs, ["x", "label"])
        XCTAssertEqual(reference.trainable, ["fc.weight"])
        XCTAssertEqual(reference.steps, 2)
        XCTAssertEqual(reference.lr, 0.05)
        XCTAssertEqual(try reference.losses(), [0.7, 0.6])
        XCTAssertEqual(try reference.batch(0, "x").sample(1), [4, 5, 6])
        XCTAssertEqual(try reference.batch(1, "label").values, [1, 0])
        XCTAssertEqual(try reference.final("fc.weight").values, [0.5, 0.25, -1])
        XCTAssertEqual(try reference.initial("fc.weight").shape, [1, 3])
    }

    func testLossCountMustMatchSteps() throws {
        var meta = trainingMetadata
        meta["steps"] = "3"
        let data = safetensorsBytes([("loss", .f64, [2], [0.7, 0.6])], metadata: meta)
        let reference = try ProgramReference(file: SafetensorsFile(data: data, path: "toy.safetensors"))
        XCTAssertThrowsError(try reference.losses()) {
            XCTAssertEqual(describe($0), "toy.safetensors: loss holds 2 values for 3 steps: re-run `dcx export`")
        }
    }

    func testRefusesAnotherSchemaAndTrainingWithoutLr() {
        var other = trainingMetadata
        other["dcx.reference.schema"] = "2"
        XCTAssertThrowsError(try ProgramReference(file: SafetensorsFile(data: safetensorsBytes([], metadata: other),
                                                                        path: "r"))) {
            XCTAssertTrue(describe($0).contains("reference schema 2 is not 1"))
        }
        var noLr = trainingMetadata
        noLr.removeValue(forKey: "lr")
        XCTAssertThrowsError(try ProgramReference(file: SafetensorsFile(data: safetensorsBytes([], metadata: noLr),
                                                                        path: "r"))) {
            XCTAssertTrue(describe($0).contains("needs metadata steps >= 1 and lr"))
        }
    }
}
