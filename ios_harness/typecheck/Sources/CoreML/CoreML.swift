// The Core ML declarations the harness uses, with the Swift signatures Core ML documents for iOS 16 / macOS 13.
// Bodies trap: this module exists to type-check ../Sources on Linux and is never run.
@_exported import Foundation

public enum MLComputeUnits: Int { case cpuOnly, cpuAndGPU, all, cpuAndNeuralEngine }
public enum MLFeatureType: Int { case invalid, int64, double, string, image, multiArray, dictionary, sequence }
public enum MLMultiArrayDataType: Int { case double, float32, float16, int32 }
public enum MLTaskState: Int { case suspended = 1, running, cancelling, completed, failed }

public class MLModelConfiguration {
    public init() {}
    public var computeUnits: MLComputeUnits = .all
}

public class MLMultiArrayConstraint {
    public var shape: [NSNumber] { fatalError() }
    public var dataType: MLMultiArrayDataType { fatalError() }
}

public class MLFeatureDescription {
    public var name: String { fatalError() }
    public var type: MLFeatureType { fatalError() }
    public var multiArrayConstraint: MLMultiArrayConstraint? { fatalError() }
}

public struct MLModelMetadataKey: Hashable {
    public let rawValue: String
    public static let creatorDefinedKey = MLModelMetadataKey(rawValue: "MLModelCreatorDefinedKey")
}

public class MLModelDescription {
    public var inputDescriptionsByName: [String: MLFeatureDescription] { fatalError() }
    public var outputDescriptionsByName: [String: MLFeatureDescription] { fatalError() }
    public var trainingInputDescriptionsByName: [String: MLFeatureDescription] { fatalError() }
    public var metadata: [MLModelMetadataKey: Any] { fatalError() }
}

public class MLMultiArray {
    public init(shape: [NSNumber], dataType: MLMultiArrayDataType) throws { fatalError() }
    public var shape: [NSNumber] { fatalError() }
    public var strides: [NSNumber] { fatalError() }
    public subscript(idx: Int) -> NSNumber {
        get { fatalError() }
        set { fatalError() }
    }
}

public class MLFeatureValue {
    public init(multiArray: MLMultiArray) { fatalError() }
    public init(int64: Int64) { fatalError() }
    public init(double: Double) { fatalError() }
    public var type: MLFeatureType { fatalError() }
    public var multiArrayValue: MLMultiArray? { fatalError() }
    public var int64Value: Int64 { fatalError() }
    public var doubleValue: Double { fatalError() }
}

public protocol MLFeatureProvider {
    func featureValue(for featureName: String) -> MLFeatureValue?
}

public protocol MLBatchProvider {
    var count: Int { get }
    func features(at index: Int) -> any MLFeatureProvider
}

public class MLDictionaryFeatureProvider: MLFeatureProvider {
    public init(dictionary: [String: Any]) throws { fatalError() }
    public func featureValue(for featureName: String) -> MLFeatureValue? { fatalError() }
}

public class MLArrayBatchProvider: MLBatchProvider {
    public init(array: [any MLFeatureProvider]) { fatalError() }
    public var count: Int { fatalError() }
    public func features(at index: Int) -> any MLFeatureProvider { fatalError() }
}

public class MLParameterKey: Hashable {
    public class var weights: MLParameterKey { fatalError() }
    public class var biases: MLParameterKey { fatalError() }
    public func scoped(to scope: String) -> MLParameterKey { fatalError() }
    public static func == (a: MLParameterKey, b: MLParameterKey) -> Bool { fatalError() }
    public func hash(into hasher: inout Hasher) {}
}

public class MLMetricKey: Hashable {
    public class var lossValue: MLMetricKey { fatalError() }
    public static func == (a: MLMetricKey, b: MLMetricKey) -> Bool { fatalError() }
    public func hash(into hasher: inout Hasher) {}
}

public protocol MLWritable {
    func write(to url: URL) throws
}

public class MLModel {
    public init(contentsOf url: URL, configuration: MLModelConfiguration) throws { fatalError() }
    public class func compileModel(at url: URL) async throws -> URL { fatalError() }
    public var modelDescription: MLModelDescription { fatalError() }
    public func prediction(from input: any MLFeatureProvider) throws -> any MLFeatureProvider { fatalError() }
    public func predictions(fromBatch inputBatch: any MLBatchProvider) throws -> any MLBatchProvider { fatalError() }
    public func parameterValue(for key: MLParameterKey) throws -> Any { fatalError() }
}

public class MLTask {
    public var state: MLTaskState { fatalError() }
    public var error: (any Error)? { fatalError() }
    public func resume() {}
}

public class MLUpdateContext {
    public var task: MLUpdateTask { fatalError() }
    public var model: any MLModel & MLWritable { fatalError() }
    public var metrics: [MLMetricKey: Any] { fatalError() }
}

public class MLUpdateTask: MLTask {
    public init(forModelAt modelURL: URL, trainingData: any MLBatchProvider, configuration: MLModelConfiguration?,
                completionHandler: @escaping (MLUpdateContext) -> Void) throws { fatalError() }
}

/// ../Sources/DcxHarness/Memory.swift needs Darwin's task_info; Linux has none.
public func physFootprintKB() -> (now: Int, peak: Int)? { fatalError() }
