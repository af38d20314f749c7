import Foundation
import StrictJSON
import Testing
import TestSupport
import Verification

#if canImport(Glibc)
  import Glibc
#endif

/// `ckpt run`: the shipped example pipelines end to end, resume after a kill,
/// a failing step, and the checks made before anything runs.
@Suite("ckpt run pipelines")
struct PipelineRunTests {
  static let fp8Example = TestPaths.packageRoot + "/Docs/pipelines/fp8-verify.yaml"
  static let fp16Example = TestPaths.packageRoot + "/Docs/pipelines/fp16-roundtrip.yaml"
  static var model: String { TestPaths.fixture("kimi-k2-tiny") }

  static func json(_ text: String) throws -> JSONObject {
    try #require(try JSONParser.parse(Array(text.utf8)).objectValue)
  }

  static func statuses(_ o: JSONObject) -> [String] {
    (o["steps"]?.arrayValue ?? []).compactMap { $0.objectValue?["status"]?.stringValue }
  }

  static func records(_ statePath: String) -> Int {
    guard let bytes = FileManager.default.contents(atPath: statePath),
      let o = try? JSONParser.parse(Array(bytes)).objectValue
    else { return 0 }
    return o["steps"]?.arrayValue?.count ?? 0
  }

  @Test("validate → convert fp8-block → verify → report runs end to end; --resume then skips every step")
  func fp8Pipeline() throws {
    let tmp = TemporaryDirectory("run-fp8")
    defer { tmp.remove() }
    let work = tmp.file("work")
    let r = try runCkpt(["run", Self.fp8Example, "--set", "model=\(Self.model)", "--set", "work=\(work)", "--json"])
    #expect(r.status == 0, "\(r.stderr)")
    let o = try Self.json(r.stdout)
    #expect(Self.statuses(o) == ["done", "done", "done", "done"])
    #expect(o["state"]?.stringValue == tmp.file(".ckpt-run.fp8-verify.json"))
    let steps = o["steps"]?.arrayValue?.compactMap(\.objectValue) ?? []
    // Each step's own JSON is embedded: validate found the fixture valid, verify and the report passed.
    #expect(steps[0]["result"]?.objectValue?["valid"]?.boolValue == true)
    let verify = try Self.json(String(decoding: try readFile(work + "/verify.json"), as: UTF8.self))
    #expect(verify["passed"]?.boolValue == true && verify["command"]?.stringValue == "verify")
    for f in ["fp8/model.safetensors.index.json", "verify.json", "diff.json", "diff.h5", "diff.html"] {
      #expect(FileManager.default.fileExists(atPath: work + "/" + f), "\(f)")
    }
    let diff = try Self.json(String(decoding: try readFile(work + "/diff.json"), as: UTF8.self))
    #expect(diff["passed"]?.boolValue == true)
    #expect(Self.records(tmp.file(".ckpt-run.fp8-verify.json")) == 4)

    let again = try runCkpt(["run", Self.fp8Example, "--set", "model=\(Self.model)", "--set", "work=\(work)", "--json", "--resume"])
    #expect(again.status == 0, "\(again.stderr)")
    #expect(Self.statuses(try Self.json(again.stdout)) == ["skipped", "skipped", "skipped", "skipped"])

    // A changed output makes its step and every later one run again.
    try writeFile(work + "/verify.json", Array("{}".utf8))
    let dry = try runCkpt(["run", Self.fp8Example, "--set", "model=\(Self.model)", "--set", "work=\(work)", "--json", "--resume", "--dry-run"])
    #expect(Self.statuses(try Self.json(dry.stdout)) == ["would-skip", "would-skip", "would-run", "would-run"])
  }

  @Test("convert fp16 → requantize → diff against the original: the round trip is exact")
  func fp16Pipeline() throws {
    let tmp = TemporaryDirectory("run-fp16")
    defer { tmp.remove() }
    let work = tmp.file("work")
    let r = try runCkpt(["run", Self.fp16Example, "--set", "model=\(Self.model)", "--set", "work=\(work)"])
    #expect(r.status == 0, "\(r.stderr)")
    #expect(r.stderr.contains("[3/3] diff"))
    let diff = try Self.json(String(decoding: try readFile(work + "/diff.json"), as: UTF8.self))
    #expect(diff["passed"]?.boolValue == true)
    #expect(diff["summary"]?.objectValue?["metrics"]?.objectValue?["identical_fraction"]?.doubleValue == 1)
    // Requantized like the original, the INT4 shards are the original's bytes.
    for shard in ["model-00001-of-000003.safetensors", "model-00002-of-000003.safetensors", "model-00003-of-000003.safetensors"] {
      #expect(try Hashing.sha256(file: work + "/int4/" + shard) == Hashing.sha256(file: Self.model + "/" + shard))
    }
  }

  @Test("Killed mid-run, --resume skips the finished steps and completes the rest")
  func resumeAfterKill() throws {
    let tmp = TemporaryDirectory("run-kill")
    defer { tmp.remove() }
    let work = tmp.file("work")
    let state = tmp.file(".ckpt-run.fp8-verify.json")
    let p = Process()
    p.executableURL = URL(fileURLWithPath: ckptExecutable())
    p.arguments = ["run", Self.fp8Example, "--set", "model=\(Self.model)", "--set", "work=\(work)"]
    p.standardOutput = FileHandle.nullDevice
    p.standardError = FileHandle.nullDevice
    try p.run()
    // Kill it (and the step it runs) as soon as two steps are recorded.
    let deadline = Date().addingTimeInterval(120)
    while Self.records(state) < 2 && p.isRunning && Date() < deadline { usleep(5_000) }
    let pid = p.processIdentifier
    let children = (try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8)) ?? ""
    kill(pid, SIGKILL)
    for c in children.split(separator: " ").compactMap({ Int32($0) }) { kill(c, SIGKILL) }
    p.waitUntilExit()
    let finished = Self.records(state)
    #expect(finished >= 2)
    try #require(finished < 4, "the pipeline finished before it could be killed")

