import SafeTensors
import StrictJSON
import Testing
import TestSupport

@Suite("Safetensors writer")
struct WriterTests {
  static let referenceFiles = [
    "all-dtypes.safetensors", "extra-dtypes.safetensors", "numpy-dtypes.safetensors",
    "scalar-and-empty.safetensors", "escaped-names.safetensors", "no-tensors.safetensors",
  ]

  /// Reads `path` and writes it back with the given order; returns the new bytes.
  func rewrite(_ path: String, order: TensorOrder) throws -> [UInt8] {
    let source = try SafeTensorsFile(path: path)
    let dir = TemporaryDirectory()
    defer { dir.remove() }
    let out = dir.file("out.safetensors")
    let plan = source.tensors.map { PlannedTensor(name: $0.name, dtype: $0.dtype, shape: $0.shape) }
    let writer = try SafeTensorsWriter(path: out, tensors: plan, metadata: source.header.metadata, order: order)
    for t in writer.tensors {
      let info = try source.info(t.name)
      try source.withData(info) { (raw) throws(SafeTensorsError) in try writer.write(raw, for: t.name) }
    }
    try writer.finish()
    return try readFile(out)
  }

  @Test("Files from the reference writer are rewritten byte for byte", arguments: referenceFiles)
  func roundTrip(_ name: String) throws {
    let path = TestPaths.fixture("reference/" + name)
    let original = try readFile(path)
    #expect(try rewrite(path, order: .asGiven) == original)
    #expect(try rewrite(path, order: .reference) == original)
  }

  @Test("Kimi fixture shards are rewritten byte for byte")
  func roundTripShards() throws {
    for i in 1...3 {
      let path = TestPaths.fixture("kimi-k2-tiny/model-0000\(i)-of-000003.safetensors")
      #expect(try rewrite(path, order: .reference) == readFile(path))
    }
  }

  @Test("The header matches the reference writer's text exactly, escapes included")
  func headerText() throws {
    let expected = try JSONParser.parse(try readFile(TestPaths.fixture("reference/expected.json")))
    for name in Self.referenceFiles {
      let text = try #require(expected["files"]?[name]?["header_text"]?.stringValue)
      let f = try SafeTensorsFile(path: TestPaths.fixture("reference/" + name))
      let plan = f.tensors.map { PlannedTensor(name: $0.name, dtype: $0.dtype, shape: $0.shape) }
      let bytes = SafeTensorsWriter.headerBytes(tensors: plan, sizes: f.tensors.map(\.byteCount), metadata: f.header.metadata)
      #expect(String(decoding: bytes, as: UTF8.self) == text, "\(name)")
    }
  }

  @Test("Streams a tensor in pieces and leaves no file until finished")
  func streamsAndCommits() throws {
    let dir = TemporaryDirectory()
    defer { dir.remove() }
    let out = dir.file("s.safetensors")
    let w = try SafeTensorsWriter(path: out, tensors: [PlannedTensor(name: "w", dtype: .u8, shape: [10])])
    try w.write([1, 2, 3], for: "w")
    try w.write([4, 5, 6, 7, 8, 9, 10])
    #expect(FileSystem.fileSize(out) == nil)
    try w.finish()
    let f = try SafeTensorsFile(path: out)
    #expect(try f.bytes(of: "w") == Array(1...10))
    #expect(f.header.metadataValue("format") == "pt")
    #expect(f.header.headerLength % 8 == 0)
    #expect(try FileSystem.listDirectory(dir.path) == ["s.safetensors"])
  }

  @Test("Refuses writes out of plan and removes the temporary file when abandoned")
  func misuse() throws {
    let dir = TemporaryDirectory()
    defer { dir.remove() }
    let out = dir.file("m.safetensors")
    do {
      let w = try SafeTensorsWriter(path: out, tensors: [PlannedTensor(name: "a", dtype: .u8, shape: [2]), PlannedTensor(name: "b", dtype: .u8, shape: [1])], order: .asGiven)
      #expect(throws: SafeTensorsError.self) { try w.write([1], for: "b") }
      try w.write([1, 2], for: "a")
      #expect(throws: SafeTensorsError.self) { try w.finish() }
      #expect(throws: SafeTensorsError.self) { try w.write([1, 2, 3]) }
    }
    #expect(try FileSystem.listDirectory(dir.path).isEmpty)
    #expect(throws: SafeTensorsError.self) {
      _ = try SafeTensorsWriter(path: out, tensors: [PlannedTensor(name: "a", dtype: .u8, shape: [1]), PlannedTensor(name: "a", dtype: .u8, shape: [1])])
    }
  }
}
