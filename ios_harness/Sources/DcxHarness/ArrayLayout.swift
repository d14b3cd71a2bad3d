/// Storage offsets of a strided array's elements in logical (row-major) order: Core ML's outputs and parameters
/// need not be contiguous, and its linear subscript addresses storage (the sum of index times stride).
public func storageOffsets(shape: [Int], strides: [Int]) -> [Int] {
    precondition(shape.count == strides.count, "shape \(shape) and strides \(strides) differ in rank")
    var offsets = [0]
    for (size, stride) in zip(shape, strides) {
        offsets = offsets.flatMap { base in (0 ..< size).map { base + $0 * stride } }
    }
    return offsets
}

