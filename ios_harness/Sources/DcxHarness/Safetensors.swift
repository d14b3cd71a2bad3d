import Foundation

/// Element types of dcx reference files (docs/reference.md).
public enum DType: String, Codable {
    case f32 = "F32", f64 = "F64", i32 = "I32", i64 = "I64"

    public var byteCount: Int {
        switch self {
        case .f32, .i32: return 4
        case .f64, .i64: return 8
        }
    }
}

/// A tensor of a reference file. Values are held as `Double`, which represents every F32, I32 and F64 value
/// exactly, and I64 values up to 2^53 (class labels and item ids are far below).
public struct Tensor: Equatable {
    public let dtype: DType
    public let shape: [Int]
    public let values: [Double]

    public init(dtype: DType, shape: [Int], values: [Double]) {
        precondition(shape.reduce(1, *) == values.count, "shape \(shape) does not hold \(values.count) values")
        self.dtype = dtype
        self.shape = shape
        self.values = values
    }

    public var count: Int { values.count }

    /// Sample `index` along the leading (batch) axis, flattened.
    public func sample(_ index: Int) -> [Double] {
        let batch = shape.first ?? 1
        precondition(batch > 0 && values.count % batch == 0 && index < batch, "no sample \(index) in \(shape)")
        let size = values.count / batch
        return Array(values[index * size ..< (index + 1) * size])
    }
}

/// A safetensors file: 8-byte little-endian header length N, N bytes of JSON header, then raw little-endian data.
public struct SafetensorsFile {
    public let path: String
    public let metadata: [String: String]
    public let tensors: [String: Tensor]

    public init(contentsOf url: URL) throws {
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw HarnessError("\(url.path): cannot be read (\(error.localizedDescription)): re-run `dcx export`")
        }
        try self.init(data: data, path: url.path)
    }

    public init(data: Data, path: String) throws {
        let bytes = [UInt8](data)
        func fail(_ why: String) -> HarnessError {
            HarnessError("\(path): \(why): not a valid safetensors file; re-run `dcx export`")
        }
        guard bytes.count >= 8 else { throw fail("shorter than its 8-byte header length") }
        let headerLength = bytes[0 ..< 8].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        guard headerLength <= UInt64(bytes.count - 8) else { throw fail("header length \(headerLength) exceeds the file") }
        let dataStart = 8 + Int(headerLength)
        let header: [String: Any]
        do {
            guard let parsed = try JSONSerialization.jsonObject(with: Data(bytes[8 ..< dataStart])) as? [String: Any] else {
                throw fail("the header is not a JSON object")
            }
            header = parsed
        } catch let error as HarnessError {
            throw error
        } catch {
            throw fail("the header does not parse as JSON")
        }
        var metadata: [String: String] = [:]
        var tensors: [String: Tensor] = [:]
        for (name, value) in header {
            if name == "__metadata__" {
                guard let meta = value as? [String: String] else { throw fail("__metadata__ is not a string map") }
                metadata = meta
                continue
            }
            guard let entry = value as? [String: Any],
                  let dtypeName = entry["dtype"] as? String,
                  let shape = (entry["shape"] as? [Any])?.compactMap({ ($0 as? NSNumber)?.intValue }),
                  let offsets = (entry["data_offsets"] as? [Any])?.compactMap({ ($0 as? NSNumber)?.intValue }),
                  offsets.count == 2 else {
                throw fail("tensor \(name) lacks dtype, shape or data_offsets")
            }
            guard let dtype = DType(rawValue: dtypeName) else {
                throw HarnessError("\(path): tensor \(name) has dtype \(dtypeName); dcx references use F32, F64, I32, I64")
            }
            let count = shape.reduce(1, *)
            let begin = dataStart + offsets[0], end = dataStart + offsets[1]
            guard shape.allSatisfy({ $0 >= 0 }), offsets[0] <= offsets[1], end <= bytes.count,
                  offsets[1] - offsets[0] == count * dtype.byteCount else {
                throw fail("tensor \(name): data_offsets \(offsets) do not hold \(shape) \(dtypeName)")
            }
            tensors[name] = Tensor(dtype: dtype, shape: shape, values: Self.decode(bytes[begin ..< end], dtype))
        }
        self.path = path
        self.metadata = metadata
        self.tensors = tensors
    }

    private static func decode(_ raw: ArraySlice<UInt8>, _ dtype: DType) -> [Double] {
        let width = dtype.byteCount
        var out = [Double]()
        out.reserveCapacity(raw.count / width)
        var index = raw.startIndex
        while index < raw.endIndex {
            var bits: UInt64 = 0
            for k in 0 ..< width {
                bits |= UInt64(raw[index + k]) << (8 * UInt64(k))
            }
            switch dtype {
            case .f32: out.append(Double(Float(bitPattern: UInt32(truncatingIfNeeded: bits))))
            case .f64: out.append(Double(bitPattern: bits))
            case .i32: out.append(Double(Int32(bitPattern: UInt32(truncatingIfNeeded: bits))))
            case .i64: out.append(Double(Int64(bitPattern: bits)))
            }
            index += width
        }
        return out
    }

    public func tensor(_ name: String) throws -> Tensor {
        guard let t = tensors[name] else {
            throw HarnessError("\(path): tensor \(name) is missing: re-run `dcx export`")
        }
        return t
    }

    /// A metadata entry that holds a JSON list of strings (`inputs`, `outputs`, `trainable`).
    public func stringList(_ key: String) throws -> [String] {
        guard let text = metadata[key], let list = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String] else {
            throw HarnessError("\(path): metadata \(key) is missing or not a JSON list of names: re-run `dcx export`")
        }
        return list
    }
}
