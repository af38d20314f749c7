import Foundation
import QuantKernels
import Testing
import TestSupport

// Tests for Int4Packing, Int4Dequantize and Int4Layout. Helpers live in the
// `Int4Check` namespace so that they cannot clash with other test files.

enum Int4Check {
  // MARK: Independent scalar references (readable, not shared with the kernels)

  /// Packs codes the way `pack_to_int32` writes them: `Σ (q + 8) << 4j` per word,
  /// summed in wrapping Int32 like torch, rows padded with nibble 0.
  static func libraryPack(_ values: [Int8], rows: Int, columns: Int) -> [Int32] {
    let words = (columns + 7) / 8
    var out = [Int32](repeating: 0, count: rows * words)
    for r in 0..<rows {
      for w in 0..<words {
        var sum: Int32 = 0
        for j in 0..<8 where 8 * w + j < columns {
          sum &+= Int32(Int(values[r * columns + 8 * w + j]) + 8) << Int32(4 * j)
        }
        out[r * words + w] = sum
      }
    }
    return out
  }

  /// Little-endian bytes of Int32 words.
  static func bytes(_ words: [Int32]) -> [UInt8] {
    words.flatMap { w in (0..<4).map { UInt8(truncatingIfNeeded: UInt32(bitPattern: w) >> UInt32(8 * $0)) } }
  }

  /// Little-endian bytes of 16-bit values.
  static func bytes16(_ values: [UInt16]) -> [UInt8] {
    values.flatMap { [UInt8(truncatingIfNeeded: $0), UInt8(truncatingIfNeeded: $0 >> 8)] }
  }

  /// FP32 → BF16 round to nearest even, by comparing the two neighbours in Double
  /// (infinity counts as 2^128 there, which is where IEEE overflow puts it).
  static func bf16Nearest(_ x: Float) -> UInt16 {
    precondition(x.isFinite)
    let down = x.bitPattern >> 16  // toward zero
    if x.bitPattern & 0xFFFF == 0 { return UInt16(down) }
    let up = down + 1  // away from zero; 0x7F80 is infinity
    func value(_ b: UInt32) -> Double {
      b & 0x7FFF == 0x7F80 ? (b & 0x8000 != 0 ? -0x1p128 : 0x1p128) : Double(Float(bitPattern: b << 16))
    }
    let dDown = abs(Double(x) - value(down))
    let dUp = abs(value(up) - Double(x))
    if dDown != dUp { return UInt16(dDown < dUp ? down : up) }
    return UInt16(down & 1 == 0 ? down : up)
  }

  /// The real product `(q − zp)·s` for a decoded scale.
  static func exact(_ q: Int, _ zp: Int, _ s: Float) -> Double { Double(q - zp) * Double(s) }

  // MARK: Seeded inputs

  /// Scale bit patterns with edge cases mixed in.
  static func specialScales(_ t: Int4ScaleType) -> [UInt32] {
    switch t {
    case .bf16:
      [
        0x7F7F, 0xFF7F, 0x0080, 0x0001, 0x007F, 0x8001, 0x0000, 0x8000, 0xBF80, 0x3F81, 0x7F80, 0xFF80,
        0x7FC0, 0xFFFF, 0x7F81, 0x7D80, 0x7D7F, 0xFD7F, 0x3880, 0x387F, 0x4780, 0x4589, 0x4588, 0x3380, 0x337F,
      ]
    case .f16:
      [
        0x7BFF, 0xFBFF, 0x0400, 0x0001, 0x03FF, 0x8001, 0x0000, 0x8000, 0xBC00, 0x3C01, 0x7C00, 0xFC00,
        0x7E00, 0xFFFF, 0x7C01, 0x0C00, 0x1111, 0x5C44, 0x5C45,
      ]
    case .f32:
      [
        0x7F7F_FFFF, 0x0080_0000, 0x0000_0001, 0x0000_0000, 0x8000_0000, 0x7F80_0000, 0xFF80_0000, 0x7FC0_0000,
        0xFFFF_FFFF, 0x3F80_0001, 0x3F81_0000, 0x4780_0000, 0x3880_0000, 0x387F_FFFF, 0x7E00_0000,
      ]
    }
  }

  /// A typical scale: normal, magnitude 2^-12 … 2^-2, random sign and mantissa.
  static func typicalScale(_ t: Int4ScaleType, _ rng: inout SeededRandom) -> UInt32 {
    let f = Float(sign: rng.next() & 1 == 0 ? .plus : .minus, exponent: Int(rng.next() % 11) - 12,
      significand: 1 + Float(rng.next() % 1024) / 1024)
    switch t {
    case .bf16: return f.bitPattern >> 16
    case .f16: return UInt32(Float16Bridge.bits(f))
    case .f32: return f.bitPattern
    }
  }

  /// `count` scales as raw bytes; a quarter are edge cases when `special`.
  static func scales(_ t: Int4ScaleType, count: Int, special: Bool, _ rng: inout SeededRandom) -> [UInt8] {
    let edges = specialScales(t)
    var out: [UInt8] = []
    for _ in 0..<count {
      let bits = special && rng.next() % 4 == 0 ? edges[Int(rng.next() % UInt64(edges.count))] : typicalScale(t, &rng)
      for b in 0..<t.byteSize { out.append(UInt8(truncatingIfNeeded: bits >> UInt32(8 * b))) }
    }
    return out
  }

  static func codes(_ count: Int, _ rng: inout SeededRandom) -> [Int8] {
    (0..<count).map { _ in Int8(Int(rng.next() % 16) - 8) }
  }

