import Conversion
import Foundation
import QuantKernels
import SafeTensors
import StrictJSON
import Testing
import TestSupport
import Verification

/// `ckpt requantize` end to end through the built binary: the round trips of
/// issue 5, rule detection on /7 and /7.5 fixtures, off-grid equality with
/// compressed-tensors, the Python check's recorded outputs, refusals.
@Suite("ckpt requantize")
struct RequantizeTests {
  static let kimi = TestPaths.fixture("kimi-k2-tiny")
  static let minmax = TestPaths.fixture("kimi-k2-tiny-minmax")
  static let offgrid = TestPaths.fixture("requantize/offgrid.safetensors")

  static func run(_ args: [String]) throws -> (CommandResult, JSONObject?) {
    let r = try runCkpt(args)
    return (r, (try? JSONParser.parse(Array(r.stdout.utf8)))?.objectValue)
  }

  /// `sha256sum` lines of a folder's shards.
  static func shardDigests(_ dir: String) throws -> [String: String] {
    var out: [String: String] = [:]
    for name in try FileManager.default.contentsOfDirectory(atPath: dir) where name.hasSuffix(".safetensors") {
      out[name] = try Hashing.sha256(file: dir + "/" + name)
    }
    return out
  }

  static func checksums(_ dir: String) throws -> [String: String] {
    let text = try String(contentsOfFile: dir + "/checksums.sha256", encoding: .utf8)
    var out: [String: String] = [:]
    for line in text.split(separator: "\n") {
      let parts = line.split(separator: " ", omittingEmptySubsequences: true)
      out[String(parts[1])] = String(parts[0])
    }
    return out
  }

  @Test(
    "INT4 -> fp16 or fp32 -> requantize gives back the original shard files byte for byte, for the /7 and the /7.5 fixture, and detects the rule",
    arguments: [("kimi-k2-tiny", "qat7"), ("kimi-k2-tiny-minmax", "minmax")], ["fp16", "fp32"])
  func roundTrip(fixture: (String, String), to: String) throws {
    let src = TestPaths.fixture(fixture.0)
    let tmp = TemporaryDirectory("requant-\(fixture.0)-\(to)")
    defer { tmp.remove() }
    let c = try runCkpt(["convert", src, tmp.file("conv"), "--to", to, "--json"])
    #expect(c.status == 0, "\(c.stderr)")
    let (r, json) = try Self.run(["requantize", tmp.file("conv"), tmp.file("int4"), "--to", "int4", "--json"])
    #expect(r.status == 0, "\(r.stderr)")
    let rule = try #require(json?["rule"]?.objectValue)
    #expect(rule["used"]?.stringValue == fixture.1)
    #expect(rule["source"]?.stringValue == "input")
    #expect((rule["confidence"]?.doubleValue ?? 0) > 0.99)
    let totals = try #require(json?["totals"]?.objectValue)
    #expect(totals["groups"]?.intValue == 18432)
    #expect(totals["recovered"]?.intValue == 18432)
    #expect(totals["requantized"]?.intValue == 0)
    #expect(totals["detected_rule"]?.stringValue == fixture.1)
    // weight_packed, weight_scale, weight_shape, every other tensor, header and metadata: the whole files.
    #expect(try Self.shardDigests(tmp.file("int4")) == Self.checksums(src))
    #expect(try Data(contentsOf: URL(fileURLWithPath: tmp.file("int4/model.safetensors.index.json"))) == Data(contentsOf: URL(fileURLWithPath: src + "/model.safetensors.index.json")))
    let config = try #require(JSONParser.parse(Array(FileManager.default.contents(atPath: tmp.file("int4/config.json"))!)).objectValue)
    let original = try #require(JSONParser.parse(Array(FileManager.default.contents(atPath: src + "/config.json")!)).objectValue)
    #expect(config["quantization_config"] == original["quantization_config"])
    #expect(config["torch_dtype"] == original["torch_dtype"])
    let v = try runCkpt(["validate", tmp.file("int4"), "--data", "--checksums", src + "/checksums.sha256"])
    #expect(v.status == 0, "\(v.stdout)")
  }

