// swift-tools-version: 5.9
// dcx's iOS/macOS harness: runs the Core ML artifacts of a `dcx export --format coreml` folder in Core ML itself
// and compares them with the references that travel with them.
import PackageDescription

let package = Package(
    name: "DcxHarness",
    platforms: [.iOS(.v16), .macOS(.v13)],
    products: [
        .library(name: "DcxHarness", targets: ["DcxHarness"]),
        .executable(name: "dcx-ios-harness", targets: ["dcx-ios-harness"]),
    ],
    targets: [
        .target(name: "DcxHarness"),
        .executableTarget(name: "dcx-ios-harness", dependencies: ["DcxHarness"]),
        .testTarget(name: "DcxHarnessTests", dependencies: ["DcxHarness"]),
    ]
)
