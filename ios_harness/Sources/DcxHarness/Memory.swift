#if canImport(Darwin)
import Darwin

/// The process's memory footprint as iOS accounts it (and kills on): `phys_footprint` now and its high-water mark,
/// in kB, from `task_info(TASK_VM_INFO)`; nil if the call fails.
public func physFootprintKB() -> (now: Int, peak: Int)? {
    var info = task_vm_info_data_t()
    var count = mach_msg_type_number_t(MemoryLayout<task_vm_info_data_t>.size / MemoryLayout<integer_t>.size)
    let status = withUnsafeMutablePointer(to: &info) {
        $0.withMemoryRebound(to: integer_t.self, capacity: Int(count)) {
            task_info(mach_task_self_, task_flavor_t(TASK_VM_INFO), $0, &count)
        }
    }
    guard status == KERN_SUCCESS else { return nil }
    return (Int(info.phys_footprint / 1024), Int(max(0, info.ledger_phys_footprint_peak) / 1024))
}
#endif
