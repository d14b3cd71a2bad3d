import Foundation

/// The app-side arithmetic of dcx's Core ML training formulations (toolchain/dcx/formats/coreml): the loss an app
/// reports per step and the gradient-matching target it feeds before every update. Float64, as dcx computes it.
public enum Objectives {
    /// Class logits as the exported loss sees them: one logit `z` (BCE-with-logits exported as 2-class CE) is [0, z].
    public static func classLogits(_ logits: [Double]) -> [Double] {
        logits.count == 1 ? [0, logits[0]] : logits
    }

    public static func softmax(_ z: [Double]) -> [Double] {
        let top = z.max() ?? 0
        let e = z.map { Foundation.exp($0 - top) }
        let total = e.reduce(0, +)
        return e.map { $0 / total }
    }

    /// Softmax cross-entropy of one sample; `label` is the class index.
    public static func crossEntropy(_ logits: [Double], label: Int) -> Double {
        let z = classLogits(logits)
        let top = z.max() ?? 0
        let logSum = top + Foundation.log(z.reduce(0) { $0 + Foundation.exp($1 - top) })
        return logSum - z[label]
    }

    /// DC-CCL's gradient-matching MSE target: `s - k (softmax(m + s) - onehot(y))`. With an MSE that averages over
    /// the D logits, `k = D / 2` makes the MSE gradient in `s` equal the gradient of `CE(m + s, y)`.
    public static func gradientMatchingTarget(trainable s: [Double], frozen m: [Double], label: Int,
                                              scale k: Double) -> [Double] {
        precondition(s.count == m.count && label < s.count, "logits of different sizes or label out of range")
        var p = softmax(zip(s, m).map { $0 + $1 })
        p[label] -= 1
        return zip(s, p).map { $0 - k * $1 }
    }

    /// Mean over the elements of `(a - b)^2`.
    public static func meanSquaredError(_ a: [Double], _ b: [Double]) -> Double {
        precondition(a.count == b.count && !a.isEmpty, "MSE of \(a.count) and \(b.count) values")
        return zip(a, b).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) } / Double(a.count)
    }

    public static func maxAbsError(_ a: [Double], _ b: [Double]) -> Double {
        precondition(a.count == b.count, "comparing \(a.count) with \(b.count) values")
        return zip(a, b).reduce(0) { Swift.max($0, Swift.abs($1.0 - $1.1)) }
    }

    /// dcx's loss error: the largest per-step difference relative to max(1, |reference|).
    public static func lossError(_ got: [Double], reference: [Double]) -> Double {
        precondition(got.count == reference.count, "comparing \(got.count) with \(reference.count) losses")
        return zip(got, reference).reduce(0) { Swift.max($0, Swift.abs($1.0 - $1.1) / Swift.max(1, Swift.abs($1.1))) }
    }
}