  @Test("INT4 -> bf16 -> requantize -> bf16 is a fixed point; the report counts ambiguous groups; rerunning skips verified shards")
  func bf16FixedPoint() throws {
    let tmp = TemporaryDirectory("requant-bf16")
    defer { tmp.remove() }
    for fixture in [Self.kimi, Self.minmax] {
      try? FileManager.default.removeItem(atPath: tmp.path)
      try FileManager.default.createDirectory(atPath: tmp.path, withIntermediateDirectories: true)
      #expect(try runCkpt(["convert", fixture, tmp.file("a"), "--to", "bf16"]).status == 0)
      let (r, json) = try Self.run(["requantize", tmp.file("a"), tmp.file("int4"), "--to", "int4", "--json", "--jobs", "3"])
      #expect(r.status == 0, "\(r.stderr)")
      let totals = try #require(json?["totals"]?.objectValue)
      // Every group reproduces the BF16 input; none of these fixtures' groups has a second pair.
      #expect(totals["groups"]?.intValue == 18432)
      #expect(totals["recovered"]?.intValue == 18432)
      #expect(totals["ambiguous"]?.intValue == 0)
      #expect(totals["requantized"]?.intValue == 0)
      #expect(try runCkpt(["validate", tmp.file("int4"), "--data"]).status == 0)
      #expect(try runCkpt(["convert", tmp.file("int4"), tmp.file("b"), "--to", "bf16"]).status == 0)
      #expect(try Self.shardDigests(tmp.file("a")) == Self.shardDigests(tmp.file("b")))
      // Resume: the same command again verifies and skips every shard.
      let (again, j2) = try Self.run(["requantize", tmp.file("a"), tmp.file("int4"), "--to", "int4", "--json"])
      #expect(again.status == 0)
      #expect(j2?["shards"]?.arrayValue?.allSatisfy { $0.objectValue?["skipped"]?.boolValue == true } == true)
    }
  }

  @Test("Off-grid BF16 weights: --scale-rule minmax equals compressed-tensors' compressor, qat7 the /7 rule; mse lowers the error")
  func offGrid() throws {
    let tmp = TemporaryDirectory("requant-offgrid")
    defer { tmp.remove() }
    let expected: [String: String] = try {
      var out: [String: String] = [:]
      for dir in [Self.minmax] {
        for (k, v) in try ConvertTests.tensorDigests(dir) { out[k] = v.sha256 }
      }
      let q7 = try SafeTensorsFile(path: TestPaths.fixture("requantize/offgrid-qat7.safetensors"))
      for t in q7.tensors { out["qat7:" + t.name] = q7.mapping.withBytes(q7.fileRange(of: t)) { Hashing.sha256($0) } }
      return out
    }()
    for rule in ["minmax", "qat7"] {
      let (r, json) = try Self.run(["requantize", Self.offgrid, tmp.file(rule), "--to", "int4", "--scale-rule", rule, "--json"])
      #expect(r.status == 0, "\(r.stderr)")
      #expect(json?["totals"]?.objectValue?["requantized"]?.intValue == json?["totals"]?.objectValue?["groups"]?.intValue)
      let got = try ConvertTests.tensorDigests(tmp.file(rule))
      #expect(got.count == 18)
      for (name, d) in got {
        #expect(d.sha256 == expected[(rule == "qat7" ? "qat7:" : "") + name], "\(rule) \(name)")
      }
    }
    let (m, json) = try Self.run(["requantize", Self.offgrid, tmp.file("mse"), "--to", "int4", "--scale-rule", "mse", "--json"])
    #expect(m.status == 0, "\(m.stderr)")
    let t = try #require(json?["totals"]?.objectValue)
    let plain = try #require(t["plain_rule_squared_error"]?.doubleValue)
    let searched = try #require(t["mse_squared_error"]?.doubleValue)
    #expect(searched < plain)
    // Off-grid input: nothing to detect from; qat7 is assumed and said so.
    #expect(json?["rule"]?.objectValue?["source"]?.stringValue == "assumed")
  }

