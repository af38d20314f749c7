import QuantKernels
import SafeTensors
import Zstd

#if canImport(Glibc)
  import Glibc
#endif

/// Encoding and decoding of one chunk (``ShardArchive/Encoding``).
enum ChunkCodec {
  /// Encodes `src` (`rows × columns` elements of `dtype`, or plain bytes when
  /// `columns` is 0), choosing the grid for BF16 rows of whole groups when at
  /// least half the groups lie on one, else planes for floats, else bytes.
  static func encode(_ src: UnsafeRawBufferPointer, dtype: DType, rows: Int, columns: Int, level: Int32) throws(ZstdError) -> EncodedChunk {
    let digest = ShardArchive.sha256(src)
    if dtype == .bf16, columns > 0, columns % ShardArchive.group == 0, let grid = try encodeGrid(src, rows: rows, columns: columns, level: level) {
      return EncodedChunk(encoding: .gridInt4, frames: grid.frames, sha256: digest, gridElements: grid.exact * ShardArchive.group)
    }
    let width = ShardArchive.planeCount(dtype)
    if width > 0 {
      var frames: [[UInt8]] = []
      for plane in ShardArchive.split(src, width: width) {
        frames.append(try compressArray(plane, level, .entropy))
      }
      return EncodedChunk(encoding: .planes, frames: frames, sha256: digest, gridElements: 0)
    }
    return EncodedChunk(encoding: .bytes, frames: [try Zstd.compress(src, level: level)], sha256: digest, gridElements: 0)
  }

  /// One zstd frame of `a`.
  static func compressArray(_ a: [UInt8], _ level: Int32, _ tuning: Zstd.Tuning = .standard) throws(ZstdError) -> [UInt8] {
    let r: Result<[UInt8], ZstdError> = a.withUnsafeBytes { b in
      Result { () throws(ZstdError) in try Zstd.compress(b, level: level, tuning: tuning) }
    }
    return try r.get()
  }

  static func layout(rows: Int, columns: Int) -> Int4Layout {
    // Valid by construction: columns is a multiple of the group size.
    try! Int4Layout(rows: rows, columns: columns, strategy: .group(size: ShardArchive.group), scaleType: .bf16)
  }

  /// The grid encoding, or `nil` when fewer than half the groups are exact.
  static func encodeGrid(_ src: UnsafeRawBufferPointer, rows: Int, columns: Int, level: Int32) throws(ZstdError) -> (frames: [[UInt8]], exact: Int)? {
    // A cheap screen first: off-grid groups take the requantizer's slow search,
    // so a chunk whose first rows (≤ 256 groups) are mostly off the grid is not tried.
    let probeRows = max(1, min(rows, 256 * ShardArchive.group / columns))
    if probeRows < rows {
      let probe = UnsafeRawBufferPointer(rebasing: src[0..<(probeRows * columns * 2)])
      guard exactGroups(probe, rows: probeRows, columns: columns) * 2 >= probeRows * columns / ShardArchive.group else { return nil }
    }
    let groupsPerRow = columns / ShardArchive.group
    let groups = rows * groupsPerRow
    var packed = [UInt8](repeating: 0, count: rows * Int4Packing.bytesPerRow(columns: columns))
    var scales = [UInt8](repeating: 0, count: groups * 2)
    var decoded = [UInt8](repeating: 0, count: src.count)
    packed.withUnsafeMutableBytes { p in
      scales.withUnsafeMutableBytes { s in
        _ = Int4Requantize.matrix(
          input: src, inputType: .bf16, rows: rows, columns: columns, groupSize: ShardArchive.group, scaleType: .bf16,
          options: Int4RequantizeOptions(rule: .qat7), packed: p, scales: s)
        decoded.withUnsafeMutableBytes { d in
          _ = Int4Dequantize.matrix(
            layout(rows: rows, columns: columns), packed: UnsafeRawBufferPointer(p), scales: UnsafeRawBufferPointer(s), zeroPoints: nil,
            groupIndex: nil, output: d, outputType: .bf16)
        }
      }
    }
    // Verify on write: a group is stored as codes only if they decode to its exact bytes.
    let groupBytes = 2 * ShardArchive.group
    var bitmap = [UInt8](repeating: 0, count: (groups + 7) / 8)
    var exact = 0
    var fallback: [UInt8] = []
    decoded.withUnsafeBytes { d in
      for g in 0..<groups {
        if memcmp(d.baseAddress! + g * groupBytes, src.baseAddress! + g * groupBytes, groupBytes) == 0 {
          bitmap[g >> 3] |= 1 << UInt8(g & 7)
          exact += 1
        } else {
          fallback.append(contentsOf: UnsafeRawBufferPointer(rebasing: src[(g * groupBytes)..<((g + 1) * groupBytes)]))
          // Codes 0 (nibble 8) and scale 0 for groups stored as values: they compress to nothing.
          let r = g / groupsPerRow
          let c = g % groupsPerRow
          let at = r * Int4Packing.bytesPerRow(columns: columns) + c * (ShardArchive.group / 2)
          for i in 0..<(ShardArchive.group / 2) { packed[at + i] = 0x88 }
          scales[2 * g] = 0
          scales[2 * g + 1] = 0
        }
      }
    }
    guard exact * 2 >= groups, exact > 0 else { return nil }
    var frames: [[UInt8]] = []
    let planes = fallback.withUnsafeBytes { ShardArchive.split($0, width: 2) }
    for part in [packed, scales, bitmap] { frames.append(try compressArray(part, level)) }
    for part in planes { frames.append(try compressArray(part, level, .entropy)) }
    return (frames, exact)
  }