  /// A `g_idx` for `columns` columns in groups of `groupSize`: every group gets
  /// exactly its share, in a seeded shuffled order.
  static func groupIndex(columns: Int, groupSize: Int, _ rng: inout SeededRandom) -> [Int32] {
    var g = (0..<columns).map { Int32($0 / groupSize) }
    for i in stride(from: g.count - 1, to: 0, by: -1) { g.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
    return g
  }

  /// `bytes` placed at an odd address (one leading filler byte).
  static func unaligned(_ bytes: [UInt8]) -> [UInt8] { [0xEE] + bytes }

  // MARK: Running kernels on arrays

  /// Runs the fast row kernel, or the reference, on byte arrays at byte offset
  /// `shift` (0 or 1) and returns the output bytes and counts.
  static func runRow(
    fast: Bool, packed: [UInt8], columns: Int, scales: [UInt8], scaleType: Int4ScaleType, zeroPoints: [Int8]?,
    groupSize: Int, groupIndex: [Int32]?, outputType: Int4OutputType, shift: Int = 0, path: KernelPath = .portable
  ) -> ([UInt8], Int4DequantizeCounts) {
    let p = [UInt8](repeating: 0xEE, count: shift) + packed
    let s = [UInt8](repeating: 0xEE, count: shift) + scales
    var out = [UInt8](repeating: 0xCD, count: shift + columns * outputType.byteSize)
    var counts = Int4DequantizeCounts()
    p.withUnsafeBytes { pb in
      s.withUnsafeBytes { sb in
        out.withUnsafeMutableBytes { ob in
          let pv = UnsafeRawBufferPointer(rebasing: pb[shift...])
          let sv = UnsafeRawBufferPointer(rebasing: sb[shift...])
          let ov = UnsafeMutableRawBufferPointer(rebasing: ob[shift...])
          withOptional(zeroPoints) { z in
            withOptional(groupIndex) { g in
              counts =
                fast
                ? Int4Dequantize.row(
                  packed: pv, columns: columns, scales: sv, scaleType: scaleType, zeroPoints: z, groupSize: groupSize,
                  groupIndex: g, output: ov, outputType: outputType, path: path)
                : Int4Dequantize.rowReference(
                  packed: pv, columns: columns, scales: sv, scaleType: scaleType, zeroPoints: z, groupSize: groupSize,
                  groupIndex: g, output: ov, outputType: outputType)
            }
          }
        }
      }
    }
    return (Array(out[shift...]), counts)
  }

  /// The concrete fast paths this machine can run: portable always, AVX-512 where the CPU has it.
  static let paths = KernelPath.allCases.filter { $0 != .automatic && $0.isAvailable }

  static func withOptional<T, R>(_ a: [T]?, _ body: (UnsafeBufferPointer<T>?) -> R) -> R {
    if let a { return a.withUnsafeBufferPointer { body($0) } }
    return body(nil)
  }

  /// Runs the matrix kernel (or its reference) and returns output bytes and counts.
  static func runMatrix(
    _ layout: Int4Layout, packed: [UInt8], scales: [UInt8], zeroPoints: [UInt8]?, groupIndex: [Int32]?,
    outputType: Int4OutputType, threads: Int?, path: KernelPath = .portable
  ) -> ([UInt8], Int4DequantizeCounts) {
    var out = [UInt8](repeating: 0xCD, count: layout.outputByteCount(outputType))
    var counts = Int4DequantizeCounts()
    packed.withUnsafeBytes { p in
      scales.withUnsafeBytes { s in
        out.withUnsafeMutableBytes { o in
          withOptional(groupIndex) { g in
            let run = { (z: UnsafeRawBufferPointer?) in
              if let threads {
                counts = Int4Dequantize.matrix(
                  layout, packed: p, scales: s, zeroPoints: z, groupIndex: g, output: o, outputType: outputType,
                  threads: threads, path: path)
              } else {
                counts = Int4Dequantize.matrixReference(
                  layout, packed: p, scales: s, zeroPoints: z, groupIndex: g, output: o, outputType: outputType)
              }
            }
            if let zeroPoints { zeroPoints.withUnsafeBytes { run($0) } } else { run(nil) }
          }
        }
      }
    }
    return (out, counts)
  }

  /// The first differing element of two outputs, for messages.
  static func firstDifference(_ a: [UInt8], _ b: [UInt8], elementSize: Int) -> String {
    guard a.count == b.count else { return "sizes \(a.count) vs \(b.count)" }
    for i in stride(from: 0, to: a.count, by: elementSize) where a[i..<(i + elementSize)] != b[i..<(i + elementSize)] {
      let hex = { (x: ArraySlice<UInt8>) in x.reversed().map { String($0, radix: 16) }.joined(separator: ".") }
      return "element \(i / elementSize): \(hex(a[i..<(i + elementSize)])) vs \(hex(b[i..<(i + elementSize)]))"
    }
    return "none"
  }

  // MARK: Tiny safetensors reader (tests only)

  struct Tensor {
    let dtype: String
    let shape: [Int]
    let data: [UInt8]
  }

  /// Reads every tensor of a `.safetensors` file: 8-byte LE header length N, a JSON
  /// header, data after `8 + N`.
  static func readSafeTensors(_ path: String) throws -> [String: Tensor] {
    let bytes = try readFile(path)
    let n = (0..<8).reduce(0) { $0 | Int(bytes[$1]) << (8 * $1) }
    let header = try JSONSerialization.jsonObject(with: Data(bytes[8..<(8 + n)])) as! [String: Any]
    var out: [String: Tensor] = [:]
    for (name, value) in header where name != "__metadata__" {
      let info = value as! [String: Any]
      let offsets = (info["data_offsets"] as! [NSNumber]).map(\.intValue)
      out[name] = Tensor(
        dtype: info["dtype"] as! String, shape: (info["shape"] as! [NSNumber]).map(\.intValue),
        data: Array(bytes[(8 + n + offsets[0])..<(8 + n + offsets[1])]))
    }
    return out
  }

  /// `__metadata__` of a `.safetensors` file.
  static func metadata(_ path: String) throws -> [String: String] {
    let bytes = try readFile(path)
    let n = (0..<8).reduce(0) { $0 | Int(bytes[$1]) << (8 * $1) }
    let header = try JSONSerialization.jsonObject(with: Data(bytes[8..<(8 + n)])) as! [String: Any]
    return header["__metadata__"] as? [String: String] ?? [:]
  }

  /// The `int4-*.safetensors` fixtures, if generated.
  static var fixtures: [String] {
    let dir = TestPaths.fixture("numerics")
    let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
    return names.filter { $0.hasPrefix("int4-") && $0.hasSuffix(".safetensors") }.sorted().map { dir + "/" + $0 }
  }
}

/// Swift's own `Float16`, used only as an independent reference.
enum Float16Bridge {
  static func bits(_ x: Float) -> UInt16 {
    #if arch(x86_64) || arch(arm64)
      return Float16(x).bitPattern
    #else
      fatalError("Float16 unavailable")
    #endif
  }

  static func value(_ bits: UInt16) -> Float {
    #if arch(x86_64) || arch(arm64)
      return Float(Float16(bitPattern: bits))
    #else
      fatalError("Float16 unavailable")
    #endif
  }
}

// MARK: - Packing

@Suite("INT4 packing")
struct Int4PackingTests {
  @Test("FORMATS.md §2.2 worked example: 8 values pack to 0xBFA98710")
  func workedExample() {
    let values: [Int8] = [-8, -7, -1, 0, 1, 2, 7, 3]
    var packed = [UInt8](repeating: 0xFF, count: 4)
    values.withUnsafeBufferPointer { v in packed.withUnsafeMutableBytes { Int4Packing.packRow(v, into: $0) } }
    #expect(packed == [0x10, 0x87, 0xA9, 0xBF])
    #expect(Int32(bitPattern: UInt32(packed[0]) | UInt32(packed[1]) << 8 | UInt32(packed[2]) << 16 | UInt32(packed[3]) << 24) == -1_079_408_880)
    var back = [Int8](repeating: 0, count: 8)
    packed.withUnsafeBytes { p in back.withUnsafeMutableBufferPointer { Int4Packing.unpackRow(p, count: 8, into: $0) } }
    #expect(back == values)
  }

  @Test("FORMATS.md §2.2 worked example: 10 columns -5...4 pad with zero nibbles")
  func workedExamplePadded() {
    let values: [Int8] = Array(-5...4)
    var packed = [UInt8](repeating: 0xFF, count: 8)
    values.withUnsafeBufferPointer { v in packed.withUnsafeMutableBytes { Int4Packing.packRow(v, into: $0) } }
    #expect(packed == Int4Check.bytes([Int32(bitPattern: 0xA987_6543), 0x0000_00CB]))
    #expect(Int4Packing.wordsPerRow(columns: 10) == 2 && Int4Packing.bytesPerRow(columns: 10) == 8)
    // Padding nibbles are ignored on unpack, whatever they hold.
    packed[7] = 0xFF
    packed[6] = 0xFF
    var back = [Int8](repeating: 0, count: 10)
    packed.withUnsafeBytes { p in back.withUnsafeMutableBufferPointer { Int4Packing.unpackRow(p, count: 10, into: $0) } }
    #expect(back == values)
  }

