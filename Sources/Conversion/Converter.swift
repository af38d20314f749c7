import Checkpoint
import Dispatch
import QuantKernels
import SafeTensors
import StrictJSON
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// What happened to one output tensor's values.
public struct TensorExactness: Sendable {
  public let name: String
  /// `converted` (dequantized or FP8 codes), `scales` (FP8 `weight_scale_inv`,
  /// part of a converted weight, not counted on its own), `cast`, or `copied`.
  public let action: String
  /// Elements whose output is not exactly the source value (0 when exact).
  public let inexact: Int
  /// Outputs that are NaN or ±inf although the source is finite (FP16 overflow).
  public let overflow: Int
  /// Largest `|out − exact|` and `|out − exact| / |exact|` over the tensor (0 when exact).
  public let maxAbsError: Double
  public let maxRelError: Double
  /// For `ckpt requantize`'s `X.weight_packed`: groups recovered, ambiguous and
  /// requantized, errors; `inexact` then counts requantized groups.
  public var requant: Int4RequantizeStats? = nil
  public var isExact: Bool { inexact == 0 && overflow == 0 }
}

/// Per-shard results.
public struct ShardResult: Sendable {
  public let shard: String
  public let sha256: String?
  public let bytes: Int
  /// Skipped because a journal entry verified (resume).
  public let skipped: Bool
  public let tensors: [TensorExactness]
}

/// Options of one conversion run.
public struct ConvertOptions: Sendable {
  public var jobs: Int
  /// Compute everything but write nothing (for `--require-exact` and `--dry-run` checks).
  public var computeOnly: Bool
  /// Called with output bytes done, after each tensor.
  public var progress: (@Sendable (Int) -> Void)?
  /// Called once before converting, with the output bytes still to write.
  public var started: (@Sendable (Int) -> Void)?
  /// Write shards with `O_DIRECT` where the file system allows (see ``PipelinedSink``).
  public var directIO: Bool
  public init(
    jobs: Int = Parallel.defaultJobs, computeOnly: Bool = false, directIO: Bool = true,
    started: (@Sendable (Int) -> Void)? = nil, progress: (@Sendable (Int) -> Void)? = nil
  ) {
    self.started = started
    self.jobs = jobs
    self.computeOnly = computeOnly
    self.directIO = directIO
    self.progress = progress
  }
}

/// Reads byte ranges of files, in the order they will be consumed, in a
/// background thread at most `window` bytes ahead of the consumer, so
/// memory-mapped reads find their pages in the cache (faulting a cold mapping
/// measured 3× slower than reading the file first; Docs/PERFORMANCE.md).
/// `convert` reads one shard front to back; `diff` reads A's and B's tensors
/// interleaved, in whatever order each file holds them.
public final class Prefetcher: @unchecked Sendable {
  private let position = Atomic<Int>(0)
  private let stopped = Atomic<Bool>(false)
  private let done = DispatchSemaphore(value: 0)
  private let wake = DispatchSemaphore(value: 0)

  /// Starts the thread on `items`, read in this order (8 MiB steps of 256 KiB
  /// reads into one buffer that stays in L2: an 8 MiB destination made the
  /// copy cost as much CPU as the requantize kernel).
  public init(_ items: [(path: String, range: Range<Int>)], window: Int) {
    DispatchQueue.global().async { [self] in
      var fds: [String: Int32] = [:]
      let piece = 256 << 10
      let buffer = UnsafeMutableRawPointer.allocate(byteCount: piece, alignment: 4096)
      var consumed = 0
      outer: for (path, range) in items {
        let fd: Int32
        if let f = fds[path] {
          fd = f
        } else {
          fd = open(path, O_RDONLY | O_CLOEXEC)
          if fd >= 0 { _ = posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL) }
          fds[path] = fd
        }
        var offset = range.lowerBound
        while offset < range.upperBound {
          if stopped.load(ordering: .relaxed) { break outer }
          if consumed >= position.load(ordering: .relaxed) + window {
            _ = wake.wait(timeout: .now() + .milliseconds(50))
            continue
          }
          let want = min(piece, range.upperBound - offset)
          let n = fd >= 0 ? pread(fd, buffer, want, off_t(offset)) : -1
          let got = n > 0 ? n : want  // an unreadable range is skipped; the consumer reports it
          offset += got
          consumed += got
        }
      }
      buffer.deallocate()
      for fd in fds.values where fd >= 0 { close(fd) }
      done.signal()
    }
  }

  /// The consumer has used `offset` bytes of the sequence.
  public func advance(to offset: Int) {
    if offset > position.load(ordering: .relaxed) {
      position.store(offset, ordering: .relaxed)
      wake.signal()
    }
  }

  /// Stops the thread and waits for it.
  public func stop() {
    stopped.store(true, ordering: .relaxed)
    wake.signal()
    done.wait()
  }
}

