import QuantKernels
import Testing
import TestSupport

// MARK: - Shared test helpers (fixtures, seeded stream, SHA-256, tiny JSON)

/// `Fixtures/numerics/<name>`.
func numericFixture(_ name: String) -> String { TestPaths.fixture("numerics/" + name) }

/// The file name stem each format's fixtures use.
func fixtureName(_ format: FloatFormat) -> String {
  switch format {
  case .bf16: "bf16"
  case .f16: "f16"
  case .f32: "f32"
  case .f8e4m3fn: "f8e4m3fn"
  case .f8e5m2: "f8e5m2"
  case .f8e8m0: "f8e8m0"
  }
}

/// The narrow formats (every format but FP32).
let narrowFormats: [FloatFormat] = [.bf16, .f16, .f8e4m3fn, .f8e5m2, .f8e8m0]

/// Input `i` of the seeded FP32 stream of Docs/NUMERIC-FIXTURES.md, as bits.
func seededStream(seed: UInt64, count: Int) -> [UInt32] {
  var rng = SeededRandom(seed: seed)
  return (0..<count).map { _ in
    let a = rng.next()
    let b = rng.next()
    if a & 1 == 0 { return UInt32(truncatingIfNeeded: b >> 32) }
    let sign = (b >> 63) & 1
    let exponent = 107 + ((a >> 1) % 41)  // 2⁻²⁰ … 2²⁰
    return UInt32(sign << 31 | exponent << 23 | (b & 0x7F_FFFF))
  }
}

/// Bit patterns that every conversion test should see: zeros, subnormals,
/// normal edges, halfway cases, saturation edges, infinities and NaNs.
let edgeBits: [UInt32] = {
  var v: [UInt32] = [
    0x0000_0000, 0x0000_0001, 0x0040_0000, 0x0040_0001, 0x0060_0000, 0x007F_FFFF, 0x0080_0000,
    0x3380_0000, 0x3380_0001, 0x3300_0000, 0x33C0_0000,  // 2⁻²⁴, halfway to it, 1.5·2⁻²⁴ (F16 subnormal edge)
    0x387F_E000, 0x387F_F000, 0x3880_0000,  // F16 min normal edges
    0x3A80_0000, 0x3A40_0000, 0x3AC0_0000,  // 2⁻¹⁰, 0.75·2⁻¹⁰, 1.5·2⁻¹⁰ (E4M3 subnormal rounding)
    0x3B00_0000, 0x3C80_0000, 0x3C7F_FFFF, 0x3C78_0000,  // 2⁻⁹, 2⁻⁶, just below, 15/16·2⁻⁶
    0x3F80_0000, 0x3F88_0000, 0x3F98_0000, 0x3F80_8000, 0x3F81_8000, 0x3F80_8001,  // 1.0, 1.0625, 1.1875, bf16 ties
    0x43E0_0000, 0x43E0_0001, 0x43E8_0000, 0x43E7_FFFF, 0x43E8_0001, 0x447A_0000,  // 448, 464, 1000
    0x4760_0000, 0x476F_FFFF, 0x4770_0000, 0x4780_0000,  // 57344, 61440 (E5M2 overflow edge), 65536
    0x477F_E000, 0x477F_EFFF, 0x477F_F000, 0x477F_FFFF,  // 65504, 65520 (F16 overflow edge)
    0x7F00_0000, 0x7F3F_FFFF, 0x7F40_0000, 0x7F7F_7FFF, 0x7F7F_8000, 0x7F7F_FFFF,  // E8M0/BF16 top edges
    0x7F80_0000, 0x7F80_0001, 0x7FA0_0000, 0x7FC0_0000, 0x7FC0_0001, 0x7FFF_FFFF, 0x7FE0_2000,
  ]
  v += v.map { $0 | 0x8000_0000 }
  return v
}()

