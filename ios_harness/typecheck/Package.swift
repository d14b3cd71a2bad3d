// swift-tools-version: 5.9
// Linux only: compiles the harness's Core ML code against Sources/CoreML, a declaration-only stand-in for the Core ML
// API the harness calls (every body traps). It checks our Swift, not Core ML's behaviour; nothing here is run.
import PackageDescription

let package = Package(
    name: "DcxHarnessTypeCheck",
    targets: [
        .target(name: "CoreML"),
        .target(name: "DcxHarness", dependencies: ["CoreML"]),  // ../Sources/DcxHarness
        .executableTarget(name: "dcx-ios-harness", dependencies: ["DcxHarness"]),
        .testTarget(name: "DcxHarnessTests", dependencies: ["DcxHarness"]),
    ]
)