  @Test("All 256 packed bytes decode to (low − 8, high − 8), and the pair table agrees")
  func allBytes() {
    #expect(Int4Packing.pairTable.count == 256)
    var bad: [String] = []
    for b in 0..<256 {
      let (lo, hi) = Int4Packing.codes(ofByte: UInt8(b))
      let expectLo = Int8(b % 16 - 8)
      let expectHi = Int8(b / 16 - 8)
      let entry = Int4Packing.pairTable[b]
      if lo != expectLo || hi != expectHi || entry != UInt16(UInt8(bitPattern: expectLo)) | UInt16(UInt8(bitPattern: expectHi)) << 8 {
        bad.append(String(b, radix: 16))
      }
    }
    #expect(bad.isEmpty, "first bad byte: 0x\(bad.first ?? "")")
    // The same through unpackRow: a row holding every byte once.
    let row = (0..<256).map { UInt8($0) }
    var codes = [Int8](repeating: 0, count: 512)
    row.withUnsafeBytes { p in codes.withUnsafeMutableBufferPointer { Int4Packing.unpackRow(p, count: 512, into: $0) } }
    for b in 0..<256 {
      #expect(codes[2 * b] == Int8(b % 16 - 8) && codes[2 * b + 1] == Int8(b / 16 - 8), "byte 0x\(String(b, radix: 16))")
    }
  }

  @Test("pack matches pack_to_int32's formula and round-trips, padding included", arguments: [1, 2, 7, 8, 9, 15, 16, 17, 31, 100])
  func roundTrip(columns: Int) {
    var rng = SeededRandom(seed: 0x1417_0000 + UInt64(columns))
    let rows = 1 + Int(rng.next() % 5)
    let values = Int4Check.codes(rows * columns, &rng)
    var packed = [UInt8](repeating: 0xEE, count: rows * Int4Packing.bytesPerRow(columns: columns))
    values.withUnsafeBufferPointer { v in
      packed.withUnsafeMutableBytes { Int4Packing.pack(v, rows: rows, columns: columns, into: $0) }
    }
    #expect(packed == Int4Check.bytes(Int4Check.libraryPack(values, rows: rows, columns: columns)))
    packed.withUnsafeBytes { #expect(PackedInt4Scan.countNonzeroPadding($0, rows: rows, columns: columns) == 0) }
    var back = [Int8](repeating: 0, count: rows * columns)
    // Unaligned source.
    let shifted = Int4Check.unaligned(packed)
    shifted.withUnsafeBytes { p in
      back.withUnsafeMutableBufferPointer {
        Int4Packing.unpack(UnsafeRawBufferPointer(rebasing: p[1...]), rows: rows, columns: columns, into: $0)
      }
    }
    #expect(back == values)
  }

  @Test("Zero points pack along dimension 0: element (r, g) in word [r/8, g], nibble r % 8", arguments: [1, 7, 8, 9, 20])
  func packColumns(rows: Int) {
    var rng = SeededRandom(seed: 0x2E60 + UInt64(rows))
    let groups = 1 + Int(rng.next() % 4)
    let values = Int4Check.codes(rows * groups, &rng)
    let wordRows = (rows + 7) / 8
    var packed = [UInt8](repeating: 0xEE, count: 4 * wordRows * groups)
    values.withUnsafeBufferPointer { v in
      packed.withUnsafeMutableBytes { Int4Packing.packColumns(v, rows: rows, columns: groups, into: $0) }
    }
    // Transpose, pack rows, transpose back: what pack_to_int32(packed_dim=0) does.
    var transposed = [Int8](repeating: 0, count: rows * groups)
    for r in 0..<rows { for g in 0..<groups { transposed[g * rows + r] = values[r * groups + g] } }
    let t = Int4Check.libraryPack(transposed, rows: groups, columns: rows)  // [groups, wordRows]
    var expected = [Int32](repeating: 0, count: wordRows * groups)
    for g in 0..<groups { for w in 0..<wordRows { expected[w * groups + g] = t[g * wordRows + w] } }
    #expect(packed == Int4Check.bytes(expected))
    packed.withUnsafeBytes { p in
      for r in 0..<rows {
        for g in 0..<groups {
          #expect(Int4Packing.unpackZeroPoint(p, row: r, group: g, groups: groups) == values[r * groups + g])
        }
      }
      var back = [Int8](repeating: 0, count: rows * groups)
      back.withUnsafeMutableBufferPointer { Int4Packing.unpackColumns(p, rows: rows, columns: groups, into: $0) }
      #expect(back == values)
    }
  }

  @Test("Packing a code outside [-8, 7] traps")
  func packTrapsOnRange() async {
    await #expect(processExitsWith: .failure) {
      let values: [Int8] = [0, 8]
      var packed = [UInt8](repeating: 0, count: 4)
      values.withUnsafeBufferPointer { v in packed.withUnsafeMutableBytes { Int4Packing.packRow(v, into: $0) } }
    }
  }

  @Test("Unpacking into a buffer of the wrong size traps")
  func unpackTrapsOnSize() async {
    await #expect(processExitsWith: .failure) {
      let packed = [UInt8](repeating: 0, count: 4)
      var values = [Int8](repeating: 0, count: 9)
      packed.withUnsafeBytes { p in values.withUnsafeMutableBufferPointer { Int4Packing.unpackRow(p, count: 9, into: $0) } }
    }
  }
}

// MARK: - Element contract

@Suite("INT4 dequantize: element contract")
struct Int4ElementTests {
  @Test("FORMATS.md §6 example: s = 1.0078125, q = 7 is 7.0546875 in FP32 and rounds to 7.0625 in BF16")
  func bf16Example() {
    let f32 = Int4Dequantize.element(code: 7, zeroPoint: 0, scaleBits: 0x3F81, scaleType: .bf16, outputType: .f32)
    #expect(Float(bitPattern: f32.bits) == 7.0546875 && !f32.inexact && !f32.nonFinite)
    let bf16 = Int4Dequantize.element(code: 7, zeroPoint: 0, scaleBits: 0x3F81, scaleType: .bf16, outputType: .bf16)
    #expect(Float(bitPattern: bf16.bits << 16) == 7.0625 && bf16.inexact && !bf16.nonFinite)
    let f16 = Int4Dequantize.element(code: 7, zeroPoint: 0, scaleBits: 0x3F81, scaleType: .bf16, outputType: .f16)
    #expect(Float16Bridge.value(UInt16(f16.bits)) == 7.0546875 && !f16.inexact)
    // Asymmetric: (q − zp)·s with q − zp up to 15.
    let asym = Int4Dequantize.element(code: 7, zeroPoint: -8, scaleBits: 0x3F81, scaleType: .bf16, outputType: .f32)
    #expect(Float(bitPattern: asym.bits) == 15 * 1.0078125)
  }

