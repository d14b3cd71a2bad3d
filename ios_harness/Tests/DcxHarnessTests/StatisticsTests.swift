import XCTest
@testable import DcxHarness

final class StatisticsTests: XCTestCase {
    func testNativeRunnerDefinitions() throws {
        // 10 samples: the trimmed mean drops one from each end; p90 interpolates between the 9th and 10th.
        let s = try XCTUnwrap(LatencySummary([9, 1, 100, 2, 8, 3, 7, 4, 6, 5]))
        XCTAssertEqual(s.mean, 14.5, accuracy: 1e-12)
        XCTAssertEqual(s.trimmed_mean, 5.5, accuracy: 1e-12)
        XCTAssertEqual(s.p50, 5.5, accuracy: 1e-12)
        XCTAssertEqual(s.p90, 9 + 0.1 * 91, accuracy: 1e-12)
        XCTAssertEqual(s.min, 1)
        XCTAssertEqual(s.max, 100)
    }

    func testFewSamplesKeepThemAll() throws {
        let s = try XCTUnwrap(LatencySummary([4, 2]))
        XCTAssertEqual(s.trimmed_mean, 3)
        XCTAssertEqual(s.p90, 3.8, accuracy: 1e-12)
        XCTAssertNil(LatencySummary([]))
    }

    func testReportEncodesOneLineWithNativeFieldNames() throws {
        var run = RunReport(target: "macos", os: "x", machine: "arm64", export: "/tmp/out", tolerance: Tolerance())
        var r = ArtifactReport(artifact: try Manifest.decode(Data(#"""
            {"schema": 3, "artifacts": [{"program": "p.infer", "kind": "infer", "format": "coreml", "file": "p.mlpackage",
             "optimizer": null, "weights": {}, "deviations": [],
             "reference": {"file": "reference/p.safetensors", "sha256": "", "steps": 0}}]}
            """#.utf8), path: "m").artifacts[0], target: "macos")
        r.latency_ms = LatencySummary([1, 2, 3])
        r.first_ms = 4
        r.weight_error = .nan
        run.results = [r]
        let line = try run.json()
        XCTAssertFalse(line.contains("\n"))
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        XCTAssertEqual(object["export"] as? String, "/tmp/out")
        let result = try XCTUnwrap((object["results"] as? [[String: Any]])?.first)
        XCTAssertEqual(result["format"] as? String, "coreml")
        XCTAssertEqual(result["first_ms"] as? Double, 4)
        XCTAssertEqual(result["weight_error"] as? String, "nan")
        XCTAssertNil(result["losses"])  // absent where it does not apply
        let latency = try XCTUnwrap(result["latency_ms"] as? [String: Double])
        XCTAssertEqual(Set(latency.keys), ["mean", "trimmed_mean", "p50", "p90", "min", "max"])
    }
}