/// Seeded inputs mixed with edge values: a quarter of the elements are edges.
func mixedInputs(count: Int, seed: UInt64) -> [UInt32] {
  var rng = SeededRandom(seed: seed)
  let stream = seededStream(seed: seed ^ 0xA5A5, count: count)
  return (0..<count).map { i in
    rng.next() % 4 == 0 ? edgeBits[Int(rng.next() % UInt64(edgeBits.count))] : stream[i]
  }
}

/// Reads a little-endian `u32` file.
func readU32(_ path: String) throws -> [UInt32] {
  let bytes = try readFile(path)
  return stride(from: 0, to: bytes.count - 3, by: 4).map {
    UInt32(bytes[$0]) | UInt32(bytes[$0 + 1]) << 8 | UInt32(bytes[$0 + 2]) << 16 | UInt32(bytes[$0 + 3]) << 24
  }
}

/// Lower-case hex.
func hex<T: BinaryInteger>(_ v: T) -> String { "0x" + String(v, radix: 16) }

/// SHA-256 (FIPS 180-4); test-only, so plain and unoptimized.
func sha256Hex(_ message: [UInt8]) -> String {
  let k: [UInt32] = [
    0x428a_2f98, 0x7137_4491, 0xb5c0_fbcf, 0xe9b5_dba5, 0x3956_c25b, 0x59f1_11f1, 0x923f_82a4, 0xab1c_5ed5,
    0xd807_aa98, 0x1283_5b01, 0x2431_85be, 0x550c_7dc3, 0x72be_5d74, 0x80de_b1fe, 0x9bdc_06a7, 0xc19b_f174,
    0xe49b_69c1, 0xefbe_4786, 0x0fc1_9dc6, 0x240c_a1cc, 0x2de9_2c6f, 0x4a74_84aa, 0x5cb0_a9dc, 0x76f9_88da,
    0x983e_5152, 0xa831_c66d, 0xb003_27c8, 0xbf59_7fc7, 0xc6e0_0bf3, 0xd5a7_9147, 0x06ca_6351, 0x1429_2967,
    0x27b7_0a85, 0x2e1b_2138, 0x4d2c_6dfc, 0x5338_0d13, 0x650a_7354, 0x766a_0abb, 0x81c2_c92e, 0x9272_2c85,
    0xa2bf_e8a1, 0xa81a_664b, 0xc24b_8b70, 0xc76c_51a3, 0xd192_e819, 0xd699_0624, 0xf40e_3585, 0x106a_a070,
    0x19a4_c116, 0x1e37_6c08, 0x2748_774c, 0x34b0_bcb5, 0x391c_0cb3, 0x4ed8_aa4a, 0x5b9c_ca4f, 0x682e_6ff3,
    0x748f_82ee, 0x78a5_636f, 0x84c8_7814, 0x8cc7_0208, 0x90be_fffa, 0xa450_6ceb, 0xbef9_a3f7, 0xc671_78f2,
  ]
  var h: [UInt32] = [
    0x6a09_e667, 0xbb67_ae85, 0x3c6e_f372, 0xa54f_f53a, 0x510e_527f, 0x9b05_688c, 0x1f83_d9ab, 0x5be0_cd19,
  ]
  var data = message
  data.append(0x80)
  while data.count % 64 != 56 { data.append(0) }
  let bitLength = UInt64(message.count) * 8
  for i in (0..<8).reversed() { data.append(UInt8(truncatingIfNeeded: bitLength >> (8 * UInt64(i)))) }
  func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { x >> n | x << (32 - n) }
  var w = [UInt32](repeating: 0, count: 64)
  // Unchecked buffers: debug builds would otherwise spend seconds on bounds checks.
  k.withUnsafeBufferPointer { k in
  w.withUnsafeMutableBufferPointer { w in
  data.withUnsafeBufferPointer { data in
  for chunk in stride(from: 0, to: data.count, by: 64) {
    for t in 0..<16 {
      let p = chunk + 4 * t
      w[t] = UInt32(data[p]) << 24 | UInt32(data[p + 1]) << 16 | UInt32(data[p + 2]) << 8 | UInt32(data[p + 3])
    }
    for t in 16..<64 {
      let s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3)
      let s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10)
      w[t] = w[t - 16] &+ s0 &+ w[t - 7] &+ s1
    }
    var (a, b, c, d, e, f, g, hh) = (h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7])
    for t in 0..<64 {
      let s1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)
      let ch = (e & f) ^ (~e & g)
      let t1 = hh &+ s1 &+ ch &+ k[t] &+ w[t]
      let s0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)
      let maj = (a & b) ^ (a & c) ^ (b & c)
      let t2 = s0 &+ maj
      (hh, g, f, e, d, c, b, a) = (g, f, e, d &+ t1, c, b, a, t1 &+ t2)
    }
    h[0] &+= a; h[1] &+= b; h[2] &+= c; h[3] &+= d
    h[4] &+= e; h[5] &+= f; h[6] &+= g; h[7] &+= hh
  }
  }
  }
  }
  return h.map { v in
    let s = String(v, radix: 16)
    return String(repeating: "0", count: 8 - s.count) + s
  }.joined()
}

