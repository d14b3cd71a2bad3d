import Foundation

/// `reference/<program>.safetensors` read as docs/reference.md defines it: the fixed inputs and eager outputs of
/// an inference program; the batches, per-step losses and initial/final trainable parameters of a training program.
public struct ProgramReference {
    public let file: SafetensorsFile
    public let program: String
    public let kind: String
    public let inputs: [String]
    public let outputs: [String]
    public let trainable: [String]
    public let steps: Int
    public let lr: Double?

    public init(contentsOf url: URL) throws {
        try self.init(file: SafetensorsFile(contentsOf: url))
    }

    public init(file: SafetensorsFile) throws {
        self.file = file
        let meta = file.metadata
        guard meta["dcx.reference.schema"] == "1" else {
            throw HarnessError("\(file.path): reference schema \(meta["dcx.reference.schema"] ?? "missing") is not 1: "
                               + "re-export with this dcx")
        }
        program = meta["program"] ?? ""
        kind = meta["kind"] ?? ""
        guard kind == "train" || kind == "infer" else {
            throw HarnessError("\(file.path): metadata kind \(kind.isEmpty ? "missing" : kind) is not train or infer")
        }
        inputs = try file.stringList("inputs")
        outputs = try file.stringList("outputs")
        trainable = try file.stringList("trainable")
        steps = Int(meta["steps"] ?? "0") ?? 0
        lr = meta["lr"].flatMap(Double.init)
        if kind == "train" && (steps < 1 || lr == nil) {
            throw HarnessError("\(file.path): a training reference needs metadata steps >= 1 and lr")
        }
    }

    public func input(_ name: String) throws -> Tensor { try file.tensor("input/\(name)") }
    public func output(_ name: String) throws -> Tensor { try file.tensor("output/\(name)") }
    public func batch(_ step: Int, _ name: String) throws -> Tensor { try file.tensor("batch/\(step)/\(name)") }
    public func initial(_ parameter: String) throws -> Tensor { try file.tensor("param/initial/\(parameter)") }
    public func final(_ parameter: String) throws -> Tensor { try file.tensor("param/final/\(parameter)") }

    /// Eager PyTorch loss of every step, before its update.
    public func losses() throws -> [Double] {
        let t = try file.tensor("loss")
        guard t.count == steps else {
            throw HarnessError("\(file.path): loss holds \(t.count) values for \(steps) steps: re-run `dcx export`")
        }
        return t.values
    }
}
