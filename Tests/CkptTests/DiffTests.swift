import Checkpoint
import Diff
import Foundation
import HDF5
import QuantKernels
import Reports
import SafeTensors
import StrictJSON
import Synchronization
import Testing
import TestSupport
import Verification

/// `ckpt diff` and `ckpt verify` on the fixture's conversions, against the
/// independent numpy figures of Fixtures/make_diff_fixtures.py.
@Suite("ckpt diff and verify", .serialized)
struct DiffTests {
  static let kimi = TestPaths.fixture("kimi-k2-tiny")
  static let targets = ["bf16", "fp16", "fp32", "fp8-block"]

  /// The fixture converted to every target once, checked to be the bytes the
  /// numpy reference was computed from.
  static let conversions: Result<String, any Error> = Result {
    // One fixed folder under .build (git-ignored), replaced on every run, not a new temporary folder each time.
    let dir = TestPaths.packageRoot + "/.build/test-diff-conversions"
    try? FileManager.default.removeItem(atPath: dir)
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let expected = try expectedJSON()
    for t in targets {
      let r = try runCkpt(["convert", kimi, dir + "/" + t, "--to", t, "--json"])
      guard r.status == 0 else { throw CocoaError(.fileWriteUnknown, userInfo: ["stderr": r.stderr]) }
      let files = expected["conversions"]?.objectValue?[t]?.objectValue?["files"]?.objectValue
      for (name, digest) in files?.members ?? [] {
        let got = try Hashing.sha256(file: dir + "/" + t + "/" + name)
        guard got == digest.stringValue else { throw CocoaError(.fileReadCorruptFile, userInfo: ["file": name, "target": t]) }
      }
    }
    return dir
  }

  static func expectedJSON() throws -> JSONObject {
    try #require(JSONParser.parse(try readFile(TestPaths.fixture("diff/expected.json"))).objectValue)
  }

  static func run(_ args: [String]) throws -> (CommandResult, JSONObject?) {
    let r = try runCkpt(args)
    return (r, (try? JSONParser.parse(Array(r.stdout.utf8)))?.objectValue)
  }

  static func rows(_ json: JSONObject?) -> [String: JSONObject] {
    var out: [String: JSONObject] = [:]
    for r in json?["rows"]?.arrayValue ?? [] {
      if let o = r.objectValue, let n = o["name"]?.stringValue { out[n] = o }
    }
    return out
  }

  static func close(_ a: Double?, _ b: Double?, rel: Double) -> Bool {
    guard let a, let b else { return a == nil && b == nil }
    return abs(a - b) <= rel * max(abs(a), abs(b)) || a == b
  }