  @Test("The outputs compressed-tensors checked (Fixtures/requantize/python-check.json) are what ckpt writes today")
  func pythonChecked() throws {
    let record = try #require(
      JSONParser.parse(Array(FileManager.default.contents(atPath: TestPaths.fixture("requantize/python-check.json"))!)).objectValue)
    let checks = try #require(record["checks"]?.arrayValue)
    #expect(checks.count == 6)
    let tmp = TemporaryDirectory("requant-python")
    defer { tmp.remove() }
    for (i, c) in checks.enumerated() {
      let o = try #require(c.objectValue)
      let case_ = try #require(o["case"]?.stringValue)
      let out = tmp.file("c\(i)")
      if case_.hasPrefix("offgrid") {
        let rule = try #require(o["rule"]?.stringValue)
        #expect(try runCkpt(["requantize", Self.offgrid, out, "--to", "int4", "--scale-rule", rule]).status == 0)
      } else {
        let parts = case_.components(separatedBy: " -> ")
        #expect(try runCkpt(["convert", TestPaths.fixture(parts[0]), out + "-conv", "--to", parts[1]]).status == 0)
        #expect(try runCkpt(["requantize", out + "-conv", out, "--to", "int4"]).status == 0)
      }
      let recorded = try #require(o["outputs"]?.objectValue)
      var want: [String: String] = [:]
      for k in recorded.keys { want[k] = recorded[k]?.stringValue }
      #expect(try Self.shardDigests(out) == want, "\(case_)")
    }
  }

  @Test("--like REF: K2.5 layout round trip byte for byte; FP8-block input becomes valid INT4 with its loss reported")
  func likeAndFP8() throws {
    let tmp = TemporaryDirectory("requant-like")
    defer { tmp.remove() }
    let k25 = TestPaths.fixture("kimi-k25-tiny")
    #expect(try runCkpt(["convert", k25, tmp.file("k25"), "--to", "fp16"]).status == 0)
    let (r, _) = try Self.run(["requantize", tmp.file("k25"), tmp.file("k25-int4"), "--to", "int4", "--like", k25, "--json"])
    #expect(r.status == 0, "\(r.stderr)")
    #expect(try Self.shardDigests(tmp.file("k25-int4")) == Self.checksums(k25))

    #expect(try runCkpt(["convert", Self.kimi, tmp.file("fp8"), "--to", "fp8-block"]).status == 0)
    let (f, json) = try Self.run(["requantize", tmp.file("fp8"), tmp.file("fp8-int4"), "--to", "int4", "--like", Self.kimi, "--json"])
    #expect(f.status == 0, "\(f.stderr)")
    let t = try #require(json?["totals"]?.objectValue)
    #expect((t["requantized"]?.intValue ?? 0) > 0)
    #expect((t["relative_rms_error"]?.doubleValue ?? 0) > 0.001)
    #expect((t["relative_rms_error"]?.doubleValue ?? 1) < 0.1)
    // Same names and dtypes as the original; FP8 attention and MLP weights are BF16 again.
    let got = try ConvertTests.tensorDigests(tmp.file("fp8-int4"))
    let want = try ConvertTests.tensorDigests(Self.kimi)
    #expect(Set(got.keys) == Set(want.keys))
    for (k, v) in want { #expect(got[k]?.dtype == v.dtype && got[k]?.shape == v.shape, "\(k)") }
    #expect(try runCkpt(["validate", tmp.file("fp8-int4"), "--data"]).status == 0)
  }

  @Test("Refusals: usage errors exit 64; INT4 input, OUT inside IN and a group size that does not divide exit 1 naming the tensor")
  func refusals() throws {
    let tmp = TemporaryDirectory("requant-refuse")
    defer { tmp.remove() }
    #expect(try runCkpt(["requantize", Self.kimi, tmp.file("x"), "--to", "fp8"]).status == 64)
    #expect(try runCkpt(["requantize", Self.kimi, tmp.file("x"), "--to", "int4", "--scale-rule", "magic"]).status == 64)
    #expect(try runCkpt(["convert", Self.kimi, tmp.file("x"), "--to", "int4"]).status == 64)
    let int4 = try runCkpt(["requantize", Self.kimi, tmp.file("y"), "--to", "int4"])
    #expect(int4.status == 1)
    #expect(int4.stderr.contains("unsupported-input") && int4.stderr.contains("compressed-tensors"))
    #expect(try runCkpt(["convert", Self.kimi, tmp.file("bf16"), "--to", "bf16"]).status == 0)
    let inside = try runCkpt(["requantize", tmp.file("bf16"), tmp.file("bf16/out"), "--to", "int4"])
    #expect(inside.status == 1 && inside.stderr.contains("output-inside-input"))
    let group = try runCkpt(["requantize", tmp.file("bf16"), tmp.file("g"), "--to", "int4", "--group-size", "48"])
    #expect(group.status == 1)
    #expect(group.stderr.contains("bad-group-size") && group.stderr.contains("mlp.experts."))
    #expect(!FileManager.default.fileExists(atPath: tmp.file("g/model-00001-of-000003.safetensors")))
  }

  @Test("Rule detection: no −8 means qat7, a stray −8 under 1 % is noise, a real share means minmax, too few groups means none")
  func detection() {
    func stats(recovered: Int, minus8: Int) -> Int4RequantizeStats {
      var s = Int4RequantizeStats()
      s.groups = recovered
      s.recovered = recovered
      s.maxCodeHistogram[7] = recovered - minus8
      s.maxCodeHistogram[8] = minus8
      s.minusEightGroups = minus8
      return s
    }
    #expect(RuleDetection.detect(stats(recovered: 1000, minus8: 0)).rule == .qat7)
    #expect(RuleDetection.detect(stats(recovered: 1000, minus8: 0)).confidence == 1)
    #expect(RuleDetection.detect(stats(recovered: 1000, minus8: 5)).rule == .qat7)
    #expect(RuleDetection.detect(stats(recovered: 1000, minus8: 300)).rule == .minmax)
    #expect(RuleDetection.detect(stats(recovered: 10, minus8: 0)).rule == nil)
  }
}
