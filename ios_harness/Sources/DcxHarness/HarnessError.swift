import Foundation

/// A problem with the export folder or the command line: one line that names the file or flag and the fix.
public struct HarnessError: Error, CustomStringConvertible, Equatable {
    public let message: String

    public init(_ message: String) {
        self.message = message
    }

    public var description: String { message }
}