  /// How many groups of `src` lie exactly on an INT4 grid.
  static func exactGroups(_ src: UnsafeRawBufferPointer, rows: Int, columns: Int) -> Int {
    let groups = rows * columns / ShardArchive.group
    var packed = [UInt8](repeating: 0, count: rows * Int4Packing.bytesPerRow(columns: columns))
    var scales = [UInt8](repeating: 0, count: groups * 2)
    let stats = packed.withUnsafeMutableBytes { p in
      scales.withUnsafeMutableBytes { s in
        Int4Requantize.matrix(
          input: src, inputType: .bf16, rows: rows, columns: columns, groupSize: ShardArchive.group, scaleType: .bf16,
          options: Int4RequantizeOptions(rule: .qat7), packed: p, scales: s)
      }
    }
    return stats.recovered + stats.ambiguous
  }

  /// Decodes a chunk into `dst` (exactly the chunk's original bytes).
  static func decode(
    _ encoding: ShardArchive.Encoding, frames: [UnsafeRawBufferPointer], dtype: DType, rows: Int, columns: Int,
    into dst: UnsafeMutableRawBufferPointer
  ) throws(ArchiveDecodeError) {
    func unzstd(_ i: Int, _ size: Int) throws(ArchiveDecodeError) -> [UInt8] {
      guard i < frames.count else { throw .layout("frame \(i) missing") }
      do { return try Zstd.decompress(frames[i], expectedSize: size) } catch { throw .zstd(error) }
    }
    switch encoding {
    case .bytes:
      guard frames.count == 1 else { throw .layout("expected 1 frame, found \(frames.count)") }
      let b = try unzstd(0, dst.count)
      b.withUnsafeBytes { dst.copyMemory(from: $0) }
    case .planes:
      let width = ShardArchive.planeCount(dtype)
      guard width > 0, frames.count == width, dst.count % width == 0 else { throw .layout("\(frames.count) planes for \(dtype.rawValue)") }
      var planes: [[UInt8]] = []
      for k in 0..<width { planes.append(try unzstd(k, dst.count / width)) }
      ShardArchive.join(planes, width: width, into: dst)
    case .gridInt4:
      guard dtype == .bf16, columns > 0, columns % ShardArchive.group == 0, dst.count == rows * columns * 2, frames.count == 5 else {
        throw .layout("grid chunk of \(dtype.rawValue) [\(rows), \(columns)] with \(frames.count) frames")
      }
      let groups = rows * columns / ShardArchive.group
      let packed = try unzstd(0, rows * Int4Packing.bytesPerRow(columns: columns))
      let scales = try unzstd(1, groups * 2)
      let bitmap = try unzstd(2, (groups + 7) / 8)
      var exact = 0
      for g in 0..<groups where bitmap[g >> 3] & (1 << UInt8(g & 7)) != 0 { exact += 1 }
      let groupBytes = 2 * ShardArchive.group
      let plane0 = try unzstd(3, (groups - exact) * ShardArchive.group)
      let plane1 = try unzstd(4, (groups - exact) * ShardArchive.group)
      packed.withUnsafeBytes { p in
        scales.withUnsafeBytes { s in
          _ = Int4Dequantize.matrix(
            layout(rows: rows, columns: columns), packed: p, scales: s, zeroPoints: nil, groupIndex: nil, output: dst, outputType: .bf16)
        }
      }
      var k = 0
      for g in 0..<groups where bitmap[g >> 3] & (1 << UInt8(g & 7)) == 0 {
        for i in 0..<ShardArchive.group {
          dst[g * groupBytes + 2 * i] = plane0[k * ShardArchive.group + i]
          dst[g * groupBytes + 2 * i + 1] = plane1[k * ShardArchive.group + i]
        }
        k += 1
      }
    }
  }
}

/// A chunk that does not decode.
enum ArchiveDecodeError: Error {
  case zstd(ZstdError)
  case layout(String)
}