  @Test("BF16 scales: FP32 output is the exact product, BF16 output its RNE, FP16 output Float16(product)")
  func bf16ScalesExhaustive() {
    var bad: [String] = []
    for pattern in 0..<65536 {
      let s = Float(bitPattern: UInt32(pattern) << 16)
      guard s.isFinite else { continue }
      for (q, zp) in [(-8, 0), (-7, 0), (-5, 0), (-3, 0), (0, 0), (3, 0), (7, 0), (7, -8), (-8, 7), (5, 2)] as [(Int8, Int8)] {
        let exact = Int4Check.exact(Int(q), Int(zp), s)
        let p = Float(exact)  // exact unless it overflows FP32
        let f32 = Int4Dequantize.element(code: q, zeroPoint: zp, scaleBits: UInt32(pattern), scaleType: .bf16, outputType: .f32)
        let bf = Int4Dequantize.element(code: q, zeroPoint: zp, scaleBits: UInt32(pattern), scaleType: .bf16, outputType: .bf16)
        let h = Int4Dequantize.element(code: q, zeroPoint: zp, scaleBits: UInt32(pattern), scaleType: .bf16, outputType: .f16)
        let expectBF = p.isFinite ? Int4Check.bf16Nearest(p) : UInt16(p.bitPattern >> 16)
        let expectH = Float16Bridge.bits(p)
        let ok =
          f32.bits == p.bitPattern && f32.inexact == (Double(p) != exact) && f32.nonFinite == !p.isFinite
          && bf.bits == UInt32(expectBF) && bf.inexact == (Double(Float(bitPattern: bf.bits << 16)) != exact)
          && bf.nonFinite == (bf.bits & 0x7FFF == 0x7F80)
          && h.bits == UInt32(expectH) && h.inexact == (Double(Float16Bridge.value(expectH)) != exact)
          && h.nonFinite == (expectH & 0x7FFF == 0x7C00)
        if !ok { bad.append("s=0x\(String(pattern, radix: 16)) q=\(q) zp=\(zp)") }
      }
    }
    #expect(bad.isEmpty, "\(bad.count) bad, first: \(bad.first ?? "")")
  }

  @Test("FP16 scales: FP16 output equals the library's FP16 result; BF16 output is its RNE")
  func f16ScalesExhaustive() {
    var bad: [String] = []
    for pattern in 0..<65536 {
      let s = Float16Bridge.value(UInt16(pattern))
      guard s.isFinite else { continue }
      for (q, zp) in [(-8, 0), (-7, 0), (-3, 0), (0, 0), (7, 0), (7, -8), (5, 2)] as [(Int8, Int8)] {
        let exact = Int4Check.exact(Int(q), Int(zp), s)
        let p = Float(exact)  // exact: 4 + 11 significant bits
        let f32 = Int4Dequantize.element(code: q, zeroPoint: zp, scaleBits: UInt32(pattern), scaleType: .f16, outputType: .f32)
        let h = Int4Dequantize.element(code: q, zeroPoint: zp, scaleBits: UInt32(pattern), scaleType: .f16, outputType: .f16)
        let bf = Int4Dequantize.element(code: q, zeroPoint: zp, scaleBits: UInt32(pattern), scaleType: .f16, outputType: .bf16)
        let library = Float16Bridge.bits(p)  // torch computes q·s in FP16: one rounding
        let libraryValue = Float16Bridge.value(library)
        let expectBF: UInt16 = libraryValue.isFinite ? Int4Check.bf16Nearest(libraryValue) : UInt16(libraryValue.bitPattern >> 16)
        let ok =
          f32.bits == p.bitPattern && !f32.inexact
          && h.bits == UInt32(library) && h.inexact == (Double(libraryValue) != exact)
          && bf.bits == UInt32(expectBF) && bf.inexact == (Double(Float(bitPattern: bf.bits << 16)) != exact)
        if !ok { bad.append("s=0x\(String(pattern, radix: 16)) q=\(q) zp=\(zp)") }
      }
    }
    #expect(bad.isEmpty, "\(bad.count) bad, first: \(bad.first ?? "")")
  }

  @Test("FP32 scales: one FP32 rounding, then RNE to BF16 / FP16", arguments: [0x5EED_0001 as UInt64])
  func f32Scales(seed: UInt64) {
    var rng = SeededRandom(seed: seed)
    var bad: [String] = []
    for i in 0..<20000 {
      let bits = i < 15 ? Int4Check.specialScales(.f32)[i] : UInt32(truncatingIfNeeded: rng.next())
      let s = Float(bitPattern: bits)
      guard s.isFinite else { continue }
      let q = Int8(Int(rng.next() % 16) - 8)
      let p = Float(q) * s
      let f32 = Int4Dequantize.element(code: q, zeroPoint: 0, scaleBits: bits, scaleType: .f32, outputType: .f32)
      let bf = Int4Dequantize.element(code: q, zeroPoint: 0, scaleBits: bits, scaleType: .f32, outputType: .bf16)
      let h = Int4Dequantize.element(code: q, zeroPoint: 0, scaleBits: bits, scaleType: .f32, outputType: .f16)
      let exact = Int4Check.exact(Int(q), 0, s)
      let expectBF = p.isFinite ? Int4Check.bf16Nearest(p) : UInt16(p.bitPattern >> 16)
      let ok =
        f32.bits == p.bitPattern && f32.inexact == (Double(p) != exact)
        && bf.bits == UInt32(expectBF) && h.bits == UInt32(Float16Bridge.bits(p))
      if !ok { bad.append("s=0x\(String(bits, radix: 16)) q=\(q)") }
    }
    #expect(bad.isEmpty, "\(bad.count) bad, first: \(bad.first ?? "")")
  }

  @Test("Non-finite scales give canonical NaN or ±inf, counted as non-finite, never inexact")
  func nonFiniteScales() {
    let cases: [(UInt32, Int4ScaleType)] = [(0x7FC0, .bf16), (0xFFFF, .bf16), (0x7F80, .bf16), (0xFF80, .bf16), (0x7C00, .f16), (0x7E01, .f16), (0x7FC0_0001, .f32), (0xFF80_0000, .f32)]
    for (bits, t) in cases {
      for q in [-8, 0, 3] as [Int8] {
        let f32 = Int4Dequantize.element(code: q, zeroPoint: 0, scaleBits: bits, scaleType: t, outputType: .f32)
        let bf = Int4Dequantize.element(code: q, zeroPoint: 0, scaleBits: bits, scaleType: t, outputType: .bf16)
        let h = Int4Dequantize.element(code: q, zeroPoint: 0, scaleBits: bits, scaleType: t, outputType: .f16)
        let v = Float(bitPattern: f32.bits)
        #expect(f32.nonFinite && bf.nonFinite && h.nonFinite && !f32.inexact && !bf.inexact && !h.inexact)
        if v.isNaN {
          #expect(f32.bits == 0x7FC0_0000 && bf.bits == UInt32(BFloat16.nanCode) && h.bits == 0x7E00, "\(t) 0x\(String(bits, radix: 16)) q=\(q)")
        } else {
          #expect(v.isInfinite && bf.bits & 0x7FFF == 0x7F80 && h.bits & 0x7FFF == 0x7C00)
        }
      }
    }
  }
}

