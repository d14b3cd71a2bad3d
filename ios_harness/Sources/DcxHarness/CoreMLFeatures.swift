#if canImport(CoreML)
import CoreML

extension MLMultiArray {
    /// The elements in logical (row-major) order, whatever the strides.
    var logicalValues: [Double] {
        storageOffsets(shape: shape.map(\.intValue), strides: strides.map(\.intValue)).map { self[$0].doubleValue }
    }
}

/// `values` (one sample or one whole input, in row-major order) as a feature of the kind `description` declares:
/// the declared shape and element type; integer types get rounded values.
func featureValue(_ values: [Double], for description: MLFeatureDescription) throws -> MLFeatureValue {
    switch description.type {
    case .multiArray:
        guard let constraint = description.multiArrayConstraint else {
            throw HarnessError("feature \(description.name) declares no multi-array shape")
        }
        let shape = constraint.shape.map(\.intValue)
        guard shape.reduce(1, *) == values.count else {
            throw HarnessError("feature \(description.name): the model takes \(shape), the reference holds "
                               + "\(values.count) values: re-export the folder")
        }
        let array = try MLMultiArray(shape: constraint.shape, dataType: constraint.dataType)
        let offsets = storageOffsets(shape: shape, strides: array.strides.map(\.intValue))
        for (offset, value) in zip(offsets, values) {
            array[offset] = constraint.dataType == .int32 ? NSNumber(value: Int32(value.rounded()))
                                                          : NSNumber(value: value)
        }
        return MLFeatureValue(multiArray: array)
    case .int64 where values.count == 1:
        return MLFeatureValue(int64: Int64(values[0].rounded()))
    case .double where values.count == 1:
        return MLFeatureValue(double: values[0])
    default:
        throw HarnessError("feature \(description.name): type \(description.type.rawValue) with \(values.count) "
                           + "values is not something dcx exports")
    }
}

/// A numeric output in row-major order.
func outputValues(_ features: MLFeatureProvider, _ name: String) throws -> [Double] {
    guard let value = features.featureValue(for: name) else {
        throw HarnessError("the model produced no output \(name)")
    }
    if let array = value.multiArrayValue { return array.logicalValues }
    switch value.type {
    case .int64: return [Double(value.int64Value)]
    case .double: return [value.doubleValue]
    default: throw HarnessError("output \(name) is not numeric (\(value.type.rawValue))")
    }
}

/// Per-sample prediction inputs of batch `step` (training) or the fixed inputs (`step` nil) of a reference.
func referenceFeatures(_ model: MLModel, _ reference: ProgramReference, step: Int?) throws -> [[String: MLFeatureValue]] {
    let inputs = model.modelDescription.inputDescriptionsByName
    let tensors = try inputs.keys.map { name in (name, try step.map { try reference.batch($0, name) } ?? reference.input(name)) }
    guard let step else {
        return [try Dictionary(uniqueKeysWithValues: tensors.map { ($0.0, try featureValue($0.1.values, for: inputs[$0.0]!)) })]
    }
    let batch = tensors.first?.1.shape.first ?? 0
    guard tensors.allSatisfy({ $0.1.shape.first == batch }) else {
        throw HarnessError("\(reference.file.path): the tensors of batch \(step) differ in their leading size")
    }
    return try (0 ..< batch).map { i in
        try Dictionary(uniqueKeysWithValues: tensors.map { ($0.0, try featureValue($0.1.sample(i), for: inputs[$0.0]!)) })
    }
}

func batchProvider(_ samples: [[String: MLFeatureValue]]) throws -> MLArrayBatchProvider {
    MLArrayBatchProvider(array: try samples.map { try MLDictionaryFeatureProvider(dictionary: $0) })
}
#endif