/// Streams one shard of a plan from its memory-mapped input into its output.
public enum Converter {
  /// Converts (or, with `computeOnly`, only computes) one shard.
  ///
  /// Memory: one scratch buffer per output kind, sized for the largest tensor
  /// (FP32 values, output codes), reused for every tensor; input pages are
  /// released after each tensor, so RSS stays near those buffers.
  public static func convert(
    _ shard: ShardPlan, plan: ConversionPlan, input checkpoint: Checkpoint, output directory: String, options: ConvertOptions
  ) throws(ConversionError) -> ShardResult {
    let inputPath = checkpoint.pathOf(shard.input)
    let file: SafeTensorsFile
    do { file = try SafeTensorsFile(path: inputPath) } catch {
      throw ConversionError("unreadable-shard", file: shard.input, "\(error)")
    }
    file.mapping.adviseSequential()
    var writer: SafeTensorsWriter? = nil
    nonisolated(unsafe) var sink: PipelinedSink? = nil
    if !options.computeOnly {
      do {
        writer = try SafeTensorsWriter(
          path: directory + "/" + shard.output, tensors: shard.tensors.map(\.planned),
          metadata: file.header.metadata ?? SafeTensorsWriter.defaultMetadata, order: .reference,
          sink: { (path) throws(SafeTensorsError) in
            let s = try PipelinedSink(path: path, direct: options.directIO)
            sink = s
            return s
          })
      } catch {
        throw ConversionError("write-failed", file: shard.output, "\(error)")
      }
    }
    let sources = Dictionary(shard.tensors.map { ($0.planned.name, $0.source) }, uniquingKeysWith: { a, _ in a })
    let order = writer?.tensors ?? shard.tensors.map(\.planned)
    var scratch = Scratch()
    scratch.stash.directory = options.computeOnly || directory.isEmpty ? nil : directory
    defer { scratch.free() }
    var results: [TensorExactness] = []
    let jobs = max(1, options.jobs)
    // Read ahead: a thread reads the input sequentially (as `cat` would) up
    // to 256 MiB past the tensor being converted, so page faults on the
    // mapping find the page cache filled (faulting a cold mapping measured 3×
    // slower than reading the file first; Docs/PERFORMANCE.md).
    // An archive is read through its chunks instead (decoded on demand).
    let reader = Prefetcher(file.mapping.isStored ? [] : [(inputPath, 0..<file.mapping.count)], window: 256 << 20)
    defer { reader.stop() }
    for planned in order {
      guard let source = sources[planned.name] else { continue }
      if let hi = source.inputNames.compactMap({ try? file.info($0) }).map({ file.fileRange(of: $0).upperBound }).max() {
        reader.advance(to: hi)
      }
      let r = try produce(planned, source: source, file: file, shard: shard.input, plan: plan, jobs: jobs, scratch: &scratch) {
        (bytes: UnsafeRawBufferPointer) throws(ConversionError) in
        guard let w = writer else { return }
        do { try w.write(bytes, for: planned.name) } catch {
          throw ConversionError("write-failed", file: shard.output, tensor: planned.name, "\(error)")
        }
      }
      results.append(r)
      options.progress?(planned.byteCount ?? 0)
    }
    var digest: String? = nil
    if let w = writer {
      do { try w.finish() } catch { throw ConversionError("write-failed", file: shard.output, "\(error)") }
      digest = sink?.sha256
    }
    file.mapping.release(0..<file.mapping.count)
    return ShardResult(shard: shard.output, sha256: digest, bytes: writer?.fileSize ?? shard.outputBytes, skipped: false, tensors: results)
  }

  /// Reusable buffers, grown as needed.
  struct Scratch {
    var values: UnsafeMutableRawBufferPointer = UnsafeMutableRawBufferPointer(start: nil, count: 0)
    var output: UnsafeMutableRawBufferPointer = UnsafeMutableRawBufferPointer(start: nil, count: 0)
    var scales: UnsafeMutableRawBufferPointer = UnsafeMutableRawBufferPointer(start: nil, count: 0)
    /// Scales computed with a module's packed weight and written out later
    /// (reference order puts I32 before BF16): kept in an unlinked file, not
    /// in memory, so RSS stays bounded whatever the shard holds.
    var stash = ScaleStash()