// MARK: - Fast paths against the reference

@Suite("INT4 dequantize: fast paths equal the scalar reference")
struct Int4FastPathTests {
  struct Config: CustomStringConvertible, Sendable {
    let scaleType: Int4ScaleType
    let outputType: Int4OutputType
    var description: String { "\(scaleType) → \(outputType)" }
  }

  static let configs: [Config] = Int4ScaleType.allCases.flatMap { s in Int4OutputType.allCases.map { Config(scaleType: s, outputType: $0) } }

  /// Group sizes and column counts: multiples of 32 (group loop), others (spans
  /// with scalar heads and tails), channel (`groupSize == columns`), partial last group.
  static let shapes: [(columns: Int, groupSize: Int)] = [
    (64, 32), (128, 64), (96, 96), (33, 33), (95, 95), (200, 8), (91, 7), (100, 13), (70, 32), (1, 1), (31, 32), (130, 128),
  ]

  @Test("row == rowReference, bytes and counts, with edge scales, zero points and g_idx", arguments: configs)
  func rows(_ config: Config) {
    let index = Self.configs.firstIndex { $0.description == config.description }!
    var rng = SeededRandom(seed: 0xFA57_0000 + UInt64(index))
    for (columns, groupSize) in Self.shapes {
      let groups = (columns + groupSize - 1) / groupSize
      for variant in 0..<4 {
        let codes = Int4Check.codes(columns, &rng)
        var packed = [UInt8](repeating: 0, count: Int4Packing.bytesPerRow(columns: columns))
        codes.withUnsafeBufferPointer { v in packed.withUnsafeMutableBytes { Int4Packing.packRow(v, into: $0) } }
        let scales = Int4Check.scales(config.scaleType, count: groups, special: variant != 0, &rng)
        let zp: [Int8]? = variant >= 2 ? Int4Check.codes(groups, &rng) : nil
        // Variant 3 adds a g_idx: shuffled, or in column order (vector spans).
        let gIdx: [Int32]? =
          variant == 3
          ? (rng.next() & 1 == 0 ? Int4Check.groupIndex(columns: columns, groupSize: groupSize, &rng) : (0..<columns).map { Int32($0 / groupSize) })
          : nil
        let shift = Int(rng.next() & 1)
        let reference = Int4Check.runRow(
          fast: false, packed: packed, columns: columns, scales: scales, scaleType: config.scaleType, zeroPoints: zp,
          groupSize: groupSize, groupIndex: gIdx, outputType: config.outputType)
        for path in Int4Check.paths {
        let fast = Int4Check.runRow(
          fast: true, packed: packed, columns: columns, scales: scales, scaleType: config.scaleType, zeroPoints: zp,
          groupSize: groupSize, groupIndex: gIdx, outputType: config.outputType, shift: shift, path: path)
        let label = "\(config) \(path) columns \(columns) group \(groupSize) variant \(variant) shift \(shift)"
        #expect(fast.0 == reference.0, "\(label): first difference \(Int4Check.firstDifference(fast.0, reference.0, elementSize: config.outputType.byteSize))")
        #expect(fast.1 == reference.1, "\(label): counts \(fast.1) vs \(reference.1)")
        if variant == 3, let g = gIdx, g == (0..<columns).map({ Int32($0 / groupSize) }) {
          // A column-order g_idx is the same as none.
          let plain = Int4Check.runRow(
            fast: true, packed: packed, columns: columns, scales: scales, scaleType: config.scaleType, zeroPoints: zp,
            groupSize: groupSize, groupIndex: nil, outputType: config.outputType, path: path)
          #expect(plain.0 == fast.0 && plain.1 == fast.1, "\(label): column-order g_idx")
        }
        }
      }
    }
  }

  @Test("Every edge scale in every position of a 32-element group, all 16 codes", arguments: configs)
  func edgeScales(_ config: Config) {
    // Two groups of 32 (one vector chunk each): codes cover all 16 values twice.
    let codes: [Int8] = (0..<64).map { Int8($0 % 16 - 8) }
    var packed = [UInt8](repeating: 0, count: 32)
    codes.withUnsafeBufferPointer { v in packed.withUnsafeMutableBytes { Int4Packing.packRow(v, into: $0) } }
    let edges = Int4Check.specialScales(config.scaleType)
    for a in edges {
      for zp in [nil, [0, -8], [7, 3]] as [[Int8]?] {
        // Edge scale next to a typical one, both orders.
        let typical: UInt32 = config.scaleType == .f32 ? 0x3B80_0000 : (config.scaleType == .bf16 ? 0x3B80 : 0x1C00)
        for pair in [[a, typical], [typical, a]] {
          let scales = pair.flatMap { bits in (0..<config.scaleType.byteSize).map { UInt8(truncatingIfNeeded: bits >> UInt32(8 * $0)) } }
          let reference = Int4Check.runRow(
            fast: false, packed: packed, columns: 64, scales: scales, scaleType: config.scaleType, zeroPoints: zp,
            groupSize: 32, groupIndex: nil, outputType: config.outputType)
          for path in Int4Check.paths {
            let fast = Int4Check.runRow(
              fast: true, packed: packed, columns: 64, scales: scales, scaleType: config.scaleType, zeroPoints: zp,
              groupSize: 32, groupIndex: nil, outputType: config.outputType, shift: 1, path: path)
            #expect(fast.0 == reference.0 && fast.1 == reference.1, "\(config) \(path) scale 0x\(String(a, radix: 16)) zp \(zp ?? [])")
          }
        }
      }
    }
  }

