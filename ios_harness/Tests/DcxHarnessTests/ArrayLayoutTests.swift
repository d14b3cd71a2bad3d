import XCTest
@testable import DcxHarness

final class ArrayLayoutTests: XCTestCase {
    func testStorageOffsetsFollowStrides() {
        XCTAssertEqual(storageOffsets(shape: [2, 3], strides: [3, 1]), [0, 1, 2, 3, 4, 5])
        XCTAssertEqual(storageOffsets(shape: [2, 3], strides: [1, 2]), [0, 2, 4, 1, 3, 5])  // column-major storage
        XCTAssertEqual(storageOffsets(shape: [2, 2], strides: [8, 1]), [0, 1, 8, 9])  // padded rows
        XCTAssertEqual(storageOffsets(shape: [], strides: []), [0])
        XCTAssertEqual(storageOffsets(shape: [1, 10, 1, 1], strides: [10, 1, 1, 1]), Array(0 ..< 10))
    }
}