    static func ensure(_ b: inout UnsafeMutableRawBufferPointer, _ n: Int) {
      if b.count < n {
        b.deallocate()
        b = UnsafeMutableRawBufferPointer.allocate(byteCount: max(n, 64), alignment: 64)
      }
    }

    mutating func free() {
      stash.close()
      values.deallocate()
      output.deallocate()
      scales.deallocate()
    }
  }

  /// Computes one output tensor and hands its bytes to `emit`.
  static func produce(
    _ planned: PlannedTensor, source: TensorSource, file: SafeTensorsFile, shard: String, plan: ConversionPlan, jobs: Int,
    scratch: inout Scratch, emit: (UnsafeRawBufferPointer) throws(ConversionError) -> Void
  ) throws(ConversionError) -> TensorExactness {
    switch source {
    case .copy(let name):
      let info = try tensorInfo(name, file, shard)
      try withTensor(info, file, shard) { (b) throws(ConversionError) in try emit(b) }
      return TensorExactness(name: planned.name, action: "copied", inexact: 0, overflow: 0, maxAbsError: 0, maxRelError: 0)

    case .cast(let name, let from):
      let info = try tensorInfo(name, file, shard)
      let n = info.elementCount
      Scratch.ensure(&scratch.values, 4 * n)
      let values = UnsafeMutableRawBufferPointer(rebasing: scratch.values[..<(4 * n)])
      try withTensor(info, file, shard) { (b) throws(ConversionError) in
        if from == .f32 {
          values.copyMemory(from: b)
        } else {
          FloatConversion.convertRows(b, from: floatFormat(from), to: .f32, rows: 1, columns: n, into: values, jobs: jobs)
        }
      }
      return try emitNarrowed(UnsafeRawBufferPointer(values), count: n, planned, jobs: jobs, scratch: &scratch, emit: emit)

    case .dequantize(let m):
      let l = m.layout
      let n = l.rows * l.columns
      let type: Int4OutputType = planned.dtype == .bf16 ? .bf16 : planned.dtype == .f16 ? .f16 : .f32
      Scratch.ensure(&scratch.output, l.outputByteCount(type))
      let out = UnsafeMutableRawBufferPointer(rebasing: scratch.output[..<l.outputByteCount(type)])
      let counts = try dequantize(m, file: file, shard: shard, into: out, type: type, jobs: jobs)
      var e = (inexact: 0, overflow: 0, abs: 0.0, rel: 0.0)
      if counts.inexact > 0 || counts.nonFinite > 0 {
        // Error figures against the exact FP32 values.
        Scratch.ensure(&scratch.values, 4 * n)
        let exact = UnsafeMutableRawBufferPointer(rebasing: scratch.values[..<(4 * n)])
        _ = try dequantize(m, file: file, shard: shard, into: exact, type: .f32, jobs: jobs)
        e = errors(exact: UnsafeRawBufferPointer(exact), output: UnsafeRawBufferPointer(out), format: type == .bf16 ? .bf16 : .f16, count: n, jobs: jobs)
      }
      try emit(UnsafeRawBufferPointer(out))
      return TensorExactness(name: planned.name, action: "converted", inexact: e.inexact, overflow: e.overflow, maxAbsError: e.abs, maxRelError: e.rel)

    case .fp8Codes(let src), .fp8Scales(let src):
      let rows = src.rows
      let columns = src.columns
      let n = rows * columns
      let bs = plan.blockSize
      let shape = FP8Block.scaleShape(rows: rows, columns: columns, blockRows: bs, blockColumns: bs)
      Scratch.ensure(&scratch.values, 4 * n)
      Scratch.ensure(&scratch.output, n)
      Scratch.ensure(&scratch.scales, 4 * shape.rows * shape.columns)
      let values = UnsafeMutableRawBufferPointer(rebasing: scratch.values[..<(4 * n)])
      try exactValues(src, file: file, shard: shard, into: values, jobs: jobs)
      let codes = UnsafeMutableRawBufferPointer(rebasing: scratch.output[..<n])
      let scales = UnsafeMutableBufferPointer<Float>(
        start: scratch.scales.baseAddress!.assumingMemoryBound(to: Float.self), count: shape.rows * shape.columns)
      let floats = UnsafeBufferPointer<Float>(start: values.baseAddress?.assumingMemoryBound(to: Float.self), count: n)
      let nonFinite = FP8Block.quantize(
        weights: floats, rows: rows, columns: columns, blockRows: bs, blockColumns: bs, codes: codes, scales: scales, jobs: jobs)
      if nonFinite > 0 {
        throw ConversionError("non-finite", file: shard, tensor: src.module, "\(nonFinite) NaN/Inf values cannot be quantized to FP8")
      }
      if case .fp8Scales = source {
        try emit(UnsafeRawBufferPointer(scales))
        return TensorExactness(name: planned.name, action: "scales", inexact: 0, overflow: 0, maxAbsError: 0, maxRelError: 0)
      }
      // Error figures: dequantize the codes (into the codes' FP32 twin) and compare.
      let e = fp8Errors(exact: floats, codes: UnsafeRawBufferPointer(codes), scales: UnsafeBufferPointer(scales), rows: rows, columns: columns, blockSize: bs)
      try emit(UnsafeRawBufferPointer(codes))
      return TensorExactness(name: planned.name, action: "converted", inexact: e.inexact, overflow: 0, maxAbsError: e.abs, maxRelError: e.rel)

    case .int4Packed(let m):
      guard let spec = plan.requantize else { throw ConversionError("internal", tensor: planned.name, "no requantize settings") }
      let stats = try requantize(m, file: file, shard: shard, options: spec.options, jobs: jobs, scratch: &scratch)
      let scaleBytes = m.rows * (m.columns / m.groupSize) * m.scaleType.byteSize
      try scratch.stash.put(m.module, UnsafeRawBufferPointer(rebasing: scratch.scales[..<scaleBytes]), shard: shard)
      try emit(UnsafeRawBufferPointer(rebasing: scratch.output[..<(m.rows * Int4Packing.bytesPerRow(columns: m.columns))]))
      var t = TensorExactness(
        name: planned.name, action: "requantized", inexact: stats.requantized, overflow: 0, maxAbsError: stats.maxAbsError, maxRelError: 0)
      t.requant = stats
      return t

    case .int4Scale(let m):
      let scaleBytes = m.rows * (m.columns / m.groupSize) * m.scaleType.byteSize
      Scratch.ensure(&scratch.scales, scaleBytes)
      let into = UnsafeMutableRawBufferPointer(rebasing: scratch.scales[..<scaleBytes])
      if try !scratch.stash.take(m.module, into: into, shard: shard) {
        guard let spec = plan.requantize else { throw ConversionError("internal", tensor: planned.name, "no requantize settings") }
        _ = try requantize(m, file: file, shard: shard, options: spec.options, jobs: jobs, scratch: &scratch)
      }
      try emit(UnsafeRawBufferPointer(rebasing: scratch.scales[..<scaleBytes]))
      return TensorExactness(name: planned.name, action: "scales", inexact: 0, overflow: 0, maxAbsError: 0, maxRelError: 0)

    case .int4Shape(let m):
      var bytes: [UInt8] = []
      for v in [m.rows, m.columns] {
        if m.shapeDType == .i32 {
          withUnsafeBytes(of: Int32(v).littleEndian) { bytes += $0 }
        } else {
          withUnsafeBytes(of: Int64(v).littleEndian) { bytes += $0 }
        }
      }
      let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 8)
      defer { raw.deallocate() }
      raw.copyBytes(from: bytes)
      try emit(UnsafeRawBufferPointer(raw))
      return TensorExactness(name: planned.name, action: "shape", inexact: 0, overflow: 0, maxAbsError: 0, maxRelError: 0)

    case .fp8Dequantize(let name, let scaleInv, let rows, let columns, let br, let bc):
      let n = rows * columns
      Scratch.ensure(&scratch.values, 4 * n)
      let values = UnsafeMutableRawBufferPointer(rebasing: scratch.values[..<(4 * n)])
      try fp8Values(name: name, scaleInv: scaleInv, rows: rows, columns: columns, blockRows: br, blockColumns: bc, file: file, shard: shard, into: values, jobs: jobs)
      return try emitNarrowed(UnsafeRawBufferPointer(values), count: n, planned, jobs: jobs, scratch: &scratch, emit: emit)
    }
  }

  /// Rounds exact FP32 values to the planned dtype, measures what that lost,
  /// and emits them (a `cast` tensor).
  static func emitNarrowed(
    _ values: UnsafeRawBufferPointer, count n: Int, _ planned: PlannedTensor, jobs: Int, scratch: inout Scratch,
    emit: (UnsafeRawBufferPointer) throws(ConversionError) -> Void
  ) throws(ConversionError) -> TensorExactness {
    let outBytes = n * (planned.dtype.byteSize ?? 0)
    Scratch.ensure(&scratch.output, outBytes)
    let out = UnsafeMutableRawBufferPointer(rebasing: scratch.output[..<outBytes])
    if planned.dtype == .f32 {
      out.copyMemory(from: values)
    } else {
      FloatConversion.convertRows(values, from: .f32, to: floatFormat(planned.dtype), rows: 1, columns: n, into: out, jobs: jobs)
    }
    let e = errors(exact: values, output: UnsafeRawBufferPointer(out), format: floatFormat(planned.dtype), count: n, jobs: jobs)
    try emit(UnsafeRawBufferPointer(out))
    return TensorExactness(name: planned.name, action: "cast", inexact: e.inexact, overflow: e.overflow, maxAbsError: e.abs, maxRelError: e.rel)
  }

  /// Decodes a DeepSeek FP8-block weight to its exact FP32 values.
  static func fp8Values(
    name: String, scaleInv: String, rows: Int, columns: Int, blockRows: Int, blockColumns: Int, file: SafeTensorsFile, shard: String,
    into values: UnsafeMutableRawBufferPointer, jobs: Int
  ) throws(ConversionError) {
    let w = try tensorInfo(name, file, shard)
    let si = try tensorInfo(scaleInv, file, shard)
    let shape = FP8Block.scaleShape(rows: rows, columns: columns, blockRows: blockRows, blockColumns: blockColumns)
    guard si.dtype == .f32, si.shape == [shape.rows, shape.columns] else {
      throw ConversionError("bad-layout", file: shard, tensor: scaleInv, "expected F32 \([shape.rows, shape.columns]), found \(si.dtype) \(si.shape)")
    }
    let scales: [Float] = try withTensor(si, file, shard) { (b) throws(ConversionError) in
      (0..<(shape.rows * shape.columns)).map { Float(bitPattern: UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) }
    }
    try withTensor(w, file, shard) { (codes) throws(ConversionError) in
      scales.withUnsafeBufferPointer { s in
        FP8Block.dequantize(
          codes: codes, scales: s, rows: rows, columns: columns, blockRows: blockRows, blockColumns: blockColumns,
          into: values.bindMemory(to: Float.self), jobs: jobs)
      }
    }
  }

  /// Requantizes one module into `scratch.output` (packed) and `scratch.scales`.
  static func requantize(
    _ m: RequantModule, file: SafeTensorsFile, shard: String, options: Int4RequantizeOptions, jobs: Int, scratch: inout Scratch
  ) throws(ConversionError) -> Int4RequantizeStats {
    let n = m.rows * m.columns
    let packedBytes = m.rows * Int4Packing.bytesPerRow(columns: m.columns)
    let scaleBytes = m.rows * (m.columns / m.groupSize) * m.scaleType.byteSize
    Scratch.ensure(&scratch.output, packedBytes)
    Scratch.ensure(&scratch.scales, scaleBytes)
    let packed = UnsafeMutableRawBufferPointer(rebasing: scratch.output[..<packedBytes])
    let scales = UnsafeMutableRawBufferPointer(rebasing: scratch.scales[..<scaleBytes])
    let stats: Int4RequantizeStats
    switch m.weight {
    case .float(let name, let dtype):
      let info = try tensorInfo(name, file, shard)
      let type: Int4OutputType = dtype == .bf16 ? .bf16 : dtype == .f16 ? .f16 : .f32
      stats = try withTensor(info, file, shard) { (b) throws(ConversionError) in
        Int4Requantize.matrix(
          input: b, inputType: type, rows: m.rows, columns: m.columns, groupSize: m.groupSize, scaleType: m.scaleType, options: options,
          packed: packed, scales: scales, threads: jobs)
      }
    case .fp8(let name, let scaleInv, let br, let bc):
      Scratch.ensure(&scratch.values, 4 * n)
      let values = UnsafeMutableRawBufferPointer(rebasing: scratch.values[..<(4 * n)])
      try fp8Values(name: name, scaleInv: scaleInv, rows: m.rows, columns: m.columns, blockRows: br, blockColumns: bc, file: file, shard: shard, into: values, jobs: jobs)
      stats = Int4Requantize.matrix(
        input: UnsafeRawBufferPointer(values), inputType: .f32, rows: m.rows, columns: m.columns, groupSize: m.groupSize,
        scaleType: m.scaleType, options: options, packed: packed, scales: scales, threads: jobs)
    }
    if stats.nonFinite > 0 {
      throw ConversionError("non-finite", file: shard, tensor: m.weight.names[0], "\(stats.nonFinite) NaN/Inf values cannot be quantized to INT4")
    }
    return stats
  }

  static func tensorInfo(_ name: String, _ file: SafeTensorsFile, _ shard: String) throws(ConversionError) -> TensorInfo {
    do { return try file.info(name) } catch { throw ConversionError("missing-tensor", file: shard, tensor: name, "\(error)") }
  }

  /// The tensor's bytes, with its pages released afterwards.
  static func withTensor<R>(
    _ info: TensorInfo, _ file: SafeTensorsFile, _ shard: String, _ body: (UnsafeRawBufferPointer) throws(ConversionError) -> R
  ) throws(ConversionError) -> R {
    let range = file.fileRange(of: info)
    do { try file.mapping.prepare(range) } catch { throw ConversionError(unreadable: error, shard: shard, tensor: info.name) }
    defer { file.mapping.release(range) }
    return try file.mapping.withBytes(range) { (raw) throws(ConversionError) -> R in try body(raw) }
  }

  static func floatFormat(_ d: DType) -> FloatFormat {
    switch d {
    case .bf16: .bf16
    case .f16: .f16
    case .f8E4M3: .f8e4m3fn
    default: .f32
    }
  }

  /// Dequantizes a module with the fast kernel.
  static func dequantize(
    _ m: Int4Module, file: SafeTensorsFile, shard: String, into out: UnsafeMutableRawBufferPointer, type: Int4OutputType, jobs: Int
  ) throws(ConversionError) -> Int4DequantizeCounts {
    let packed = try tensorInfo(m.packed, file, shard)
    let scale = try tensorInfo(m.scale, file, shard)
    let zp = try m.zeroPoint.map { (n) throws(ConversionError) in try tensorInfo(n, file, shard) }
    let gi = try m.groupIndex.map { (n) throws(ConversionError) in try tensorInfo(n, file, shard) }
    let ranges = [packed, scale].map { file.fileRange(of: $0) } + [zp, gi].compactMap { $0.map { file.fileRange(of: $0) } }
    do { try file.mapping.prepare(all: ranges) } catch { throw ConversionError(unreadable: error, shard: shard, tensor: m.packed) }
    defer { for r in ranges { file.mapping.release(r) } }
    return try file.mapping.withBytes(0..<file.mapping.count) { (raw) throws(ConversionError) -> Int4DequantizeCounts in
      let p = UnsafeRawBufferPointer(rebasing: raw[file.fileRange(of: packed)])
      let s = UnsafeRawBufferPointer(rebasing: raw[file.fileRange(of: scale)])
      let z = zp.map { UnsafeRawBufferPointer(rebasing: raw[file.fileRange(of: $0)]) }
      var index: [Int32]? = nil
      if let gi {
        do { index = try m.layout.groupIndex(from: UnsafeRawBufferPointer(rebasing: raw[file.fileRange(of: gi)])) } catch {
          throw ConversionError("bad-g-idx", file: shard, tensor: gi.name, "\(error)")
        }
      }
      if let index {
        return index.withUnsafeBufferPointer {
          Int4Dequantize.matrix(m.layout, packed: p, scales: s, zeroPoints: z, groupIndex: $0, output: out, outputType: type, threads: jobs)
        }
      }
      return Int4Dequantize.matrix(m.layout, packed: p, scales: s, zeroPoints: z, groupIndex: nil, output: out, outputType: type, threads: jobs)
    }
  }

  /// The exact FP32 values of an FP8 source.
  static func exactValues(
    _ src: FP8Source, file: SafeTensorsFile, shard: String, into values: UnsafeMutableRawBufferPointer, jobs: Int
  ) throws(ConversionError) {
    switch src {
    case .int4(let m):
      let c = try dequantize(m, file: file, shard: shard, into: values, type: .f32, jobs: jobs)
      if c.nonFinite > 0 {
        throw ConversionError("non-finite", file: shard, tensor: m.scale, "\(c.nonFinite) dequantized values are NaN/Inf")
      }
    case .float(let name, let dtype, let rows, let columns):
      let info = try tensorInfo(name, file, shard)
      try withTensor(info, file, shard) { (b) throws(ConversionError) in
        if dtype == .f32 {
          values.copyMemory(from: b)
        } else {
          FloatConversion.convertRows(b, from: floatFormat(dtype), to: .f32, rows: rows, columns: columns, into: values, jobs: jobs)
        }
      }
    }
  }

  /// Counts and maxima of the differences between exact FP32 values and their
  /// encodings in `format` (FP32 output is the exact values themselves).
  static func errors(
    exact: UnsafeRawBufferPointer, output: UnsafeRawBufferPointer, format: FloatFormat, count: Int, jobs: Int
  ) -> (inexact: Int, overflow: Int, abs: Double, rel: Double) {
    guard format == .bf16 || format == .f16, count > 0 else { return (0, 0, 0, 0) }
    let e = NarrowingErrors.measure(
      exact: UnsafeBufferPointer(start: exact.baseAddress!.assumingMemoryBound(to: Float.self), count: count),
      narrow: UnsafeBufferPointer(start: output.baseAddress!.assumingMemoryBound(to: UInt16.self), count: count),
      format: format, threads: jobs)
    return (e.inexact, e.overflow, Double(e.maxAbs), Double(e.maxRel))
  }

  static func fp8Errors(
    exact: UnsafeBufferPointer<Float>, codes: UnsafeRawBufferPointer, scales: UnsafeBufferPointer<Float>, rows: Int, columns: Int,
    blockSize: Int
  ) -> (inexact: Int, abs: Double, rel: Double) {
    let table = Float8E4M3FN.decodeTable
    let sc = (columns + blockSize - 1) / blockSize
    var inexact = 0
    var maxAbs = 0.0
    var maxRel = 0.0
    for i in 0..<rows {
      for j in 0..<columns {
        let x = exact[i * columns + j]
        let y = table[Int(codes[i * columns + j])] * scales[(i / blockSize) * sc + j / blockSize]
        if x == y { continue }
        inexact += 1
        let d = Double(abs(y - x))
        maxAbs = max(maxAbs, d)
        if x != 0 { maxRel = max(maxRel, d / Double(abs(x))) }
      }
    }
    return (inexact, maxAbs, maxRel)
  }
}