  @Test("matrix (1, 2, 3 threads) == matrixReference for every strategy", arguments: [Int4OutputType.bf16, .f32, .f16])
  func matrices(_ outputType: Int4OutputType) throws {
    var rng = SeededRandom(seed: 0x3A7_0000)
    let cases: [(Int, Int, Int4Strategy, Bool, Bool)] = [
      (13, 96, .group(size: 32), false, false), (9, 64, .group(size: 32), true, false), (17, 64, .group(size: 16), true, true),
      (5, 20, .group(size: 32), false, false), (6, 70, .channel, true, false), (7, 45, .tensor, false, false), (3, 0, .channel, false, false),
    ]
    for scaleType in Int4ScaleType.allCases {
      for (rows, columns, strategy, hasZP, hasGIdx) in cases {
        let layout = try Int4Layout(rows: rows, columns: columns, strategy: strategy, scaleType: scaleType, hasZeroPoints: hasZP, hasGroupIndex: hasGIdx)
        let codes = Int4Check.codes(rows * columns, &rng)
        var packed = [UInt8](repeating: 0, count: layout.packedByteCount)
        codes.withUnsafeBufferPointer { v in packed.withUnsafeMutableBytes { Int4Packing.pack(v, rows: rows, columns: columns, into: $0) } }
        let scales = Int4Check.scales(scaleType, count: layout.scaleRows * layout.groupsPerRow, special: true, &rng)
        var zpPacked: [UInt8]? = nil
        if hasZP {
          let zp = Int4Check.codes(layout.scaleRows * layout.groupsPerRow, &rng)
          var z = [UInt8](repeating: 0, count: layout.zeroPointByteCount)
          zp.withUnsafeBufferPointer { v in
            z.withUnsafeMutableBytes { Int4Packing.packColumns(v, rows: layout.scaleRows, columns: layout.groupsPerRow, into: $0) }
          }
          zpPacked = z
        }
        let gIdx = hasGIdx ? Int4Check.groupIndex(columns: columns, groupSize: layout.groupSize, &rng) : nil
        let reference = Int4Check.runMatrix(layout, packed: packed, scales: scales, zeroPoints: zpPacked, groupIndex: gIdx, outputType: outputType, threads: nil)
        // The reference matrix is the reference row on every row.
        var rowByRow: [UInt8] = []
        var rowCounts = Int4DequantizeCounts()
        for r in 0..<(columns == 0 ? 0 : rows) {
          let rowBytes = Int4Packing.bytesPerRow(columns: columns)
          let sr = strategy == .tensor ? 0 : r
          let scaleRow = layout.groupsPerRow * scaleType.byteSize
          let zp: [Int8]? = zpPacked.map { z in
            z.withUnsafeBytes { p in (0..<layout.groupsPerRow).map { Int4Packing.unpackZeroPoint(p, row: r, group: $0, groups: layout.groupsPerRow) } }
          }
          let (out, c) = Int4Check.runRow(
            fast: false, packed: Array(packed[(r * rowBytes)..<((r + 1) * rowBytes)]), columns: columns,
            scales: Array(scales[(sr * scaleRow)..<((sr + 1) * scaleRow)]), scaleType: scaleType, zeroPoints: zp,
            groupSize: layout.groupSize, groupIndex: gIdx, outputType: outputType)
          rowByRow += out
          rowCounts += c
        }
        #expect(rowByRow == reference.0 && rowCounts == reference.1, "\(scaleType) \(strategy) reference matrix")
        for threads in [1, 2, 3] {
          for path in Int4Check.paths {
            let fast = Int4Check.runMatrix(layout, packed: packed, scales: scales, zeroPoints: zpPacked, groupIndex: gIdx, outputType: outputType, threads: threads, path: path)
            #expect(fast.0 == reference.0, "\(scaleType) \(strategy) \(rows)×\(columns) threads \(threads) \(path): \(Int4Check.firstDifference(fast.0, reference.0, elementSize: outputType.byteSize))")
            #expect(fast.1 == reference.1, "\(scaleType) \(strategy) threads \(threads) \(path): counts \(fast.1) vs \(reference.1)")
          }
        }
      }
    }
  }

  @Test("A kernel given an output buffer of the wrong size traps")
  func rowTrapsOnOutputSize() async {
    await #expect(processExitsWith: .failure) {
      let packed = [UInt8](repeating: 0, count: 4)
      let scales: [UInt8] = [0x80, 0x3F]
      var out = [UInt8](repeating: 0, count: 15)
      packed.withUnsafeBytes { p in
        scales.withUnsafeBytes { s in
          out.withUnsafeMutableBytes { o in
            _ = Int4Dequantize.row(
              packed: p, columns: 8, scales: s, scaleType: .bf16, zeroPoints: nil, groupSize: 32, groupIndex: nil, output: o,
              outputType: .bf16)
          }
        }
      }
    }
  }

  @Test("A g_idx value out of range traps")
  func rowTrapsOnGroupIndex() async {
    await #expect(processExitsWith: .failure) {
      let packed = [UInt8](repeating: 0, count: 4)
      let scales: [UInt8] = [0x80, 0x3F]
      let gIdx: [Int32] = [0, 0, 0, 1, 0, 0, 0, 0]
      var out = [UInt8](repeating: 0, count: 16)
      packed.withUnsafeBytes { p in
        scales.withUnsafeBytes { s in
          out.withUnsafeMutableBytes { o in
            gIdx.withUnsafeBufferPointer { g in
              _ = Int4Dequantize.row(
                packed: p, columns: 8, scales: s, scaleType: .bf16, zeroPoints: nil, groupSize: 8, groupIndex: g, output: o,
                outputType: .bf16)
            }
          }
        }
      }
    }
  }
}

// MARK: - Layout validation

@Suite("INT4 layout validation")
struct Int4LayoutTests {
  @Test("Kimi K2 expert shapes validate and give the expected byte counts")
  func k2Shapes() throws {
    let gate = try Int4Layout(
      weightShape: [2048, 7168], strategy: .group(size: 32), scaleType: .bf16, packedShape: [2048, 896], scaleShape: [2048, 224])
    #expect(gate.packedByteCount == 2048 * 896 * 4 && gate.scaleByteCount == 2048 * 224 * 2)
    #expect(gate.outputByteCount(.bf16) == 2048 * 7168 * 2 && gate.groupsPerRow == 224 && gate.groupSize == 32)
    let down = try Int4Layout(
      weightShape: [7168, 2048], strategy: .group(size: 32), scaleType: .bf16, packedShape: [7168, 256], scaleShape: [7168, 64])
    #expect(down.zeroPointShape == [896, 64] && down.zeroPointByteCount == 0)
    let asym = try Int4Layout(
      weightShape: [20, 64], strategy: .group(size: 32), scaleType: .f16, packedShape: [20, 8], scaleShape: [20, 2],
      zeroPointShape: [3, 2])
    #expect(asym.zeroPointByteCount == 24)
    _ = try Int4Layout(weightShape: [5, 9], strategy: .channel, scaleType: .f32, packedShape: [5, 2], scaleShape: [5, 1], zeroPointShape: [1, 1])
    _ = try Int4Layout(weightShape: [5, 9], strategy: .tensor, scaleType: .f32, packedShape: [5, 2], scaleShape: [])
    _ = try Int4Layout(weightShape: [5, 9], strategy: .tensor, scaleType: .f32, packedShape: [5, 2], scaleShape: [1])
    // columns < group size: one partial group, as the library allows.
    let small = try Int4Layout(weightShape: [2, 20], strategy: .group(size: 32), scaleType: .bf16, packedShape: [2, 3], scaleShape: [2, 1])
    #expect(small.groupsPerRow == 1)
  }

