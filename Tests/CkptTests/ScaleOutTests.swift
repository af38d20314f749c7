import Conversion
import Foundation
import Synchronization
import SafeTensors
import StrictJSON
import Testing
import TestSupport
import Verification

/// Spread conversions (`--shard-index/--shard-count`, Slurm and Indexed Job
/// environments, `--finalize`) and the pipelined shard output.
@Suite("ckpt convert beyond one process")
struct ScaleOutTests {
  static let kimi = TestPaths.fixture("kimi-k2-tiny")

  /// Every file of a folder (journals included) with its bytes.
  static func contents(_ dir: String) throws -> [String: Data] {
    var out: [String: Data] = [:]
    for name in try FileManager.default.contentsOfDirectory(atPath: dir) {
      out[name] = FileManager.default.contents(atPath: dir + "/" + name)
    }
    return out
  }

  @Test("Three processes at once (flags, Slurm array, Indexed Job) then --finalize equal one process, byte for byte")
  func partsEqualSingle() throws {
    let tmp = TemporaryDirectory("convert-parts")
    defer { tmp.remove() }
    let single = tmp.path + "/single"
    let spread = tmp.path + "/spread"
    let one = try runCkpt(["convert", Self.kimi, single, "--to", "fp8-block"])
    #expect(one.status == 0, "\(one.stderr)")
    // Three concurrent processes, each naming its part a different way.
    let runs: [([String], [String: String])] = [
      (["--shard-index", "0", "--shard-count", "3"], [:]),
      ([], ["SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "4", "SLURM_ARRAY_TASK_COUNT": "3"]),
      (["--shard-count", "3"], ["JOB_COMPLETION_INDEX": "2"]),
    ]
    let results = Mutex<[Int: CommandResult]>([:])
    DispatchQueue.concurrentPerform(iterations: runs.count) { i in
      let r = try? runCkpt(["convert", Self.kimi, spread, "--to", "fp8-block", "--json"] + runs[i].0, environment: runs[i].1)
      results.withLock { $0[i] = r }
    }
    for i in 0..<runs.count {
      let r = try #require(results.withLock { $0[i] })
      #expect(r.status == 0, "\(r.stderr)")
      let root = try JSONParser.parse(Array(r.stdout.utf8))
      #expect(root["finalized"]?.boolValue == false)
      #expect(root["part"]?["index"]?.intValue == i)
      #expect(root["shards"]?.arrayValue?.count == 1)
    }
    // Not finalized yet: no config, no index.
    #expect(!FileManager.default.fileExists(atPath: spread + "/config.json"))
    let fin = try runCkpt(["convert", "--finalize", spread])
    #expect(fin.status == 0, "\(fin.stderr)")
    #expect(try Self.contents(spread) == (try Self.contents(single)))
    let v = try runCkpt(["validate", spread])
    #expect(v.status == 0, "\(v.stdout)")
  }

  @Test("--finalize refuses missing and damaged parts, and a part never touches another part's shards")
  func finalizeRefuses() throws {
    let tmp = TemporaryDirectory("convert-finalize")
    defer { tmp.remove() }
    let out = tmp.path + "/out"
    let noJournal = try runCkpt(["convert", "--finalize", tmp.path])
    #expect(noJournal.status == 1 && noJournal.stderr.contains("no convert journal"), "\(noJournal.stderr)")
    #expect(try runCkpt(["convert", Self.kimi, out, "--to", "bf16", "--shard-index", "1", "--shard-count", "2"]).status == 0)
    let shards = try FileManager.default.contentsOfDirectory(atPath: out).filter { $0.hasSuffix(".safetensors") }
    #expect(shards == ["model-00002-of-000003.safetensors"])
    let early = try runCkpt(["convert", "--finalize", out])
    #expect(early.status == 1 && early.stderr.contains("incomplete") && early.stderr.contains("model-00001-of-000003"), "\(early.stderr)")
    #expect(try runCkpt(["convert", Self.kimi, out, "--to", "bf16", "--shard-index", "0", "--shard-count", "2"]).status == 0)
    // Damage a finished shard: finalize names it.
    let damaged = out + "/model-00003-of-000003.safetensors"
    let h = try #require(FileHandle(forWritingAtPath: damaged))
    try h.seek(toOffset: 200)
    h.write(Data([0xFF]))
    try h.close()
    let bad = try runCkpt(["convert", "--finalize", out])
    #expect(bad.status == 1 && bad.stderr.contains("shard-mismatch") && bad.stderr.contains("model-00003-of-000003"), "\(bad.stderr)")
    // Rerunning that part redoes it; then finalize passes.
    #expect(try runCkpt(["convert", Self.kimi, out, "--to", "bf16", "--shard-index", "0", "--shard-count", "2"]).status == 0)
    let ok = try runCkpt(["convert", "--finalize", out, "--json"])
    #expect(ok.status == 0, "\(ok.stderr)")
    #expect(try JSONParser.parse(Array(ok.stdout.utf8))["finalized"]?.boolValue == true)
    // A different target for finalize is refused.
    #expect(try runCkpt(["convert", "--finalize", out, "--to", "fp16"]).status == 1)
  }

  @Test("Thread split: a shard and its hasher take two jobs; a shard that writes less than it reads gives the hasher's job to the kernels")
  func threadSplit() {
    #expect(ConvertJob.split(jobs: 2, shards: 3) == (1, 1))
    #expect(ConvertJob.split(jobs: 2, shards: 3, outputSmaller: true) == (1, 2))
    #expect(ConvertJob.split(jobs: 8, shards: 4) == (4, 1))
    #expect(ConvertJob.split(jobs: 8, shards: 1) == (1, 7))
    #expect(ConvertJob.split(jobs: 8, shards: 1, outputSmaller: true) == (1, 8))
    #expect(ConvertJob.split(jobs: 1, shards: 2) == (1, 1))
  }

  @Test("Part flags and environments: bad combinations are usage errors")
  func partErrors() throws {
    let tmp = TemporaryDirectory("convert-part-errors")
    defer { tmp.remove() }
    let out = tmp.path + "/out"
    #expect(try runCkpt(["convert", Self.kimi, out, "--to", "bf16", "--shard-index", "2", "--shard-count", "2"]).status == 64)
    #expect(try runCkpt(["convert", Self.kimi, out, "--to", "bf16", "--shard-index", "0"]).status == 64)
    #expect(try runCkpt(["convert", Self.kimi, out, "--to", "bf16"], environment: ["JOB_COMPLETION_INDEX": "1"]).status == 64)
    #expect(try runCkpt(["convert", Self.kimi, out, "--to", "bf16"], environment: ["SLURM_ARRAY_TASK_ID": "x"]).status == 64)
    #expect(try runCkpt(["convert", Self.kimi, out, "--to", "bf16", "--shard-count", "2"], environment: ["SLURM_ARRAY_TASK_ID": "3"]).status == 64)
    #expect(try runCkpt(["convert", "--finalize"]).status == 64)
    #expect(!FileManager.default.fileExists(atPath: out))
  }

  @Test("ShardPart.resolve reads flags first, then Slurm (minus SLURM_ARRAY_TASK_MIN), then JOB_COMPLETION_INDEX")
  func resolve() throws {
    #expect(try ShardPart.resolve(index: nil, count: nil, environment: [:]) == nil)
    #expect(try ShardPart.resolve(index: 1, count: 4, environment: ["SLURM_ARRAY_TASK_ID": "3"]) == ShardPart(index: 1, count: 4, source: "--shard-index"))
    #expect(
      try ShardPart.resolve(index: nil, count: nil, environment: ["SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "8"])
        == ShardPart(index: 6, count: 8, source: "SLURM_ARRAY_TASK_ID"))
    #expect(try ShardPart.resolve(index: nil, count: 5, environment: ["JOB_COMPLETION_INDEX": "4"]) == ShardPart(index: 4, count: 5, source: "JOB_COMPLETION_INDEX"))
    let p = ShardPart(index: 1, count: 3, source: "")
    #expect((0..<7).filter(p.contains) == [1, 4])
  }

  @Test("PipelinedSink writes exactly the appended bytes and their SHA-256, with and without O_DIRECT", arguments: [true, false])
  func pipelinedSink(direct: Bool) throws {
    let tmp = TemporaryDirectory("sink")
    defer { tmp.remove() }
    // 2.3 ring buffers plus an odd tail, appended in uneven pieces.
    let total = PipelinedSink.bufferSize * 2 + PipelinedSink.bufferSize / 3 + 4097
    var bytes = [UInt8](repeating: 0, count: total)
    var state: UInt64 = 0x9E37_79B9_7F4A_7C15
    for i in 0..<total {
      state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
      bytes[i] = UInt8(truncatingIfNeeded: state >> 33)
    }
    let path = tmp.path + "/out.bin"
    let sink = try PipelinedSink(path: path, direct: direct)
    var at = 0
    var step = 1
    try bytes.withUnsafeBytes { (all) throws in
      while at < total {
        let n = min(step, total - at)
        try sink.append(UnsafeRawBufferPointer(rebasing: all[at..<(at + n)]))
        at += n
        step = step * 7 % 10_000_019 + 1
      }
    }
    #expect(sink.count == total)
    try sink.finish()
    let written = try #require(FileManager.default.contents(atPath: path))
    #expect(written.count == total)
    #expect(written == Data(bytes))
    #expect(sink.sha256 == bytes.withUnsafeBytes { Hashing.sha256($0) })
  }

  @Test("A PipelinedSink abandoned with a partly filled buffer is released cleanly (a failed conversion or decompression)")
  func abandonedSink() throws {
    let tmp = TemporaryDirectory("sink-abandoned")
    defer { tmp.remove() }
    do {
      let sink = try PipelinedSink(path: tmp.path + "/out.bin", direct: false, hashing: false)
      try [UInt8](repeating: 7, count: 1000).withUnsafeBytes { try sink.append($0) }
      #expect(sink.count == 1000)
    }
    // Reaching here without a trap is the test: libdispatch traps on a semaphore disposed below its start value.
    #expect(FileManager.default.fileExists(atPath: tmp.path + "/out.bin"))
  }
}
