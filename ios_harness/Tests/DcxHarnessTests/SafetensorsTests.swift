import Foundation
import XCTest
@testable import DcxHarness

final class SafetensorsTests: XCTestCase {
    func testReadsEveryDtypeShapeAndMetadata() throws {
        let data = safetensorsBytes([
            ("a", .f32, [2, 2], [1.5, -2.25, 3.0e-8, 65504]),
            ("b", .f64, [3], [0.1, -1e300, 7]),
            ("c", .i32, [2], [-7, 2_147_483_647]),
            ("d", .i64, [1, 2], [-9_007_199_254_740_992, 42]),
        ], metadata: ["program": "p", "inputs": "[\"x\", \"y\"]"])
        let file = try SafetensorsFile(data: data, path: "t.safetensors")
        XCTAssertEqual(file.metadata["program"], "p")
        XCTAssertEqual(try file.stringList("inputs"), ["x", "y"])
        XCTAssertEqual(try file.tensor("a"), Tensor(dtype: .f32, shape: [2, 2], values: [1.5, -2.25, Double(Float(3.0e-8)), 65504]))
        XCTAssertEqual(try file.tensor("b").values, [0.1, -1e300, 7])
        XCTAssertEqual(try file.tensor("c").values, [-7, 2_147_483_647])
        XCTAssertEqual(try file.tensor("d").shape, [1, 2])
        XCTAssertEqual(try file.tensor("d").values, [-9_007_199_254_740_992, 42])
    }

    func testSampleSlicesTheLeadingAxis() {
        let t = Tensor(dtype: .f32, shape: [3, 2], values: [0, 1, 2, 3, 4, 5])
        XCTAssertEqual(t.sample(0), [0, 1])
        XCTAssertEqual(t.sample(2), [4, 5])
    }

    func testRefusesMalformedFiles() {
        func message(_ data: Data) -> String? {
            do {
                _ = try SafetensorsFile(data: data, path: "bad.safetensors")
                return nil
            } catch {
                return describe(error)
            }
        }
        XCTAssertEqual(message(Data([1, 2, 3])), "bad.safetensors: shorter than its 8-byte header length: not a valid "
                       + "safetensors file; re-run `dcx export`")
        var huge = Data()
        withUnsafeBytes(of: UInt64(1 << 40).littleEndian) { huge.append(contentsOf: $0) }
        XCTAssertTrue(message(huge)?.contains("exceeds the file") ?? false)
        XCTAssertTrue(message(safetensorsBytes(rawHeader: "{not json"))?.contains("does not parse as JSON") ?? false)
        XCTAssertTrue(message(safetensorsBytes(rawHeader: #"{"x":{"dtype":"BF16","shape":[1],"data_offsets":[0,2]}}"#,
                                               body: Data([0, 0])))?.contains("dtype BF16") ?? false)
        // 2 floats declared, 1 float of data
        XCTAssertTrue(message(safetensorsBytes(rawHeader: #"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#,
                                               body: Data([0, 0, 0, 0])))?.contains("do not hold [2] F32") ?? false)
        // offsets beyond the data
        XCTAssertTrue(message(safetensorsBytes(rawHeader: #"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#))?
            .contains("do not hold [1] F32") ?? false)
    }

    func testMissingTensorNamesFileAndTensor() throws {
        let file = try SafetensorsFile(data: safetensorsBytes([("a", .f32, [1], [1])]), path: "r.safetensors")
        XCTAssertThrowsError(try file.tensor("input/x")) {
            XCTAssertEqual(describe($0), "r.safetensors: tensor input/x is missing: re-run `dcx export`")
        }
        XCTAssertThrowsError(try file.stringList("inputs"))
    }
}