  @Test("Every bad shape throws a descriptive error and never traps")
  func errors() {
    func expectError(_ expected: Int4LayoutError, _ body: () throws -> Int4Layout) {
      do {
        _ = try body()
        Issue.record("no error, expected \(expected)")
      } catch let error as Int4LayoutError {
        #expect(error == expected)
        #expect(!error.description.isEmpty)
      } catch {
        Issue.record("unexpected error \(error)")
      }
    }
    expectError(.invalidWeightShape(shape: [2048])) {
      try Int4Layout(weightShape: [2048], strategy: .group(size: 32), scaleType: .bf16, packedShape: [], scaleShape: [])
    }
    expectError(.invalidWeightShape(shape: [-1, 8])) {
      try Int4Layout(weightShape: [-1, 8], strategy: .channel, scaleType: .bf16, packedShape: [], scaleShape: [])
    }
    expectError(.invalidGroupSize(groupSize: 0)) {
      try Int4Layout(rows: 4, columns: 64, strategy: .group(size: 0), scaleType: .bf16)
    }
    expectError(.columnsNotDivisibleByGroupSize(columns: 70, groupSize: 32)) {
      try Int4Layout(rows: 4, columns: 70, strategy: .group(size: 32), scaleType: .bf16)
    }
    expectError(.packedShapeMismatch(expected: [2048, 896], actual: [2048, 895])) {
      try Int4Layout(weightShape: [2048, 7168], strategy: .group(size: 32), scaleType: .bf16, packedShape: [2048, 895], scaleShape: [2048, 224])
    }
    expectError(.scaleShapeMismatch(expected: [2048, 224], actual: [2048, 56])) {
      try Int4Layout(weightShape: [2048, 7168], strategy: .group(size: 32), scaleType: .bf16, packedShape: [2048, 896], scaleShape: [2048, 56])
    }
    expectError(.scaleShapeMismatch(expected: [1], actual: [1, 1])) {
      try Int4Layout(weightShape: [4, 8], strategy: .tensor, scaleType: .bf16, packedShape: [4, 1], scaleShape: [1, 1])
    }
    expectError(.zeroPointShapeMismatch(expected: [3, 2], actual: [20, 2])) {
      try Int4Layout(weightShape: [20, 64], strategy: .group(size: 32), scaleType: .bf16, packedShape: [20, 8], scaleShape: [20, 2], zeroPointShape: [20, 2])
    }
    expectError(.groupIndexShapeMismatch(expected: [64], actual: [63])) {
      try Int4Layout(weightShape: [20, 64], strategy: .group(size: 32), scaleType: .bf16, packedShape: [20, 8], scaleShape: [20, 2], groupIndexShape: [63])
    }
    expectError(.zeroPointsNeedGroupOrChannel) {
      try Int4Layout(rows: 4, columns: 8, strategy: .tensor, scaleType: .bf16, hasZeroPoints: true)
    }
    expectError(.groupIndexNeedsGroupStrategy) {
      try Int4Layout(rows: 4, columns: 8, strategy: .channel, scaleType: .bf16, hasGroupIndex: true)
    }
    expectError(.tooLarge(shape: [Int.max / 4, 1 << 20])) {
      try Int4Layout(rows: Int.max / 4, columns: 1 << 20, strategy: .channel, scaleType: .bf16)
    }
  }

  @Test("g_idx: -1 means column order, bad values and group populations throw")
  func groupIndex() throws {
    let layout = try Int4Layout(rows: 2, columns: 8, strategy: .group(size: 4), scaleType: .bf16, hasGroupIndex: true)
    func raw(_ v: [Int32]) -> [UInt8] { Int4Check.bytes(v) }
    let good: [Int32] = [1, 0, 0, 1, 1, 0, 1, 0]
    #expect(try Int4Check.unaligned(raw(good)).withUnsafeBytes { try layout.groupIndex(from: UnsafeRawBufferPointer(rebasing: $0[1...])) } == good)
    #expect(try raw([-1, -1, -1, -1, -1, -1, -1, -1]).withUnsafeBytes { try layout.groupIndex(from: $0) } == nil)
    #expect(throws: Int4LayoutError.groupIndexOutOfRange(column: 2, value: 2, groups: 2)) {
      _ = try raw([0, 0, 2, 1, 1, 0, 1, 0]).withUnsafeBytes { try layout.groupIndex(from: $0) }
    }
    #expect(throws: Int4LayoutError.groupIndexGroupSize(group: 0, count: 5, expected: 4)) {
      _ = try raw([0, 0, 0, 1, 1, 0, 1, 0]).withUnsafeBytes { try layout.groupIndex(from: $0) }
    }
    #expect(throws: Int4LayoutError.groupIndexShapeMismatch(expected: [8], actual: [7])) {
      _ = try raw([0, 0, 0, 1, 1, 0, 1]).withUnsafeBytes { try layout.groupIndex(from: $0) }
    }
  }
}

// MARK: - Byte-for-byte against compressed-tensors 0.12.2 (Fixtures/numerics/int4-*.safetensors)

@Suite("INT4 against compressed-tensors fixtures")
struct Int4FixtureTests {
  static func load(_ name: String) throws -> [String: Int4Check.Tensor] {
    try Int4Check.readSafeTensors(TestPaths.fixture("numerics/" + name))
  }

  static func int8s(_ t: Int4Check.Tensor) -> [Int8] { t.data.map { Int8(bitPattern: $0) } }

  @Test("pack_to_int32 and unpack_from_int32 cases, weights and zero points")
  func pack() throws {
    let tensors = try Self.load("int4-pack.safetensors")
    let packCases = tensors.keys.filter { $0.hasPrefix("pack.") && $0.hasSuffix(".values") }.sorted()
    #expect(packCases.count == 6)
    for key in packCases {
      let name = String(key.dropLast(".values".count))
      let values = tensors[key]!
      let expected = tensors[name + ".packed"]!
      let (rows, columns) = (values.shape[0], values.shape[1])
      #expect(expected.dtype == "I32" && expected.shape == [rows, Int4Packing.wordsPerRow(columns: columns)])
      var packed = [UInt8](repeating: 0xEE, count: expected.data.count)
      Self.int8s(values).withUnsafeBufferPointer { v in
        packed.withUnsafeMutableBytes { Int4Packing.pack(v, rows: rows, columns: columns, into: $0) }
      }
      #expect(packed == expected.data, "\(name)")
      var back = [Int8](repeating: 0, count: rows * columns)
      expected.data.withUnsafeBytes { p in
        back.withUnsafeMutableBufferPointer { Int4Packing.unpack(p, rows: rows, columns: columns, into: $0) }
      }
      #expect(back == Self.int8s(values), "\(name)")
    }
    let zpCases = tensors.keys.filter { $0.hasPrefix("zp.") && $0.hasSuffix(".values") }.sorted()
    #expect(zpCases.count == 2)
    for key in zpCases {
      let name = String(key.dropLast(".values".count))
      let values = tensors[key]!
      let expected = tensors[name + ".packed"]!
      let (rows, columns) = (values.shape[0], values.shape[1])
      #expect(expected.shape == [Int4Packing.wordsPerRow(columns: rows), columns])
      var packed = [UInt8](repeating: 0xEE, count: expected.data.count)
      Self.int8s(values).withUnsafeBufferPointer { v in
        packed.withUnsafeMutableBytes { Int4Packing.packColumns(v, rows: rows, columns: columns, into: $0) }
      }
      #expect(packed == expected.data, "\(name)")
      var back = [Int8](repeating: 0, count: rows * columns)
      expected.data.withUnsafeBytes { p in
        back.withUnsafeMutableBufferPointer { Int4Packing.unpackColumns(p, rows: rows, columns: columns, into: $0) }
      }
      #expect(back == Self.int8s(values), "\(name)")
    }
  }

  static let dequantCases: [(name: String, strategy: Int4Strategy)] = [
    ("group_bf16", .group(size: 32)), ("group_f16", .group(size: 32)), ("group_f32", .group(size: 32)),
    ("channel_bf16", .channel), ("tensor_bf16", .tensor), ("asym_group_bf16", .group(size: 32)),
    ("gidx_group_bf16", .group(size: 32)),
  ]