/// A minimal JSON value for the fixture files (objects, arrays, strings, integers).
indirect enum MiniJSON {
  case object([(String, MiniJSON)])
  case array([MiniJSON])
  case string(String)
  case number(String)
  case literal(String)

  subscript(key: String) -> MiniJSON? {
    if case .object(let members) = self { return members.first { $0.0 == key }?.1 }
    return nil
  }
  var array: [MiniJSON]? { if case .array(let a) = self { a } else { nil } }
  var string: String? { if case .string(let s) = self { s } else { nil } }
  var int: Int? { if case .number(let n) = self { Int(n) } else { nil } }
  var members: [(String, MiniJSON)] { if case .object(let m) = self { m } else { [] } }

  /// Parses the JSON that the fixture script writes (no escapes other than `\"` and `\\`).
  static func parse(_ bytes: [UInt8]) -> MiniJSON? {
    var i = 0
    func skip() { while i < bytes.count, [0x20, 0x0A, 0x0D, 0x09].contains(bytes[i]) { i += 1 } }
    func value() -> MiniJSON? {
      skip()
      guard i < bytes.count else { return nil }
      switch bytes[i] {
      case UInt8(ascii: "{"):
        i += 1
        var members: [(String, MiniJSON)] = []
        skip()
        if bytes[i] == UInt8(ascii: "}") { i += 1; return .object(members) }
        while true {
          guard case .string(let key)? = value() else { return nil }
          skip()
          guard bytes[i] == UInt8(ascii: ":") else { return nil }
          i += 1
          guard let v = value() else { return nil }
          members.append((key, v))
          skip()
          if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
          guard bytes[i] == UInt8(ascii: "}") else { return nil }
          i += 1
          return .object(members)
        }
      case UInt8(ascii: "["):
        i += 1
        var items: [MiniJSON] = []
        skip()
        if bytes[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
        while true {
          guard let v = value() else { return nil }
          items.append(v)
          skip()
          if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
          guard bytes[i] == UInt8(ascii: "]") else { return nil }
          i += 1
          return .array(items)
        }
      case UInt8(ascii: "\""):
        i += 1
        var s: [UInt8] = []
        while bytes[i] != UInt8(ascii: "\"") {
          if bytes[i] == UInt8(ascii: "\\") { i += 1 }
          s.append(bytes[i])
          i += 1
        }
        i += 1
        return .string(String(decoding: s, as: UTF8.self))
      default:
        let start = i
        while i < bytes.count, !",]} \n\r\t".utf8.contains(bytes[i]) { i += 1 }
        let text = String(decoding: bytes[start..<i], as: UTF8.self)
        return text.first.map { $0 == "-" || $0.isNumber } == true ? .number(text) : .literal(text)
      }
    }
    return value()
  }
}

// MARK: - Scalar formats

@Suite("Scalar float formats")
struct ScalarFormatTests {
  /// The fixtures' 1,000,000-input stream, made once for every target.
  static let fixtureStream = seededStream(seed: 0x5EED_0001, count: 1_000_000)

  @Test("The test SHA-256 gives the FIPS 180-4 digests")
  func sha256KnownAnswers() {
    #expect(sha256Hex(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    #expect(sha256Hex([]) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    #expect(
      sha256Hex(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
        == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
  }

  @Test("Every code decodes to the fixture's FP32 bits, NaN payloads included", arguments: narrowFormats)
  func decodeMatchesFixture(_ format: FloatFormat) throws {
    let expected = try readU32(numericFixture("decode-\(fixtureName(format)).u32"))
    #expect(expected.count == 1 << (8 * format.byteSize))
    for (code, bits) in expected.enumerated() {
      let got = format.decode(UInt32(code))
      let want = Float(bitPattern: bits)
      if got.bitPattern != bits {
        Issue.record("\(format) code \(hex(code)): expected \(hex(bits)) (\(want)), got \(hex(got.bitPattern)) (\(got))")
        return
      }
    }
  }

  @Test("The seeded 1,000,000-input stream encodes to the fixture's SHA-256", arguments: narrowFormats)
  func encodeStreamMatchesFixture(_ format: FloatFormat) throws {
    let name = fixtureName(format)
    let expectedHash = String(decoding: try readFile(numericFixture("encode-\(name).sha256")), as: UTF8.self)
      .split(whereSeparator: { $0 == " " || $0 == "\n" }).first.map(String.init) ?? ""
    let inputs = Self.fixtureStream
    let size = format.byteSize
    var out = [UInt8](repeating: 0, count: inputs.count * size)
    for (i, x) in inputs.enumerated() {
      let code = format.encode(Float(bitPattern: x))
      for b in 0..<size { out[i * size + b] = UInt8(truncatingIfNeeded: code >> UInt32(8 * b)) }
    }
    let hash = sha256Hex(out)
    if hash == expectedHash { return }
    // Pinpoint the first mismatch from the head file.
    let head = try readFile(numericFixture("encode-\(name).head"))
    for i in 0..<(head.count / size) {
      var want: UInt32 = 0
      for b in 0..<size { want |= UInt32(head[i * size + b]) << UInt32(8 * b) }
      let got = format.encode(Float(bitPattern: inputs[i]))
      if got != want {
        Issue.record("\(format) input \(i) = \(hex(inputs[i])): expected \(hex(want)), got \(hex(got))")
        return
      }
    }
    Issue.record("\(format): SHA-256 \(hash) != \(expectedHash), and the first \(head.count / size) outputs agree")
  }

  @Test("The special cases of encode-special.json encode as the fixture says", arguments: narrowFormats)
  func encodeSpecialCases(_ format: FloatFormat) throws {
    let json = try #require(MiniJSON.parse(try readFile(numericFixture("encode-special.json"))))
    let cases = try #require(json[fixtureName(format)]?.array)
    #expect(!cases.isEmpty)
    for pair in cases {
      let p = try #require(pair.array)
      let input = UInt32(try #require(p[0].int))
      let want = UInt32(try #require(p[1].int))
      let got = format.encode(Float(bitPattern: input))
      #expect(got == want, "\(format) \(hex(input)) (\(Float(bitPattern: input))): expected \(hex(want)), got \(hex(got))")
    }
  }

  @Test("FP8 decoding agrees with FloatScan's independent Double formula on all 256 codes")
  func fp8DecodeAgreesWithFloatScan() {
    for code in 0..<256 {
      let e4 = Float8E4M3FN.decode(UInt8(code))
      let e4ref = FloatScan.value(bits: UInt64(code), .f8E4M3FN)
      #expect(e4.isNaN == e4ref.isNaN && (e4.isNaN || Double(e4) == e4ref), "E4M3FN \(hex(code))")
      let e5 = Float8E5M2.decode(UInt8(code))
      let e5ref = FloatScan.value(bits: UInt64(code), .f8E5M2)
      #expect(e5.isNaN == e5ref.isNaN && (e5.isNaN || Double(e5) == e5ref), "E5M2 \(hex(code))")
      let e8 = Float8E8M0.decode(UInt8(code))
      #expect(code == 255 ? e8.isNaN : Double(e8) == Double(sign: .plus, exponent: code - 127, significand: 1), "E8M0 \(hex(code))")
    }
  }

  @Test("Encoders give the value that is nearest, ties to an even code, found by search in the decode table")
  func encodersRoundToNearestEven() {
    // An independent oracle: scan all finite codes in Double.
    func nearest(_ x: Float, _ format: FloatFormat, saturate: Bool) -> UInt32 {
      let xd = Double(x)
      var best: UInt32 = 0
      var bestError = Double.infinity
      for code in UInt32(0)..<256 {
        let v = format.decode(code)
        guard v.isFinite, v.sign == x.sign else { continue }
        let error = abs(Double(v) - xd)
        if error < bestError || (error == bestError && code & 1 == 0) { (best, bestError) = (code, error) }
      }
      if !saturate, abs(xd) >= Double(format.maxFinite) {
        // IEEE overflow: at or past max + half a step goes to infinity.
        let halfStep = format == .f8e5m2 ? 4096.0 : 0
        if abs(xd) >= Double(format.maxFinite) + halfStep { return (x.sign == .minus ? 0x80 : 0) | 0x7C }
      }
      return best
    }
    var inputs = mixedInputs(count: 4000, seed: 11).filter { Float(bitPattern: $0).isFinite }
    inputs += edgeBits.filter { Float(bitPattern: $0).isFinite }
    for x in inputs {
      let f = Float(bitPattern: x)
      #expect(UInt32(Float8E4M3FN.encode(f)) == nearest(f, .f8e4m3fn, saturate: true), "E4M3FN \(hex(x)) \(f)")
      #expect(UInt32(Float8E5M2.encode(f)) == nearest(f, .f8e5m2, saturate: false), "E5M2 \(hex(x)) \(f)")
    }
  }

  @Test("F16 encode and decode agree with Swift's Float16 for every non-NaN value")
  func f16AgreesWithSwiftFloat16() {
    #if arch(x86_64) || arch(arm64)
      for code in 0..<65_536 {
        let h = Float16(bitPattern: UInt16(code))
        let got = Float16Bits.decode(UInt16(code))
        if h.isNaN { #expect(got.isNaN); continue }
        #expect(got.bitPattern == Float(h).bitPattern, "decode \(hex(code))")
      }
      for x in Self.fixtureStream[..<200_000] + edgeBits {
        let f = Float(bitPattern: x)
        if f.isNaN { continue }
        #expect(Float16Bits.encode(f) == Float16(f).bitPattern, "encode \(hex(x))")
      }
    #endif
  }

  @Test("BF16 encodes by rounding off 16 bits, ties to even, and decodes by shifting back")
  func bf16Rule() {
    for x in seededStream(seed: 3, count: 100_000) + edgeBits {
      let f = Float(bitPattern: x)
      let code = BFloat16.encode(f)
      if f.isNaN {
        #expect(code == BFloat16.nanCode)
        continue
      }
      #expect(UInt32(code) == (x &+ 0x7FFF &+ ((x >> 16) & 1)) >> 16, "\(hex(x))")
    }
    for code in 0..<65_536 {
      #expect(BFloat16.decode(UInt16(code)).bitPattern == UInt32(code) << 16)
    }
  }

  @Test("Documented examples and policies hold")
  func documentedExamples() {
    // FORMATS.md §5: E4M3FN rounding and codes.
    #expect(Float8E4M3FN.encode(1.0625) == 0x38)
    #expect(Float8E4M3FN.encode(1.1875) == 0x3A)
    #expect(Float8E4M3FN.encode(0x1p-10) == 0x00)
    #expect(Float8E4M3FN.encode(0x1.8p-10) == 0x01)
    #expect(Float8E4M3FN.encode(1) == 0x38)
    #expect(Float8E4M3FN.encode(-0.0) == 0x80)
    #expect(Float8E4M3FN.encode(448) == 0x7E)
    // Saturation: clamp to ±448 first.
    for v: Float in [449, 464, 465, 1000, 1e30, .infinity] {
      #expect(Float8E4M3FN.encode(v) == 0x7E, "\(v)")
      #expect(Float8E4M3FN.encode(-v) == 0xFE, "\(-v)")
    }
    #expect(Float8E4M3FN.encode(.nan) == 0x7F)
    #expect(Float8E4M3FN.encode(-.nan) == 0xFF)
    #expect(Float8E4M3FN.decode(0x7E) == 448 && Float8E4M3FN.decode(0x01) == 0x1p-9 && Float8E4M3FN.decode(0x08) == 0x1p-6)
    #expect(Float8E4M3FN.decode(0x7F).isNaN && Float8E4M3FN.decode(0xFF).isNaN)
    // E5M2: IEEE overflow to infinity.
    #expect(Float8E5M2.encode(57344) == 0x7B)
    #expect(Float8E5M2.encode(61439) == 0x7B)
    #expect(Float8E5M2.encode(61440) == 0x7C)
    #expect(Float8E5M2.encode(-.infinity) == 0xFC)
    #expect(Float8E5M2.encode(0x1p-16) == 0x01 && Float8E5M2.encode(0x1p-17) == 0x00 && Float8E5M2.encode(0x1.8p-17) == 0x01)
    #expect(Float8E5M2.decode(0x7C) == .infinity && Float8E5M2.decode(0x7B) == 57344)
    #expect(Float8E5M2.encode(.nan) == 0x7E && Float8E5M2.encode(-.nan) == 0xFE)
    #expect(Float8E5M2.encode(Float(bitPattern: 0x7F80_0001)) == 0x7E)
    #expect(Float8E5M2.decode(0xFD).bitPattern == 0xFFC0_0000)
    // F16.
    #expect(Float16Bits.encode(65504) == 0x7BFF && Float16Bits.encode(65519.996) == 0x7BFF && Float16Bits.encode(65520) == 0x7C00)
    #expect(Float16Bits.encode(0x1p-24) == 0x0001 && Float16Bits.encode(0x1p-25) == 0x0000 && Float16Bits.encode(0x1.000002p-25) == 0x0001)
    #expect(Float16Bits.encode(-0.0) == 0x8000 && Float16Bits.decode(0x0001) == 0x1p-24)
    // BF16: overflow to infinity, no saturation.
    #expect(BFloat16.encode(.greatestFiniteMagnitude) == 0x7F80)
    #expect(BFloat16.encode(BFloat16.maxFinite) == 0x7F7F)
    #expect(BFloat16.encode(1.00390625) == 0x3F80 && BFloat16.encode(1.01171875) == 0x3F82)
    #expect(BFloat16.encode(.nan) == 0x7FC0 && BFloat16.encode(-.nan) == 0x7FC0)
    #expect(BFloat16.encode(Float(bitPattern: 0xFFFF_FFFF)) == 0x7FC0)
    // F16 NaN: sign, quiet bit, top 9 payload bits; decode keeps the payload as is.
    #expect(Float16Bits.encode(Float(bitPattern: 0x7FA0_0000)) == 0x7F00 && Float16Bits.encode(Float(bitPattern: 0xFF80_0001)) == 0xFE00)
    #expect(Float16Bits.decode(0x7C01).bitPattern == 0x7F80_2000)
    // E8M0: ml_dtypes semantics.
    #expect(Float8E8M0.encode(1) == 0x7F && Float8E8M0.encode(1.5) == 0x80 && Float8E8M0.encode(3) == 0x81)
    #expect(Float8E8M0.encode(0.75) == 0x7F && Float8E8M0.encode(1.4999999) == 0x7F)
    #expect(Float8E8M0.encode(0) == 0xFF && Float8E8M0.encode(-1) == 0xFF && Float8E8M0.encode(.infinity) == 0xFF)
    #expect(Float8E8M0.encode(Float8E8M0.maxFinite) == 0xFE && Float8E8M0.encode(0x1.8p127) == 0xFF)
    #expect(Float8E8M0.encode(0x1p-127) == 0x00 && Float8E8M0.encode(Float(bitPattern: 0x40_0001)) == 0x01 && Float8E8M0.encode(0x1p-140) == 0x00)
    #expect(Float8E8M0.decode(0) == 0x1p-127 && Float8E8M0.decode(0x7F) == 1 && Float8E8M0.decode(0xFF).isNaN)
  }

  @Test("FloatFormat's properties and tables follow the scalar references")
  func formatProperties() {
    #expect(FloatFormat.allCases.map(\.byteSize) == [2, 2, 4, 1, 1, 1])
    for format in FloatFormat.allCases {
      let m = format.maxFinite
      #expect(format.decode(format.encode(m)) == m, "\(format)")
      if format != .f8e8m0 { #expect(format.decode(format.encode(-1)) == -1, "\(format)") }
    }
    for (table, format) in [(Float8E4M3FN.decodeTable, FloatFormat.f8e4m3fn), (Float8E5M2.decodeTable, .f8e5m2), (Float8E8M0.decodeTable, .f8e8m0)] {
      #expect(table.count == 256)
      for code in 0..<256 { #expect(table[code].bitPattern == format.decode(UInt32(code)).bitPattern) }
    }
  }

  @Test("Decoding a code wider than the format traps")
  func decodeTrapsOnWideCode() async {
    await #expect(processExitsWith: .failure) {
      _ = FloatFormat.f8e4m3fn.decode(0x100)
    }
  }
}

// MARK: - Row kernels

@Suite("Float conversion row kernels")
struct FloatConversionTests {
  /// Runs the fast path and the reference on `count` elements at byte offsets
  /// `sourceOffset`/`destinationOffset` and compares every output byte.
  func check(_ from: FloatFormat, _ to: FloatFormat, _ sourceBytes: [UInt8], count: Int, sourceOffset: Int, destinationOffset: Int) {
    let source = [UInt8](repeating: 0xAB, count: sourceOffset) + sourceBytes
    let outBytes = count * to.byteSize
    var fast = [UInt8](repeating: 0xCD, count: destinationOffset + outBytes + 8)
    var reference = fast
    source.withUnsafeBytes { s in
      let src = UnsafeRawBufferPointer(rebasing: s[sourceOffset...])
      fast.withUnsafeMutableBytes { d in
        FloatConversion.convertRow(src, from: from, to: to, count: count, into: UnsafeMutableRawBufferPointer(rebasing: d[destinationOffset...]))
      }
      reference.withUnsafeMutableBytes { d in
        FloatConversion.convertRowReference(src, from: from, to: to, count: count, into: UnsafeMutableRawBufferPointer(rebasing: d[destinationOffset...]))
      }
    }
    if fast != reference {
      let i = zip(fast, reference).enumerated().first { $0.element.0 != $0.element.1 }!.offset
      let element = (i - destinationOffset) / to.byteSize
      let inBits = (0..<from.byteSize).reduce(UInt32(0)) { $0 | UInt32(sourceBytes[element * from.byteSize + $1]) << UInt32(8 * $1) }
      Issue.record("\(from)→\(to) n=\(count) offsets \(sourceOffset)/\(destinationOffset): element \(element) input \(hex(inBits)) differs at byte \(i): fast \(hex(fast[i])) reference \(hex(reference[i]))")
    }
    // Nothing past the end is written.
    #expect(fast[(destinationOffset + outBytes)...].allSatisfy { $0 == 0xCD })
  }

  static let encodeTargets: [FloatFormat] = [.bf16, .f16, .f8e4m3fn, .f8e5m2, .f8e8m0, .f32]

  @Test("FP32 → X: the fast path equals the scalar reference, aligned and unaligned", arguments: encodeTargets)
  func encodeFastMatchesReference(_ to: FloatFormat) {
    // Small sizes because SIMD code is very slow in debug builds.
    for (count, seed) in [(0, 1), (1, 2), (15, 3), (16, 4), (17, 5), (33, 6), (2_500, 7)] as [(Int, UInt64)] {
      let bits = mixedInputs(count: count, seed: seed)
      let bytes = bits.flatMap { v in (0..<4).map { UInt8(truncatingIfNeeded: v >> UInt32(8 * $0)) } }
      for (so, dso) in [(0, 0), (1, 3), (2, 1)] {
        check(.f32, to, bytes, count: count, sourceOffset: so, destinationOffset: dso)
      }
    }
    // Every edge value in every lane position.
    for shift in 0..<16 {
      let bits = Array(repeating: UInt32(0x3F80_0000), count: shift) + edgeBits
      let bytes = bits.flatMap { v in (0..<4).map { UInt8(truncatingIfNeeded: v >> UInt32(8 * $0)) } }
      check(.f32, to, bytes, count: bits.count, sourceOffset: 0, destinationOffset: 0)
    }
  }

  @Test("X → FP32: the fast path equals the scalar reference, aligned and unaligned", arguments: narrowFormats)
  func decodeFastMatchesReference(_ from: FloatFormat) {
    // Every code once (for 16-bit formats in a shuffled order), then random lengths.
    var rng = SeededRandom(seed: 99)
    let all = (0..<(1 << (8 * from.byteSize))).map { UInt32($0) }
    var codes = all
    codes.shuffle(using: &rng)
    let bytes = codes.flatMap { v in (0..<from.byteSize).map { UInt8(truncatingIfNeeded: v >> UInt32(8 * $0)) } }
    check(from, .f32, bytes, count: codes.count, sourceOffset: 0, destinationOffset: 0)
    for count in [1, 7, 15, 17, 100] {
      check(from, .f32, Array(bytes[..<(count * from.byteSize)]), count: count, sourceOffset: 1, destinationOffset: 2)
    }
  }

  @Test("convertRows on several threads equals one convertRow", arguments: [FloatFormat.bf16, .f8e4m3fn])
  func multiCoreMatchesSingle(_ to: FloatFormat) {
    let rows = 40
    let columns = 3_300  // 132,000 elements: two bands of 64 Ki
    let bits = seededStream(seed: 5, count: rows * columns)
    var single = [UInt8](repeating: 0, count: rows * columns * to.byteSize)
    var multi = single
    var back = [Float](repeating: 0, count: rows * columns)
    var backMulti = back
    bits.withUnsafeBytes { s in
      single.withUnsafeMutableBytes { FloatConversion.convertRow(s, from: .f32, to: to, count: rows * columns, into: $0) }
      multi.withUnsafeMutableBytes { FloatConversion.convertRows(s, from: .f32, to: to, rows: rows, columns: columns, into: $0, jobs: 4) }
    }
    #expect(single == multi)
    single.withUnsafeBytes { s in
      back.withUnsafeMutableBytes { FloatConversion.convertRow(s, from: to, to: .f32, count: rows * columns, into: $0) }
      backMulti.withUnsafeMutableBytes { FloatConversion.convertRows(s, from: to, to: .f32, rows: rows, columns: columns, into: $0, jobs: 3) }
    }
    #expect(back.map(\.bitPattern) == backMulti.map(\.bitPattern))
  }

  @Test("A destination buffer that is too small traps")
  func shortBufferTraps() async {
    await #expect(processExitsWith: .failure) {
      let source = [Float](repeating: 1, count: 8)
      var destination = [UInt8](repeating: 0, count: 7)
      source.withUnsafeBytes { s in
        destination.withUnsafeMutableBytes { FloatConversion.convertRow(s, from: .f32, to: .f8e4m3fn, count: 8, into: $0) }
      }
    }
  }

  @Test("A conversion without an FP32 side traps")
  func noFP32SideTraps() async {
    await #expect(processExitsWith: .failure) {
      let source = [UInt8](repeating: 0, count: 8)
      var destination = [UInt8](repeating: 0, count: 8)
      source.withUnsafeBytes { s in
        destination.withUnsafeMutableBytes { FloatConversion.convertRow(s, from: .bf16, to: .f8e4m3fn, count: 4, into: $0) }
      }
    }
  }
}