/// Byte ranges parked in an unlinked temporary file until their tensor's turn
/// to be written (``Converter/Scratch/stash``).
struct ScaleStash {
  /// Where the file goes (the output folder, so it shares its file system);
  /// `nil`: the system's temporary folder.
  var directory: String? = nil
  private var fd: Int32 = -1
  private var end = 0
  private var entries: [String: (offset: Int, count: Int)] = [:]

  mutating func put(_ key: String, _ bytes: UnsafeRawBufferPointer, shard: String) throws(ConversionError) {
    if fd < 0 {
      var template = Array(((directory ?? (getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp")) + "/.ckpt-stash-XXXXXX").utf8CString)
      fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
      guard fd >= 0 else { throw ConversionError("write-failed", file: shard, "cannot create a temporary file in \(directory ?? "/tmp")") }
      template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
    }
    var done = 0
    while done < bytes.count {
      let n = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(end + done))
      guard n > 0 else { throw ConversionError("write-failed", file: shard, tensor: key, "temporary scale file: errno \(errno)") }
      done += n
    }
    entries[key] = (end, bytes.count)
    end += bytes.count
  }

  /// Reads `key`'s bytes into `into` (exactly its size); false when absent.
  mutating func take(_ key: String, into: UnsafeMutableRawBufferPointer, shard: String) throws(ConversionError) -> Bool {
    guard let e = entries.removeValue(forKey: key), e.count == into.count else { return false }
    var done = 0
    while done < e.count {
      let n = pread(fd, into.baseAddress! + done, e.count - done, off_t(e.offset + done))
      guard n > 0 else { throw ConversionError("read-failed", file: shard, tensor: key, "temporary scale file: errno \(errno)") }
      done += n
    }
    return true
  }

  mutating func close() {
    if fd >= 0 { _ = Glibc.close(fd) }
    fd = -1
  }
}
