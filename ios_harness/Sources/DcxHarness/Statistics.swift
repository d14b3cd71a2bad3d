import Foundation

/// Latency summary with the native runner's definitions (runtimes/native/src/measure.cpp): `trimmed_mean` drops the
/// fastest and slowest 10 % (floor) of the samples; p50 and p90 interpolate linearly between order statistics.
public struct LatencySummary: Codable, Equatable {
    public let mean: Double
    public let trimmed_mean: Double
    public let p50: Double
    public let p90: Double
    public let min: Double
    public let max: Double

    public init?(_ samples: [Double]) {
        guard !samples.isEmpty else { return nil }
        let sorted = samples.sorted()
        let trim = sorted.count / 10
        func quantile(_ q: Double) -> Double {
            let position = q * Double(sorted.count - 1)
            let lo = Int(position.rounded(.down)), hi = Swift.min(lo + 1, sorted.count - 1)
            return sorted[lo] + (sorted[hi] - sorted[lo]) * (position - Double(lo))
        }
        mean = sorted.reduce(0, +) / Double(sorted.count)
        let kept = sorted[trim ..< sorted.count - trim]
        trimmed_mean = kept.reduce(0, +) / Double(kept.count)
        p50 = quantile(0.5)
        p90 = quantile(0.9)
        min = sorted[0]
        max = sorted[sorted.count - 1]
    }
}

/// Milliseconds on a monotonic clock.
public struct Stopwatch {
    private let start = DispatchTime.now().uptimeNanoseconds

    public init() {}

    public var ms: Double { Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6 }
}