  static func types(_ dtype: String) -> (Int4ScaleType, Int4OutputType) {
    switch dtype {
    case "BF16": (.bf16, .bf16)
    case "F16": (.f16, .f16)
    default: (.f32, .f32)
    }
  }

  @Test("dequantize: output in the scale dtype is bit-identical to the library, every strategy", arguments: dequantCases.map(\.name))
  func dequantize(_ name: String) throws {
    let tensors = try Self.load("int4-dequant.safetensors")
    let strategy = Self.dequantCases.first { $0.name == name }!.strategy
    let codes = tensors[name + ".codes"]!
    let packed = tensors[name + ".packed"]!
    let scale = tensors[name + ".scale"]!
    let library = tensors[name + ".output"]!
    let zpPacked = tensors[name + ".zero_point_packed"]
    let gIdxRaw = tensors[name + ".g_idx"]
    let (scaleType, outputType) = Self.types(scale.dtype)
    let layout = try Int4Layout(
      weightShape: codes.shape, strategy: strategy, scaleType: scaleType, packedShape: packed.shape,
      scaleShape: scale.shape, zeroPointShape: zpPacked?.shape, groupIndexShape: gIdxRaw?.shape)
    // The packed weights are our packing of the codes.
    var ours = [UInt8](repeating: 0, count: layout.packedByteCount)
    Self.int8s(codes).withUnsafeBufferPointer { v in
      ours.withUnsafeMutableBytes { Int4Packing.pack(v, rows: layout.rows, columns: layout.columns, into: $0) }
    }
    #expect(ours == packed.data)
    if let zpPacked, let zp = tensors[name + ".zero_point"] {
      var z = [UInt8](repeating: 0, count: layout.zeroPointByteCount)
      Self.int8s(zp).withUnsafeBufferPointer { v in
        z.withUnsafeMutableBytes { Int4Packing.packColumns(v, rows: layout.rows, columns: layout.groupsPerRow, into: $0) }
      }
      #expect(z == zpPacked.data)
    }
    let gIdx = try gIdxRaw.map { raw in try raw.data.withUnsafeBytes { try layout.groupIndex(from: $0) } } ?? nil
    #expect((gIdx != nil) == (gIdxRaw != nil))
    for threads in [nil, 1, 2] as [Int?] {
      let (out, counts) = Int4Check.runMatrix(
        layout, packed: packed.data, scales: scale.data, zeroPoints: zpPacked?.data, groupIndex: gIdx,
        outputType: outputType, threads: threads)
      #expect(out == library.data, "\(name) threads \(threads.map(String.init) ?? "reference"): \(Int4Check.firstDifference(out, library.data, elementSize: outputType.byteSize))")
      #expect(counts.nonFinite == 0)
    }
    // FP32 output is the exact product; the inexact count of the library-dtype output
    // is the number of elements where the library's value differs from it.
    let (f32, f32Counts) = Int4Check.runMatrix(
      layout, packed: packed.data, scales: scale.data, zeroPoints: zpPacked?.data, groupIndex: gIdx, outputType: .f32, threads: 2)
    if let exact = tensors[name + ".exact_f32"] { #expect(f32 == exact.data) }
    let f32Values = stride(from: 0, to: f32.count, by: 4).map {
      Float(bitPattern: UInt32(f32[$0]) | UInt32(f32[$0 + 1]) << 8 | UInt32(f32[$0 + 2]) << 16 | UInt32(f32[$0 + 3]) << 24)
    }
    let libraryValues: [Double] =
      switch outputType {
      case .bf16: stride(from: 0, to: library.data.count, by: 2).map { Double(Float(bitPattern: (UInt32(library.data[$0]) | UInt32(library.data[$0 + 1]) << 8) << 16)) }
      case .f16: stride(from: 0, to: library.data.count, by: 2).map { Double(Float16Bridge.value(UInt16(library.data[$0]) | UInt16(library.data[$0 + 1]) << 8)) }
      case .f32: f32Values.map(Double.init)
      }
    if scaleType != .f32 {
      #expect(f32Counts == Int4DequantizeCounts())
      let differing = zip(libraryValues, f32Values).filter { $0 != Double($1) }.count
      let (_, counts) = Int4Check.runMatrix(
        layout, packed: packed.data, scales: scale.data, zeroPoints: zpPacked?.data, groupIndex: gIdx,
        outputType: outputType, threads: 1)
      #expect(counts.inexact == differing, "\(name): inexact \(counts.inexact), library differs from q·s at \(differing)")
    } else {
      #expect(f32 == library.data)
    }
  }

  @Test("K2 gate_proj-like [8, 7168] row block: BF16 bit-identical, FP32 exact, ~37 % inexact")
  func k2Row() throws {
    let tensors = try Self.load("int4-k2row.safetensors")
    let shape = tensors["k2row.weight_shape"]!
    #expect(shape.dtype == "I64")
    let weightShape = (0..<2).map { i in (0..<8).reduce(0) { $0 | Int(shape.data[8 * i + $1]) << (8 * $1) } }
    let packed = tensors["k2row.packed"]!
    let scale = tensors["k2row.scale"]!
    let library = tensors["k2row.output"]!
    let layout = try Int4Layout(
      weightShape: weightShape, strategy: .group(size: 32), scaleType: .bf16, packedShape: packed.shape, scaleShape: scale.shape)
    var counts: [Int4DequantizeCounts] = []
    for threads in [nil, 1, 2] as [Int?] {
      let (out, c) = Int4Check.runMatrix(
        layout, packed: packed.data, scales: scale.data, zeroPoints: nil, groupIndex: nil, outputType: .bf16, threads: threads)
      #expect(out == library.data, "threads \(threads.map(String.init) ?? "reference"): \(Int4Check.firstDifference(out, library.data, elementSize: 2))")
      counts.append(c)
    }
    #expect(counts.allSatisfy { $0 == counts[0] })
    let fraction = Double(counts[0].inexact) / Double(layout.rows * layout.columns)
    #expect(fraction > 0.30 && fraction < 0.45, "inexact fraction \(fraction)")
    // FP32: the exact q·s.
    let (f32, f32Counts) = Int4Check.runMatrix(
      layout, packed: packed.data, scales: scale.data, zeroPoints: nil, groupIndex: nil, outputType: .f32, threads: 2)
    #expect(f32Counts == Int4DequantizeCounts())
    let codes = tensors["k2row.codes"]!.data.map { Int8(bitPattern: $0) }
    var bad = 0
    for r in 0..<layout.rows {
      for c in 0..<layout.columns {
        let g = r * layout.groupsPerRow + c / 32
        let s = Float(bitPattern: (UInt32(scale.data[2 * g]) | UInt32(scale.data[2 * g + 1]) << 8) << 16)
        let i = 4 * (r * layout.columns + c)
        let v = Float(bitPattern: UInt32(f32[i]) | UInt32(f32[i + 1]) << 8 | UInt32(f32[i + 2]) << 16 | UInt32(f32[i + 3]) << 24)
        if Double(v) != Double(codes[r * layout.columns + c]) * Double(s) { bad += 1 }
      }
    }
    #expect(bad == 0)
  }
}