    let r = try runCkpt(["run", Self.fp8Example, "--set", "model=\(Self.model)", "--set", "work=\(work)", "--resume", "--json"])
    #expect(r.status == 0, "\(r.stderr)")
    let got = Self.statuses(try Self.json(r.stdout))
    #expect(got == Array(repeating: "skipped", count: finished) + Array(repeating: "done", count: 4 - finished))
    let diff = try Self.json(String(decoding: try readFile(work + "/diff.json"), as: UTF8.self))
    #expect(diff["passed"]?.boolValue == true)
    #expect(Self.records(state) == 4)
  }

  @Test("A failing step stops the pipeline with exit 1, names the step and keeps earlier outputs")
  func failingStep() throws {
    let tmp = TemporaryDirectory("run-fail")
    defer { tmp.remove() }
    let file = tmp.file("p.yaml")
    try writeFile(file, Array("""
      variables:
        model: \(Self.model)
        out: \(tmp.file("out"))
      steps:
        - convert: {input: "${model}", output: "${out}/fp8", to: fp8-block}
        - name: strict
          diff:
            a: ${model}
            b: ${convert.output}
            fail-above: 1e-6
        - compress: {input: "${convert.output}", output: "${out}/z"}
      """.utf8))
    let r = try runCkpt(["run", file])
    #expect(r.status == 1)
    #expect(r.stderr.contains("step 2 (strict) failed"), "\(r.stderr)")
    #expect(FileManager.default.fileExists(atPath: tmp.file("out/fp8/model.safetensors.index.json")))
    #expect(!FileManager.default.fileExists(atPath: tmp.file("out/z")))
    #expect(Self.records(tmp.file("out/.ckpt-run.p.json")) == 1)
    let j = try runCkpt(["run", file, "--json", "--resume"])
    #expect(j.status == 1)
    let o = try Self.json(j.stdout)
    #expect(Self.statuses(o) == ["skipped", "failed", "not-run"])
    #expect(o["failed_step"]?.stringValue == "strict")
  }

  @Test("Every problem is found before anything runs: exit 64 with the line of each")
  func checks() throws {
    let tmp = TemporaryDirectory("run-checks")
    defer { tmp.remove() }
    let file = tmp.file("bad.yaml")
    try writeFile(file, Array("""
      variables:
        model: \(Self.model)
        out: \(tmp.file("out"))
      steps:
        - validate:
            path: ${model}
            dat: true
        - frobnicate: {x: 1}
        - convert:
            input: ${model}
            output: ${model}/inside
            to: fp8-block
        - diff:
            a: ${model}
            b: ${out}/later
        - convert:
            input: \(tmp.file("missing"))
            output: ${out}/later
            to: fp16
        - verify:
            a: ${nothing}
            b: ${out}/later
        - convert:
            input: ${model}
            output: ${out}/x
            to: int8
      """.utf8))
    let r = try runCkpt(["run", file])
    #expect(r.status == 64)
    let expected: [(Int, String)] = [
      (7, "unknown option \"dat\""), (8, "unknown step \"frobnicate\""), (11, "output-inside-input"),
      (15, "which step convert2 writes later"), (17, "does not exist and no earlier step writes"),
      (21, "undefined variable ${nothing}"), (26, "--to must be one of"),
    ]
    for (line, text) in expected {
      #expect(r.stderr.contains("\(file):\(line): ") && r.stderr.split(separator: "\n").contains { $0.hasPrefix("\(file):\(line):") && $0.contains(text) }, "line \(line): \(text) not in:\n\(r.stderr)")
    }
    #expect(r.stderr.contains("nothing was run"))
    #expect(!FileManager.default.fileExists(atPath: tmp.file("out")))

    // Syntax errors carry their line too; JSON output lists the problems.
    try writeFile(file, Array("steps:\n  - convert:\n      input: [a\n".utf8))
    let s = try runCkpt(["run", file, "--json"])
    #expect(s.status == 64)
    let errors = try Self.json(s.stdout)["errors"]?.arrayValue?.compactMap(\.objectValue) ?? []
    #expect(errors.first?["line"]?.intValue == 3, "\(s.stdout)")
  }

  @Test("A pipeline written as JSON runs the same way")
  func jsonPipeline() throws {
    let tmp = TemporaryDirectory("run-json")
    defer { tmp.remove() }
    let file = tmp.file("p.json")
    try writeFile(file, Array("""
      {
        "variables": {"model": "\(Self.model)", "out": "\(tmp.file("out"))"},
        "steps": [
          {"validate": {"path": "${model}"}},
          {"compress": {"input": "${model}", "output": "${out}/z"}},
          {"name": "same", "diff": {"a": "${model}", "b": "${compress.output}", "fail-above": "0"}}
        ]
      }
      """.utf8))
    let dry = try runCkpt(["run", file, "--dry-run"])
    #expect(dry.status == 0, "\(dry.stderr)")
    #expect(dry.stdout.contains("[2/3] compress: run — ckpt compress \(Self.model) \(tmp.file("out/z"))"), "\(dry.stdout)")
    let r = try runCkpt(["run", file, "--json"])
    #expect(r.status == 0, "\(r.stderr)")
    #expect(Self.statuses(try Self.json(r.stdout)) == ["done", "done", "done"])
    #expect(FileManager.default.fileExists(atPath: tmp.file("out/z/model-00001-of-000003.safetensors.zst")))
  }
}
