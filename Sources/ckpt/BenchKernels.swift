import ArgumentParser
import Checkpoint
import QuantKernels
import Reports

#if canImport(Glibc)
  import Glibc
#endif

/// `ckpt bench kernels`: output GB/s of each numeric kernel on one core and on
/// all cores, next to memcpy on the same buffer sizes, measured in one run.
struct BenchKernels: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "kernels",
    abstract: "Measure numeric kernels (output GB/s) on a K2-sized expert next to memcpy.")

  @Option(help: "Rows of the weight (output features).") var rows = 2048
  @Option(help: "Columns of the weight (input features).") var columns = 7168
  @Option(help: "Repetitions per measurement (the best is reported).") var repeats = 5
  @Option(help: "Threads for the all-core column.") var jobs = Parallel.defaultJobs

  func validate() throws {
    guard rows > 0, columns > 0, columns % 128 == 0, repeats > 0, jobs > 0 else {
      throw ValidationError("rows and columns must be positive, columns a multiple of 128")
    }
  }

  /// Best wall time of `body` over the repetitions.
  func best(_ body: () -> Void) -> Double {
    var t = Double.infinity
    for _ in 0..<repeats {
      let t0 = now()
      body()
      t = min(t, now() - t0)
    }
    return t
  }

  func run() throws {
    let n = rows * columns
    var rng = SplitMix64(seed: 0xBE4C)
    let packed = UnsafeMutableRawBufferPointer.allocate(byteCount: n / 2, alignment: 64)
    let scales = UnsafeMutableRawBufferPointer.allocate(byteCount: n / 32 * 2, alignment: 64)
    let out = UnsafeMutableRawBufferPointer.allocate(byteCount: n * 4, alignment: 64)
    let out2 = UnsafeMutableRawBufferPointer.allocate(byteCount: n * 4, alignment: 64)
    let weights = UnsafeMutableBufferPointer<Float>.allocate(capacity: n)
    let codes = UnsafeMutableRawBufferPointer.allocate(byteCount: n, alignment: 64)
    let (sr, sc) = FP8Block.scaleShape(rows: rows, columns: columns)
    let blockScales = UnsafeMutableBufferPointer<Float>.allocate(capacity: sr * sc)
    defer {
      packed.deallocate(); scales.deallocate(); out.deallocate(); out2.deallocate()
      weights.deallocate(); codes.deallocate(); blockScales.deallocate()
    }
    for i in 0..<(n / 2) { packed[i] = UInt8.random(in: 0...255, using: &rng) }
    for i in 0..<(n / 32) {
      // BF16 scales around 2^-8 … 2^-6, like K2's.
      let bits = UInt16(0x3B80 + UInt16.random(in: 0...0x17F, using: &rng))
      scales.storeBytes(of: bits, toByteOffset: 2 * i, as: UInt16.self)
    }
    for i in 0..<n { weights[i] = Float.random(in: -0.05...0.05, using: &rng) }
    memset(out.baseAddress!, 0, out.count)
    memset(out2.baseAddress!, 1, out2.count)

    let layout = try Int4Layout(rows: rows, columns: columns, strategy: .group(size: 32), scaleType: .bf16)
    func memcpyRate(_ bytes: Int) -> Double {
      let t = best { memcpy(out2.baseAddress!, out.baseAddress!, bytes) }
      return Double(bytes) / t
    }
    print("kernel paths: automatic = \(KernelPath.automatic.resolved); AVX-512 \(KernelPath.avx512.isAvailable ? "available" : "not available") on this CPU")
    print("kernels on [\(rows), \(columns)] (\(Format.grouped(n)) elements), best of \(repeats), \(jobs) thread(s) for the all-core column")
    var table = TextTable(["kernel", "output", "1 core", "all cores", "memcpy (same bytes, 1 core)", "1 core / memcpy"], alignments: [.left, .right, .right, .right, .right, .right])
    func row(_ name: String, _ bytes: Int, _ one: Double, _ all: Double) {
      let m = memcpyRate(bytes)
      table.add([name, Format.bytes(bytes), Format.rate(Double(bytes) / one), Format.rate(Double(bytes) / all), Format.rate(m), Format.fixed(100 * Double(bytes) / one / m, 0) + " %"])
    }
    // Kernels with a run-time AVX-512 path get one line per path.
    let paths = KernelPath.allCases.filter { $0 != .automatic && $0.isAvailable }
    for (type, label) in [(Int4OutputType.bf16, "INT4 g32 -> BF16"), (.f16, "INT4 g32 -> FP16"), (.f32, "INT4 g32 -> FP32")] {
      let bytes = layout.outputByteCount(type)
      let dst = UnsafeMutableRawBufferPointer(rebasing: out[..<bytes])
      for path in paths {
        let one = best { _ = Int4Dequantize.matrix(layout, packed: UnsafeRawBufferPointer(packed), scales: UnsafeRawBufferPointer(scales), zeroPoints: nil, groupIndex: nil, output: dst, outputType: type, threads: 1, path: path) }
        let all = best { _ = Int4Dequantize.matrix(layout, packed: UnsafeRawBufferPointer(packed), scales: UnsafeRawBufferPointer(scales), zeroPoints: nil, groupIndex: nil, output: dst, outputType: type, threads: jobs, path: path) }
        row("\(label) (\(path))", bytes, one, all)
      }
    }
    for path in paths {
      let one = best { _ = FP8Block.quantize(weights: UnsafeBufferPointer(weights), rows: rows, columns: columns, codes: codes, scales: blockScales, jobs: 1, path: path) }
      let all = best { _ = FP8Block.quantize(weights: UnsafeBufferPointer(weights), rows: rows, columns: columns, codes: codes, scales: blockScales, jobs: jobs, path: path) }
      row("FP32 -> FP8 E4M3 block 128 (\(path))", n, one, all)
    }
    do {
      let dst = UnsafeMutableBufferPointer<Float>(start: out.baseAddress!.assumingMemoryBound(to: Float.self), count: n)
      let one = best { FP8Block.dequantize(codes: UnsafeRawBufferPointer(codes), scales: UnsafeBufferPointer(blockScales), rows: rows, columns: columns, into: dst, jobs: 1) }
      let all = best { FP8Block.dequantize(codes: UnsafeRawBufferPointer(codes), scales: UnsafeBufferPointer(blockScales), rows: rows, columns: columns, into: dst, jobs: jobs) }
      row("FP8 block 128 -> FP32", n * 4, one, all)
    }
    do {
      let src = UnsafeRawBufferPointer(UnsafeMutableRawBufferPointer(weights))
      let dst = UnsafeMutableRawBufferPointer(rebasing: out[..<(n * 2)])
      let one = best { FloatConversion.convertRows(src, from: .f32, to: .bf16, rows: rows, columns: columns, into: dst, jobs: 1) }
      let all = best { FloatConversion.convertRows(src, from: .f32, to: .bf16, rows: rows, columns: columns, into: dst, jobs: jobs) }
      row("FP32 -> BF16", n * 2, one, all)
    }
    do {
      let src = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(out)[..<(n * 2)])
      let one = best { _ = FloatScan.countNonFinite(src, .bf16) }
      row("BF16 NaN/Inf scan (input bytes)", n * 2, one, one)
    }
    print(table.render(), terminator: "")
  }
}

/// A fast seeded generator for benchmark inputs (SplitMix64): setting up
/// 15 million random elements through the system generator takes one system
/// call each.
struct SplitMix64: RandomNumberGenerator {
  var state: UInt64
  init(seed: UInt64) { state = seed }
  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}
