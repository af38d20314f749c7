import SafeTensors
import StrictJSON
import Testing
import TestSupport

/// Builds a safetensors file from a header string and data bytes.
func makeFile(_ header: String, data: [UInt8] = [], pad: Bool = false) -> [UInt8] {
  var h = Array(header.utf8)
  if pad { while h.count % 8 != 0 { h.append(0x20) } }
  return withUnsafeBytes(of: UInt64(h.count).littleEndian) { Array($0) } + h + data
}

/// Writes bytes to a temporary file and returns the validation result.
func inspect(_ bytes: [UInt8]) throws -> (SafeTensorsHeader?, [SafeTensorsError]) {
  let dir = TemporaryDirectory()
  defer { dir.remove() }
  try writeFile(dir.file("t.safetensors"), bytes)
  return try SafeTensorsHeader.inspect(dir.file("t.safetensors"))
}

@Suite("Safetensors reader")
struct ReaderTests {
  @Test("Each malformed fixture is rejected with its code, naming the file and tensor", arguments: ManifestEntry.files)
  func malformedFixture(_ entry: ManifestEntry) throws {
    let path = TestPaths.fixture(entry.path)
    if entry.code == "valid" {
      let file = try SafeTensorsFile(path: path)
      #expect(!file.tensors.isEmpty)
      return
    }
    let (header, problems) = try SafeTensorsHeader.inspect(path)
    #expect(header == nil)
    let first = try #require(problems.first)
    #expect(first.code == entry.code, "\(first)")
    if let tensor = entry.tensor { #expect(first.tensor == tensor, "\(first)") }
    #expect(first.description.contains(path))
    #expect(throws: SafeTensorsError.self) { try SafeTensorsFile(path: path) }
  }

  @Test("Accepts a header with leading whitespace, rank-0, empty tensors and extra fields")
  func allowedOddities() throws {
    let header = #"  {"a":{"dtype":"F32","shape":[],"data_offsets":[0,4],"extra":1},"b":{"dtype":"BF16","shape":[0,4],"data_offsets":[4,4]}}"#
    let (h, problems) = try inspect(makeFile(header, data: [0, 0, 128, 63]))
    #expect(problems.isEmpty, "\(problems)")
    let parsed = try #require(h)
    #expect(parsed.tensor(named: "a")?.shape == [])
    #expect(parsed.tensor(named: "a")?.elementCount == 1)
    #expect(parsed.tensor(named: "b")?.byteCount == 0)
  }

  @Test("Accepts an empty header object with no tensors")
  func zeroTensors() throws {
    let (h, problems) = try inspect(makeFile("{}"))
    #expect(problems.isEmpty)
    #expect(h?.tensors.isEmpty == true)
  }

  @Test("Rejects a duplicate key inside a tensor entry as an invalid entry")
  func duplicateField() throws {
    let header = #"{"a":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#
    let (_, problems) = try inspect(makeFile(header, data: [0, 0, 0, 0]))
    #expect(problems.first?.code == "invalid-tensor-entry")
    #expect(problems.first?.tensor == "a")
  }

  @Test("Reports every per-tensor problem in one header, not only the first")
  func collectsAll() throws {
    let header = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[3],"data_offsets":[4,8]}}"#
    let (_, problems) = try inspect(makeFile(header, data: Array(repeating: 0, count: 8)))
    #expect(problems.map(\.code) == ["size-mismatch", "size-mismatch"])
    #expect(problems.map(\.tensor) == ["a", "b"])
  }

  @Test("Names the cut tensor when a shard is truncated")
  func truncationNamesTensor() throws {
    let header = #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[4],"data_offsets":[4,20]}}"#
    let (_, problems) = try inspect(makeFile(header, data: Array(repeating: 0, count: 10)))
    #expect(problems.first?.code == "incomplete-buffer")
    #expect(problems.first?.tensor == "b")
  }

  @Test("Reads tensor data zero-copy at the right offsets")
  func readsData() throws {
    let header = #"{"x":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},"y":{"dtype":"I16","shape":[1],"data_offsets":[3,5]}}"#
    let dir = TemporaryDirectory()
    defer { dir.remove() }
    try writeFile(dir.file("d.safetensors"), makeFile(header, data: [1, 2, 3, 0x34, 0x12]))
    let f = try SafeTensorsFile(path: dir.file("d.safetensors"))
    #expect(try f.bytes(of: "x") == [1, 2, 3])
    let y = try f.info("y")
    let v = f.withData(y) { Int16(littleEndian: $0.loadUnaligned(as: Int16.self)) }
    #expect(v == 0x1234)
    #expect(throws: SafeTensorsError.self) { try f.info("z") }
  }
}
