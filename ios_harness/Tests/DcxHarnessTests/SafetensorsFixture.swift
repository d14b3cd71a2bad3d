import Foundation
@testable import DcxHarness

/// Writes safetensors bytes the way docs/reference.md lays them out, for tests that build their own files.
func safetensorsBytes(_ tensors: [(name: String, dtype: DType, shape: [Int], values: [Double])],
                      metadata: [String: String] = [:]) -> Data {
    var header: [String: Any] = metadata.isEmpty ? [:] : ["__metadata__": metadata]
    var body = Data()
    for t in tensors {
        let begin = body.count
        for v in t.values {
            switch t.dtype {
            case .f32: withUnsafeBytes(of: Float(v).bitPattern.littleEndian) { body.append(contentsOf: $0) }
            case .f64: withUnsafeBytes(of: v.bitPattern.littleEndian) { body.append(contentsOf: $0) }
            case .i32: withUnsafeBytes(of: Int32(v).littleEndian) { body.append(contentsOf: $0) }
            case .i64: withUnsafeBytes(of: Int64(v).littleEndian) { body.append(contentsOf: $0) }
            }
        }
        header[t.name] = ["dtype": t.dtype.rawValue, "shape": t.shape, "data_offsets": [begin, body.count]]
    }
    let json = try! JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
    var out = Data()
    withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
    return out + json + body
}

/// A header whose JSON is given as text, followed by `body` (for malformed files).
func safetensorsBytes(rawHeader: String, body: Data = Data()) -> Data {
    let json = Data(rawHeader.utf8)
    var out = Data()
    withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
    return out + json + body
}