  @Test("diff equals the numpy figures for every tensor of every conversion", arguments: targets)
  func matchesNumpy(target: String) throws {
    let dir = try Self.conversions.get()
    let (r, json) = try Self.run(["diff", Self.kimi, dir + "/" + target, "--json", "-"])
    #expect(r.status == 0, "\(r.stderr)")
    let rows = Self.rows(json)
    let expected = try #require(try Self.expectedJSON()["metrics"]?.objectValue?[target]?.objectValue)
    #expect(rows.count == expected.count && rows.count == 67)
    for (name, e) in expected.members {
      let e = try #require(e.objectValue)
      let row = try #require(rows[name], "\(name) missing")
      let m = try #require(row["metrics"]?.objectValue)
      for k in ["elements", "identical", "max_abs_index"] { #expect(m[k]?.intValue == e[k]?.intValue, "\(target) \(name) \(k)") }
      #expect(m["max_abs"]?.doubleValue == e["max_abs"]?.doubleValue, "\(target) \(name) max_abs")
      #expect(row["histogram"]?.arrayValue?.map(\.intValue) == e["histogram"]?.arrayValue?.map(\.intValue), "\(target) \(name) histogram")
      for (k, ek) in [("sum_sq_diff", "sum_sq_diff"), ("sum_sq_a", "sum_sq_a"), ("sum_sq_b", "sum_sq_b"), ("sum_ab", "sum_ab"),
                      ("relative", "relative"), ("rmse", "rmse"), ("cosine", "cosine"), ("sqnr_db", "sqnr_db")] {
        #expect(Self.close(m[k]?.doubleValue, e[ek]?.doubleValue, rel: 1e-11), "\(target) \(name) \(k): \(String(describing: m[k])) vs \(String(describing: e[ek]))")
      }
      let relative = m["relative"]?.doubleValue ?? -1
      let expert = name.contains(".experts.")
      switch target {
      case "fp16", "fp32": #expect(relative == 0, "\(name)")
      case "bf16":
        if expert { #expect(relative > 0 && relative <= Tolerance.bf16, "\(name)") } else { #expect(relative == 0, "\(name)") }
      default:
        if row["encoding_b"]?.stringValue?.hasPrefix("fp8-block") == true {
          #expect(relative > 0.01 && relative <= Tolerance.fp8, "\(name)")
        }
      }
    }
    #expect(json?["passed"]?.boolValue == true)
  }

  @Test("--fail-above overrides the encodings' bound and sets the exit status")
  func failAbove() throws {
    let dir = try Self.conversions.get()
    let (strict, json) = try Self.run(["diff", Self.kimi, dir + "/bf16", "--fail-above", "1e-3", "--json", "-"])
    #expect(strict.status == 1)
    #expect(json?["passed"]?.boolValue == false)
    let failing = (json?["rows"]?.arrayValue ?? []).filter { $0.objectValue?["exceeds"]?.boolValue == true }
    #expect(failing.count == 24)  // the routed experts, worst first
    #expect(json?["rows"]?.arrayValue?.first?.objectValue?["exceeds"]?.boolValue == true)
    let loose = try runCkpt(["diff", Self.kimi, dir + "/bf16", "--fail-above", "2e-3"])
    #expect(loose.status == 0, "\(loose.stdout)")
    #expect(loose.stdout.contains("PASS"))
    // Swapping sides: the INT4 side is now the candidate, with INT4's bound.
    let swapped = try runCkpt(["diff", dir + "/fp8-block", dir + "/bf16"])
    #expect(swapped.status == 0, "\(swapped.stdout)")
  }

  @Test("Tensors in one checkpoint only are listed and fail unless allowed; bad input and flags are refused")
  func missingAndRefusals() throws {
    let shard = Self.kimi + "/model-00001-of-000003.safetensors"
    let (r, json) = try Self.run(["diff", Self.kimi, shard, "--json", "-"])
    #expect(r.status == 1)
    let onlyA = json?["only_in_a"]?.arrayValue ?? []
    #expect(onlyA.count > 30 && json?["only_in_b"]?.arrayValue?.isEmpty == true)
    #expect(onlyA.contains { $0.objectValue?["name"]?.stringValue == "model.layers.1.mlp.experts.0.up_proj.weight" })
    let allowed = try runCkpt(["diff", Self.kimi, shard, "--allow-missing"])
    #expect(allowed.status == 0, "\(allowed.stdout)\(allowed.stderr)")
    #expect(allowed.stdout.contains("Only in A"))

    let bad = TestPaths.fixture("malformed/checkpoints/bad-scale-shape")
    let b = try runCkpt(["diff", Self.kimi, bad])
    #expect(b.status == 1)
    #expect(b.stderr.contains("B ") && b.stderr.contains("does not pass validation"), "\(b.stderr)")
    for args in [["diff", Self.kimi], ["diff", Self.kimi, Self.kimi, "--fail-above", "-1"], ["verify", Self.kimi, Self.kimi, "--samples", "0"],
                 ["diff", Self.kimi, Self.kimi, "--json", "/tmp/x.json", "--html", "/tmp/x.json"]] {
      #expect(try runCkpt(args).status == 64, "\(args)")
    }
    // A NaN in B that A does not have fails its tensor, whatever the tolerance.
    let (n, nj) = try Self.run(["diff", TestPaths.fixture("malformed/checkpoints/valid-micro"), TestPaths.fixture("malformed/checkpoints/non-finite-nan"), "--fail-above", "1", "--json", "-"])
    #expect(n.status == 1)
    let nanRows = (nj?["rows"]?.arrayValue ?? []).compactMap(\.objectValue).filter { ($0["metrics"]?.objectValue?["non_finite_b"]?.intValue ?? 0) > 0 }
    #expect(!nanRows.isEmpty && nanRows.allSatisfy { $0["exceeds"]?.boolValue == true })
    let same = try runCkpt(["diff", Self.kimi, Self.kimi])
    #expect(same.status == 0 && same.stdout.contains("PASS: 67 compared"))
  }

  @Test("verify: exact targets give zero output error; bf16 small; fp8-block larger; the MoE blocks route alike")
  func verifyTargets() throws {
    let dir = try Self.conversions.get()
    var worst: [String: Double] = [:]
    for t in Self.targets {
      let (r, json) = try Self.run(["verify", Self.kimi, dir + "/" + t, "--no-peak", "--samples", "16", "--json", "-"])
      #expect(r.status == 0, "\(t): \(r.stderr)")
      let rows = Self.rows(json)
      #expect(rows.count == 53, "\(t)")  // 49 Linears + 2 routers + 2 MoE blocks
      for layer in [1, 2] {
        let block = try #require(rows["model.layers.\(layer).mlp"])
        #expect(block["kind"]?.stringValue == "moe-block")
        #expect(block["router"]?.objectValue?["same_set"]?.intValue == 16, "\(t) layer \(layer)")
      }
      let rel = rows.values.compactMap { $0["metrics"]?.objectValue?["relative"]?.doubleValue }
      worst[t] = rel.max() ?? -1
      let experts = rows.filter { $0.key.contains(".experts.") }.compactMap { $0.value["metrics"]?.objectValue?["relative"]?.doubleValue }
      #expect(experts.count == 24)
      if t == "bf16" { #expect(experts.allSatisfy { $0 > 0 && $0 < 2 * Tolerance.bf16 }) }
    }
    #expect(worst["fp16"] == 0 && worst["fp32"] == 0)
    #expect(worst["bf16"]! > 0 && worst["fp8-block"]! > 5 * worst["bf16"]!)
  }

  @Test("The MoE block equals the numpy DeepSeek-V3 reference on the same activations")
  func moeMatchesNumpy() throws {
    let a = try WeightCatalog.load(try Checkpoint.load(Self.kimi))
    let outputs = Mutex<[Int: ([Float], Routing)]>([:])
    var options = VerifyOptions(samples: 8, activations: TestPaths.fixture("diff/activations.safetensors"))
    options.blockOutputs = { layer, ya, _, ra, _ in outputs.withLock { $0[layer] = (ya, ra) } }
    let result = try ForwardVerify.run(a: a, b: a, options: options)
    #expect(result.rows.allSatisfy { $0.stats.relativeError == 0 })
    let ref = try SafeTensorsFile(path: TestPaths.fixture("diff/moe-reference.safetensors"))
    func floats(_ n: String) throws -> [Float] {
      try ref.bytes(of: n).withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    }
    for layer in [1, 2] {
      let (y, routing) = try #require(outputs.withLock { $0[layer] })
      let p = "model.layers.\(layer).mlp."
      let expected = try floats(p + "output")
      #expect(y.count == expected.count)
      var num = 0.0, den = 0.0
      for (u, v) in zip(y, expected) {
        num += Double(u - v) * Double(u - v)
        den += Double(v) * Double(v)
      }
      #expect((num / den).squareRoot() < 1e-5, "layer \(layer): relative \((num / den).squareRoot())")
      let ids = try ref.bytes(of: p + "topk").withUnsafeBytes { Array($0.bindMemory(to: Int64.self)) }.map { Int($0) }
      #expect(routing.experts.flatMap { $0 } == ids)
      let w = try floats(p + "topk_weights")
      #expect(zip(routing.weights.flatMap { $0 }, w).allSatisfy { abs($0 - $1) <= 1e-5 * abs($1) })
    }

    // B runs end to end on its own weights: B's block output in (INT4, bf16)
    // is bit for bit A's block output in (bf16, bf16).
    let bf16 = try WeightCatalog.load(try Checkpoint.load(try Self.conversions.get() + "/bf16"))
    let mixed = Mutex<[Int: [Float]]>([:])
    let alone = Mutex<[Int: [Float]]>([:])
    options.blockOutputs = { layer, _, yb, _, _ in mixed.withLock { $0[layer] = yb } }
    _ = try ForwardVerify.run(a: a, b: bf16, options: options)
    options.blockOutputs = { layer, ya, _, _, _ in alone.withLock { $0[layer] = ya } }
    _ = try ForwardVerify.run(a: bf16, b: bf16, options: options)
    for layer in [1, 2] {
      let m = try #require(mixed.withLock { $0[layer] })
      let s = try #require(alone.withLock { $0[layer] })
      #expect(m == s, "layer \(layer)")
      #expect(m != outputs.withLock { $0[layer]!.0 }, "bf16 rounding must show in the block output")
    }
  }

  @Test("JSON, HDF5 and HTML reports hold the same figures; files are complete or absent")
  func reportFiles() throws {
    let dir = try Self.conversions.get()
    let tmp = TemporaryDirectory("diff-reports")
    defer { tmp.remove() }
    let r = try runCkpt([
      "diff", Self.kimi, dir + "/fp8-block", "--json", tmp.file("d.json"), "--hdf5", tmp.file("d.h5"), "--html", tmp.file("d.html"),
    ])
    #expect(r.status == 0, "\(r.stderr)")
    let json = try #require(JSONParser.parse(try readFile(tmp.file("d.json"))).objectValue)
    #expect(json["schema"]?.stringValue == "ckpt-comparison/1")
    #expect(json["histogram_bins"]?.arrayValue?.count == ErrorStats.histogramBins)
    let f = try HDF5File(openingAt: tmp.file("d.h5"))
    #expect(try f.stringAttribute("command") == "diff")
    #expect(try f.stringAttribute("format_a") == "int4 (compressed-tensors)")
    #expect(try f.stringAttribute("format_b") == "fp8-block")
    #expect(try Set(f.openGroup("layers").members().map(\.name)) == ["0", "1", "2", "global"])
    let metrics = try f.openDataset("layers/1/metrics")
    #expect(metrics.shape == [26, ComparisonHDF5.metricNames.count])
    #expect(try f.openDataset("layers/1/histograms").shape == [26, ErrorStats.histogramBins])
    let values: [Double] = try metrics.read()
    let relColumn = ComparisonHDF5.metricNames.firstIndex(of: "relative")!
    let jsonRows = Self.rows(json)
    let layer1 = jsonRows.values.filter { $0["layer"]?.intValue == 1 }
    #expect(layer1.count == 26)
    let fromJSON = layer1.compactMap { $0["metrics"]?.objectValue?["relative"]?.doubleValue }.sorted()
    let fromHDF5 = (0..<26).map { values[$0 * ComparisonHDF5.metricNames.count + relColumn] }.sorted()
    #expect(fromJSON == fromHDF5)
    let html = try String(contentsOfFile: tmp.file("d.html"), encoding: .utf8)
    #expect(html.contains("<svg") && html.contains("PASS") && html.contains("routed-expert-down"))
    // Self-contained: no script, nothing fetched (the SVG namespace URI is a name, not a fetch).
    for needle in ["<script", "src=", "href=", "url(", "@import"] { #expect(!html.contains(needle), "\(needle)") }
    let leftovers = try FileManager.default.contentsOfDirectory(atPath: tmp.path).filter { $0.hasPrefix(".") }
    #expect(leftovers.isEmpty, "\(leftovers)")
  }

  @Test("verify refuses a MoE config it cannot run as written (n_group, scoring_func) instead of patching it", arguments: [
    ("\"n_group\": 1,", "\"n_group\": 3,", "not a multiple of n_group 3"),
    ("\"scoring_func\": \"sigmoid\",", "\"scoring_func\": \"tanh\",", "neither sigmoid nor softmax"),
  ])
  func badMoEConfig(edit: (String, String, String)) throws {
    let tmp = TemporaryDirectory("verify-config")
    defer { tmp.remove() }
    try copyTree(Self.kimi, to: tmp.file("m"))
    let config = try String(contentsOfFile: tmp.file("m/config.json"), encoding: .utf8)
    #expect(config.contains(edit.0))
    try config.replacingOccurrences(of: edit.0, with: edit.1).write(toFile: tmp.file("m/config.json"), atomically: true, encoding: .utf8)
    let r = try runCkpt(["verify", tmp.file("m"), tmp.file("m"), "--no-peak"])
    #expect(r.status == 1)
    #expect(r.stderr.contains("bad-config") && r.stderr.contains(edit.2), "\(r.stderr)")
  }

  @Test("OpenBLAS on an AVX-512 CPU is steered to AVX-512 kernels only when it chose older ones and the user chose nothing")
  func blasCore() {
    #expect(ForwardVerify.preferredBLASCore(current: "Haswell", cpuHasAVX512: true, userChoice: nil) == "SkylakeX")
    #expect(ForwardVerify.preferredBLASCore(current: "Zen", cpuHasAVX512: true, userChoice: "") == "SkylakeX")
    #expect(ForwardVerify.preferredBLASCore(current: "Cooperlake", cpuHasAVX512: true, userChoice: nil) == nil)
    #expect(ForwardVerify.preferredBLASCore(current: "SkylakeX", cpuHasAVX512: true, userChoice: nil) == nil)
    #expect(ForwardVerify.preferredBLASCore(current: "Haswell", cpuHasAVX512: false, userChoice: nil) == nil)
    #expect(ForwardVerify.preferredBLASCore(current: "Haswell", cpuHasAVX512: true, userChoice: "Haswell") == nil)
  }

  @Test("Tolerances: faithful roundings stay within, copies must be exact")
  func tolerances() throws {
    let catalog = try WeightCatalog.load(try Checkpoint.load(Self.kimi))
    let int4 = try #require(catalog.tensors.first { $0.encoding.label == "int4-g32" }).encoding
    #expect(Tolerance.relative(reference: int4, candidate: .float(.bf16)) == 0x1p-8)
    #expect(Tolerance.relative(reference: int4, candidate: .float(.f32)) == 0)
    #expect(Tolerance.relative(reference: .float(.bf16), candidate: .float(.bf16)) == 0)
    #expect(Tolerance.relative(reference: .float(.bf16), candidate: int4) == 0x1p-8 + 0x1p-3)
    #expect(Tolerance.relative(reference: int4, candidate: .fp8Block(scaleInv: "s", blockRows: 128, blockColumns: 128)) == 0x1p-4)
  }
}
