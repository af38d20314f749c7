import SafeTensors
import Testing
import TestSupport

@Suite("Safetensors mutation")
struct MutationTests {
  /// Applies one random mutation: a byte flip, a truncation, an insertion, or
  /// an edit of the header text (digits, quotes, brackets).
  static func mutate(_ original: [UInt8], _ rng: inout SeededRandom) -> [UInt8] {
    var b = original
    let headerEnd = min(b.count, 8 + Int(b.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) } & 0xFFFF_FFFF))
    switch rng.next() % 6 {
    case 0:  // flip random bits anywhere
      for _ in 0..<(1 + Int(rng.next() % 4)) {
        let i = Int(rng.next() % UInt64(b.count))
        b[i] ^= UInt8(truncatingIfNeeded: 1 << (rng.next() % 8))
      }
    case 1:  // truncate
      b.removeLast(Int(rng.next() % UInt64(b.count)))
    case 2:  // edit the length prefix
      let i = Int(rng.next() % 8)
      b[i] = UInt8(truncatingIfNeeded: rng.next())
    case 3:  // replace a header character with a structural or digit character
      let alphabet = Array("0123456789{}[]\":,-. e".utf8)
      let i = 8 + Int(rng.next() % UInt64(max(1, headerEnd - 8)))
      if i < b.count { b[i] = alphabet[Int(rng.next() % UInt64(alphabet.count))] }
    case 4:  // insert or delete a byte inside the header
      let i = 8 + Int(rng.next() % UInt64(max(1, headerEnd - 8)))
      if i < b.count {
        if rng.next() % 2 == 0 { b.insert(UInt8(truncatingIfNeeded: rng.next()), at: i) } else { b.remove(at: i) }
      }
    default:  // append junk
      for _ in 0..<(1 + Int(rng.next() % 16)) { b.append(UInt8(truncatingIfNeeded: rng.next())) }
    }
    return b
  }

  @Test("Thousands of random mutations of valid shards never crash or hang the reader", .timeLimit(.minutes(3)))
  func mutations() throws {
    let sources = [
      TestPaths.fixture("malformed/safetensors/valid.safetensors"),
      TestPaths.fixture("reference/all-dtypes.safetensors"),
      TestPaths.fixture("reference/escaped-names.safetensors"),
      TestPaths.fixture("malformed/checkpoints/valid-micro/model-00001-of-000002.safetensors"),
    ]
    let dir = TemporaryDirectory()
    defer { dir.remove() }
    var rng = SeededRandom(seed: 0xC0FFEE)
    var rejected = 0
    var accepted = 0
    let perSource = 1000
    for source in sources {
      let original = try readFile(source)
      for k in 0..<perSource {
        let mutated = Self.mutate(original, &rng)
        let path = dir.file("m\(k).safetensors")
        try writeFile(path, mutated)
        let (header, problems) = try SafeTensorsHeader.inspect(path)
        if let header {
          accepted += 1
          // An accepted file must be fully readable: every tensor lies inside it.
          let f = try SafeTensorsFile(path: path)
          for t in header.tensors { _ = f.withData(t) { $0.count } }
          #expect(header.fileSize == mutated.count)
        } else {
          rejected += 1
          #expect(!problems.isEmpty)
          for p in problems { #expect(p.description.contains(path)) }
        }
      }
    }
    #expect(rejected + accepted == perSource * sources.count)
    #expect(rejected > perSource)  // most mutations must be caught
  }
}
