import Foundation
import XCTest
@testable import DcxHarness

final class ObjectivesTests: XCTestCase {
    /// With k = D/2 the gradient of the mean-over-D MSE, (2/D)(s - t), is softmax(m + s) - onehot(y): the CE gradient.
    func testGradientMatchingTargetGivesTheCrossEntropyGradient() {
        let s = [0.3, -1.2, 2.0, 0.0, 0.7], m = [1.0, 0.5, -0.25, 3.0, -2.0]
        let d = Double(s.count), label = 3
        let t = Objectives.gradientMatchingTarget(trainable: s, frozen: m, label: label, scale: d / 2)
        var ceGradient = Objectives.softmax(zip(s, m).map { $0 + $1 })
        ceGradient[label] -= 1
        for (i, (si, ti)) in zip(s, t).enumerated() {
            XCTAssertEqual(2 / d * (si - ti), ceGradient[i], accuracy: 1e-12)
        }
        // another scale gives another target: the scale matters
        let other = Objectives.gradientMatchingTarget(trainable: s, frozen: m, label: label, scale: 1)
        XCTAssertGreaterThan(Objectives.maxAbsError(t, other), 0.1)
    }

    func testCrossEntropyAndItsBinaryForm() {
        let z = [2.0, -1.0, 0.5]
        let p = Objectives.softmax(z)
        XCTAssertEqual(p.reduce(0, +), 1, accuracy: 1e-12)
        XCTAssertEqual(Objectives.crossEntropy(z, label: 2), -log(p[2]), accuracy: 1e-12)
        // one logit: BCE-with-logits as CE over [0, z]
        for (logit, y) in [(1.3, 1), (1.3, 0), (-40.0, 1)] {
            let bce = max(logit, 0) - logit * Double(y) + log(1 + exp(-abs(logit)))
            XCTAssertEqual(Objectives.crossEntropy([logit], label: y), bce, accuracy: 1e-12)
        }
        XCTAssertEqual(Objectives.crossEntropy([1000, 0], label: 1), 1000, accuracy: 1e-9)  // no overflow
    }

    func testErrorMeasures() {
        XCTAssertEqual(Objectives.maxAbsError([1, 2, 3], [1, 2.5, 2]), 1)
        XCTAssertEqual(Objectives.meanSquaredError([1, 2], [0, 0]), 2.5)
        // relative to max(1, |reference|)
        XCTAssertEqual(Objectives.lossError([0.41, 21], reference: [0.4, 20]), 0.05, accuracy: 1e-12)
    }
}
