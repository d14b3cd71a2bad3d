// dcx-ios-harness EXPORT_DIR [--json PATH] [--iterations N] [--warmup N]
//
// Runs every Core ML artifact of a `dcx export --format coreml` folder in Core ML and prints one JSON object.
// Exit codes: 0 every artifact matches its reference; 1 one or more do not; 2 bad usage or an unreadable folder.
import DcxHarness
import Foundation

let usage = "usage: dcx-ios-harness EXPORT_DIR [--json PATH] [--iterations N] [--warmup N]"

func fail(_ message: String, code: Int32) -> Never {
    FileHandle.standardError.write(Data("dcx-ios-harness: \(message)\n".utf8))
    exit(code)
}

struct CommandLineOptions {
    var exportDir: String?
    var jsonPath: String?
    var harness = HarnessOptions()
}

func parse(_ arguments: [String]) -> CommandLineOptions {
    var options = CommandLineOptions()
    var rest = arguments[...]
    func count(_ flag: String) -> Int {
        guard let text = rest.popFirst(), let n = Int(text), n >= 0 else {
            fail("\(flag): expects a count >= 0; \(usage)", code: 2)
        }
        return n
    }
    while let argument = rest.popFirst() {
        switch argument {
        case "--json":
            guard let path = rest.popFirst() else { fail("--json: expects a file path; \(usage)", code: 2) }
            options.jsonPath = path
        case "--iterations": options.harness.iterations = count(argument)
        case "--warmup": options.harness.warmup = count(argument)
        case "-h", "--help":
            print(usage)
            exit(0)
        default:
            if argument.hasPrefix("-") || options.exportDir != nil { fail("\(argument): unexpected; \(usage)", code: 2) }
            options.exportDir = argument
        }
    }
    return options
}

let options = parse(Array(CommandLine.arguments.dropFirst()))
guard let exportDir = options.exportDir else { fail("EXPORT_DIR is missing; \(usage)", code: 2) }

#if canImport(CoreML)
let report: RunReport
do {
    report = try await runHarness(exportFolder: URL(fileURLWithPath: exportDir), options: options.harness)
} catch {
    fail(describe(error), code: 2)
}
let json: String
do {
    json = try report.json()
} catch {
    fail("the report does not encode as JSON: \(error)", code: 1)
}
print(json)
if let path = options.jsonPath {
    do {
        try Data((json + "\n").utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
    } catch {
        fail("--json \(path): cannot be written (\(error.localizedDescription))", code: 2)
    }
}
exit(report.failed == 0 ? 0 : 1)
#else
fail("\(exportDir): Core ML runs only on macOS and iOS; this is a \(harnessTarget) build "
     + "(on Linux, `swift test` checks the reader, manifest and arithmetic)", code: 2)
#endif
