import Checkpoint
import CompressedTensors
import SafeTensors
import StrictJSON
import Testing
import TestSupport
import Verification

@Suite("Checkpoint validation")
struct ValidatorTests {
  func validate(_ entry: ManifestEntry) throws -> ValidationReport {
    let checkpoint = try Checkpoint.load(TestPaths.fixture(entry.path))
    let checksums = entry.checksums.map { TestPaths.fixture(entry.path + "/" + $0) }
    return Validator.validate(checkpoint, options: ValidationOptions(scanData: entry.data, checksumsFile: checksums))
  }

  @Test("Each malformed checkpoint is reported with its code, file and tensor", arguments: ManifestEntry.folders)
  func malformedCheckpoint(_ entry: ManifestEntry) throws {
    let report = try validate(entry)
    if entry.code == "valid" {
      #expect(report.problems.isEmpty, "\(report.problems)")
      #expect(report.isValid)
      return
    }
    #expect(!report.isValid)
    let matches = report.problems.filter { $0.code == entry.code }
    #expect(!matches.isEmpty, "expected \(entry.code), got \(report.problems)")
    if let tensor = entry.tensor {
      #expect(matches.contains { $0.tensor == tensor }, "\(matches)")
    }
    if let file = entry.file {
      #expect(matches.contains { $0.file == file }, "\(matches)")
    }
  }

  @Test("Data problems are found only with a data scan")
  func dataProblemsNeedScan() throws {
    for entry in ManifestEntry.folders where entry.data {
      let checkpoint = try Checkpoint.load(TestPaths.fixture(entry.path))
      let report = Validator.validate(checkpoint)
      #expect(report.isValid, "\(entry): \(report.problems)")
    }
  }

  @Test("A flipped byte passes the header checks but fails the checksum")
  func checksumNeedsFile() throws {
    let checkpoint = try Checkpoint.load(TestPaths.fixture("malformed/checkpoints/checksum-mismatch"))
    #expect(Validator.validate(checkpoint).isValid)
  }

  @Test("The Kimi fixture validates clean with data and checksums, and its counts are right")
  func kimiFixture() throws {
    let checkpoint = try Checkpoint.load(TestPaths.fixture("kimi-k2-tiny"))
    let report = Validator.validate(checkpoint, options: ValidationOptions(scanData: true, checksumsFile: TestPaths.fixture("kimi-k2-tiny/checksums.sha256")))
    #expect(report.problems.isEmpty, "\(report.problems)")
    #expect(report.quantizedModules == 2 * 4 * 3)
    #expect(report.inventoryChecked)
    #expect(report.shards.count == 3)
    #expect(report.hashedBytes == report.shards.compactMap(\.bytes).reduce(0, +))
    let expected = try JSONParser.parse(try readFile(TestPaths.fixture("kimi-k2-tiny.expected.json")))
    for s in report.shards {
      let digest = expected["shards"]?[s.name]?["sha256"]?.stringValue ?? expected["shards"]?[s.name]?.stringValue
      #expect(s.sha256 == digest, "\(s.name)")
    }
  }

  @Test("The K2.5 layout (text_config, language_model. prefix) validates clean")
  func kimi25Fixture() throws {
    let checkpoint = try Checkpoint.load(TestPaths.fixture("kimi-k25-tiny"))
    guard case .compressedTensors(let path, _)? = try checkpoint.quantization() else {
      Issue.record("no compressed-tensors config found")
      return
    }
    #expect(path == ["text_config", "quantization_config"])
    let report = Validator.validate(checkpoint, options: ValidationOptions(scanData: true))
    #expect(report.problems.isEmpty, "\(report.problems)")
    #expect(report.inventoryChecked)
    #expect(report.quantizedModules > 0)
  }

  @Test("A single shard file validates on its own")
  func singleFile() throws {
    let checkpoint = try Checkpoint.load(TestPaths.fixture("kimi-k2-tiny/model-00002-of-000003.safetensors"))
    #expect(checkpoint.isSingleFile)
    let report = Validator.validate(checkpoint, options: ValidationOptions(scanData: true))
    #expect(report.isValid, "\(report.problems)")
    #expect(report.warnings.map(\.code) == ["missing-quantization-config"])
  }

  @Test("Reports every problem when a checkpoint has several")
  func severalProblems() throws {
    let dir = TemporaryDirectory()
    defer { dir.remove() }
    let root = dir.file("ck")
    try copyTree(TestPaths.fixture("malformed/checkpoints/valid-micro"), to: root)
    // Two independent defects: a truncated shard 1 and a broken config.json.
    let shard = root + "/model-00001-of-000002.safetensors"
    var bytes = try readFile(shard)
    bytes.removeLast(100)
    try writeFile(shard, bytes)
    try writeFile(root + "/config.json", Array("{not json".utf8))
    let report = Validator.validate(try Checkpoint.load(root))
    let codes = Set(report.problems.map(\.code))
    #expect(codes.isSuperset(of: ["incomplete-buffer", "invalid-config"]), "\(codes)")
  }
}

