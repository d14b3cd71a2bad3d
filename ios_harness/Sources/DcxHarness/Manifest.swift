import Foundation
#if canImport(CryptoKit)
import CryptoKit
#endif

/// The part of `manifest.json` (toolchain/dcx/manifest.py, schema 3) the harness reads; other fields are ignored.
public struct Manifest: Decodable {
    public static let schemaVersion = 3

    public let schema: Int
    public let artifacts: [Artifact]

    public struct Optimizer: Decodable, Equatable {
        public let lr: Double
    }

    /// The numbers `measure_deviation` wrote: the exported Core ML formulation trained in dcx's reference
    /// interpreter of the spec against eager PyTorch SGD (3 significant digits).
    public struct Measured: Decodable, Equatable {
        public let weight_max_abs_diff: Double?
        public let weight_max_abs_diff_by_param: [String: Double]?
    }

    public struct Deviation: Decodable, Equatable {
        public let measured: Measured?
        public let parameters: [String]
    }

    public struct ReferenceInfo: Decodable, Equatable {
        public let file: String
        public let sha256: String
        public let steps: Int
    }

    public struct Artifact: Decodable {
        public let program: String
        public let kind: String
        public let format: String
        public let file: String
        public let optimizer: Optimizer?
        public let weights: [String: String]
        public let deviations: [Deviation]
        public let reference: ReferenceInfo

        /// Trainable in PyTorch but frozen in Core ML (a documented deviation names them).
        public var frozenInCoreML: Set<String> { Set(deviations.flatMap(\.parameters)) }

        /// What dcx's reference interpreter measured for this artifact's formulation, if anything.
        public var measured: Measured? { deviations.lazy.compactMap(\.measured).first }
    }

    public static func decode(_ data: Data, path: String) throws -> Manifest {
        struct Schema: Decodable { let schema: Int? }
        let schema: Int?
        do {
            schema = try JSONDecoder().decode(Schema.self, from: data).schema
        } catch {
            throw HarnessError("\(path) does not parse as a JSON object: re-run `dcx export --force`")
        }
        guard schema == schemaVersion else {
            throw HarnessError("\(path): manifest schema \(schema.map(String.init) ?? "missing") was written by another "
                               + "dcx version (this harness reads \(schemaVersion)): re-export with `dcx export --force`")
        }
        do {
            return try JSONDecoder().decode(Manifest.self, from: data)
        } catch let DecodingError.keyNotFound(key, context) {
            throw HarnessError("\(path): field \(fieldPath(context.codingPath + [key])) is missing: re-export")
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            throw HarnessError("\(path): field \(fieldPath(context.codingPath)) has the wrong type: re-export")
        } catch {
            throw HarnessError("\(path) does not decode (\(error.localizedDescription)): re-export")
        }
    }

    private static func fieldPath(_ keys: [CodingKey]) -> String {
        keys.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined().trimmingCharacters(in: ["."])
    }
}

/// An export folder: its manifest and the files it names, which must lie inside it.
public struct ExportFolder {
    public let root: URL
    public let manifest: Manifest

    public init(_ root: URL) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: root.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw HarnessError("\(root.path) is not a directory: pass the folder that `dcx export --out` wrote")
        }
        let path = root.appendingPathComponent("manifest.json")
        guard let data = FileManager.default.contents(atPath: path.path) else {
            throw HarnessError("\(path.path) is missing: run `dcx export --format coreml --out \(root.path)` first")
        }
        self.root = root
        manifest = try Manifest.decode(data, path: path.path)
        for (i, artifact) in manifest.artifacts.enumerated() {
            _ = try resolve(artifact.file, field: "artifacts[\(i)].file")
            _ = try resolve(artifact.reference.file, field: "artifacts[\(i)].reference.file")
        }
    }

    /// The Core ML artifacts, in manifest order.
    public var coreMLArtifacts: [Manifest.Artifact] { manifest.artifacts.filter { $0.format == "coreml" } }

    /// `root/relative`, refused when `relative` is absolute or climbs out of the folder.
    public func resolve(_ relative: String, field: String) throws -> URL {
        if relative.hasPrefix("/") || relative.split(separator: "/").contains("..") {
            throw HarnessError("\(root.path)/manifest.json: \(field) \(relative) lies outside the export folder: "
                               + "refused; re-export")
        }
        return root.appendingPathComponent(relative)
    }

    /// The artifact's reference, checked against the manifest's sha256 where CryptoKit is available.
    public func reference(of artifact: Manifest.Artifact) throws -> ProgramReference {
        let url = try resolve(artifact.reference.file, field: "reference.file")
        #if canImport(CryptoKit)
        if let data = FileManager.default.contents(atPath: url.path) {
            let digest = SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
            guard digest == artifact.reference.sha256 else {
                throw HarnessError("\(url.path): sha256 differs from manifest.json: re-export the folder")
            }
        }
        #endif
        let reference = try ProgramReference(contentsOf: url)
        guard reference.program == artifact.program, reference.kind == artifact.kind,
              reference.steps == artifact.reference.steps else {
            throw HarnessError("\(url.path): holds \(reference.program) (\(reference.kind), \(reference.steps) steps), "
                               + "manifest.json says \(artifact.program) (\(artifact.kind), \(artifact.reference.steps) "
                               + "steps): re-export the folder")
        }
        return reference
    }
}