@Suite("Checkpoint layout")
struct LayoutTests {
  @Test("Loads config, index, shards and other files of a folder")
  func loadsFolder() throws {
    let c = try Checkpoint.load(TestPaths.fixture("kimi-k2-tiny"))
    #expect(c.shards == (1...3).map { "model-0000\($0)-of-000003.safetensors" })
    #expect(c.index?.weightMap.count == 115)
    #expect(c.otherFiles.contains("tokenizer_config.json"))
    #expect(!c.otherFiles.contains("config.json"))
    #expect(c.loadProblems.isEmpty)
  }

  @Test("The index round-trips through JSON with total_size kept")
  func indexRoundTrip() throws {
    let bytes = try readFile(TestPaths.fixture("kimi-k2-tiny/" + ShardIndex.fileName))
    let index = try ShardIndex.parse(bytes)
    let again = try ShardIndex.parse(index.fileBytes())
    #expect(again.totalSize == index.totalSize)
    #expect(again.weightMap.map(\.tensor).sorted() == index.weightMap.map(\.tensor).sorted())
  }

  @Test("Rejects an index entry that points outside the folder")
  func indexPathEscape() {
    let bad = Array(#"{"weight_map":{"a":"../x.safetensors"}}"#.utf8)
    #expect(throws: CheckpointError.self) { try ShardIndex.parse(bad) }
  }

  @Test("The DeepSeek inventory of the fixture config lists every expected module")
  func inventory() throws {
    let c = try Checkpoint.load(TestPaths.fixture("kimi-k2-tiny"))
    let inv = try #require(try DeepSeekInventory(config: c.textConfig!))
    // Per layer: q_a, q_b, kv_a, kv_b, o; layer 0 dense (3); layers 1-2: shared (3) + 4 experts × 3; lm_head.
    #expect(inv.linears.count == 3 * 5 + 3 + 2 * (3 + 12) + 1)
    #expect(inv.linears.first { $0.name == "model.layers.1.mlp.experts.3.down_proj" }.map { [$0.outFeatures, $0.inFeatures] } == [256, 96])
  }
}

@Suite("Checkpoint mutation")
struct CheckpointMutationTests {
  @Test("Random damage to shards, index and config never crashes the validator", .timeLimit(.minutes(3)))
  func mutations() throws {
    let source = TestPaths.fixture("malformed/checkpoints/valid-micro")
    let dir = TemporaryDirectory()
    defer { dir.remove() }
    let root = dir.file("ck")
    try copyTree(source, to: root)
    let files = ["model-00001-of-000002.safetensors", "model-00002-of-000002.safetensors", "model.safetensors.index.json", "config.json"]
    let originals = try files.map { try readFile(root + "/" + $0) }
    var rng = SeededRandom(seed: 0xBADC0DE)
    var invalid = 0
    let rounds = 1000
    for _ in 0..<rounds {
      let k = Int(rng.next() % UInt64(files.count))
      var b = originals[k]
      switch rng.next() % 4 {
      case 0:
        for _ in 0..<(1 + Int(rng.next() % 3)) {
          let i = Int(rng.next() % UInt64(b.count))
          b[i] ^= UInt8(truncatingIfNeeded: 1 << (rng.next() % 8))
        }
      case 1: b.removeLast(Int(rng.next() % UInt64(b.count)))
      case 2:
        // Damage the JSON part: the header of a shard, or anywhere in a JSON file.
        let limit = k < 2 ? min(b.count, 2048) : b.count
        let i = Int(rng.next() % UInt64(limit))
        b[i] = Array("0123456789-{}[]\",:".utf8)[Int(rng.next() % 18)]
      default:
        // A plausible but wrong number in the data of weight_shape or a scale.
        let i = Int(rng.next() % UInt64(b.count))
        b[i] = UInt8(truncatingIfNeeded: rng.next())
      }
      try writeFile(root + "/" + files[k], b)
      let report = Validator.validate(try Checkpoint.load(root), options: ValidationOptions(scanData: true))
      if !report.isValid { invalid += 1 }
      for p in report.problems where p.severity == .error { #expect(!p.code.isEmpty && !p.message.isEmpty) }
      try writeFile(root + "/" + files[k], originals[k])
    }
    #expect(invalid > rounds / 2)
  }
}
