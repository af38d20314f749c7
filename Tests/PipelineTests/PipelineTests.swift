import Foundation
import Testing

@testable import Pipeline

/// The pipeline model: substitution, paths, the checks and the state file.
@Suite("Pipeline model")
struct PipelineModelTests {
  static let kinds = [
    StepKind(name: "convert", positionals: ["input", "output"], reads: ["input"], writes: ["output"], jsonArguments: ["--json"], options: ["to", "jobs", "json"]),
    StepKind(name: "diff", positionals: ["a", "b"], reads: ["a", "b"], writes: ["json"], jsonArguments: ["--json", "-"], options: ["json", "fail-above"]),
  ]

  @Test("${name}, ${step.option} and $$ substitute; a lone $ or an undefined name is an error")
  func substitution() throws {
    let v = ["a": "x", "s.out": "/o"]
    #expect(try Pipeline.substitute("${a}/${s.out}-$$", v).get() == "x//o-$")
    #expect((try? Pipeline.substitute("${b}", v).get()) == nil)
    #expect((try? Pipeline.substitute("$a", v).get()) == nil)
    #expect((try? Pipeline.substitute("${a", v).get()) == nil)
  }

  @Test("Paths are made absolute and normalized; inside means a path component boundary")
  func paths() {
    #expect(absolutePath("a/./b/../c//d", "/w") == "/w/a/c/d")
    #expect(absolutePath("/x/../../y", "/w") == "/y")
    #expect(isSameOrInside("/a/b", "/a") && isSameOrInside("/a", "/a") && !isSameOrInside("/ab", "/a"))
  }

  @Test("A path through a symbolic link resolves to the real one, so an output inside an input is found through it")
  func links() throws {
    let root = NSTemporaryDirectory() + "/pipeline-links-\(getpid())"
    defer { try? FileManager.default.removeItem(atPath: root) }
    try FileManager.default.createDirectory(atPath: root + "/real", withIntermediateDirectories: true)
    try FileManager.default.createSymbolicLink(atPath: root + "/link", withDestinationPath: root + "/real")
    let real = resolvedPath(root + "/real", "/")
    #expect(resolvedPath(root + "/link/new/out", "/") == real + "/new/out")
    let text = "steps:\n  - convert: {input: \"\(root)/real\", output: \"\(root)/link/out\"}\n"
    let p = try Pipeline.load(file: "p.yaml", text: text, kinds: Self.kinds, directory: "/")
    let problems = p.check(exists: { FileManager.default.fileExists(atPath: $0) }, parse: { _ in nil })
    #expect(problems.map(\.line) == [2] && problems[0].message.contains("output-inside-input"), "\(problems)")
  }

  @Test("Arguments: positionals last in the subcommand's order, flags for true, repeated options for lists")
  func arguments() throws {
    let text = """
      variables: {m: "/in"}
      steps:
        - convert:
            to: fp16
            json: true
            output: ${m}-out
            input: ${m}
            jobs: [1, 2]
        - diff: {a: "${m}", b: "${convert.output}", json: "-"}
      """
    let p = try Pipeline.load(file: "p.yaml", text: text, kinds: Self.kinds, directory: "/w")
    #expect(p.problems.isEmpty, "\(p.problems)")
    #expect(p.steps[0].arguments == ["--to", "fp16", "--json", "--jobs", "1", "--jobs", "2", "/in", "/in-out"])
    #expect(p.steps[1].arguments == ["--json", "-", "/in", "/in-out"])
    #expect(p.steps[1].writes.isEmpty)  // `-` is standard output
    #expect(p.statePath == "/.ckpt-run.p.json")
    #expect(p.check(exists: { $0 == "/in" }, parse: { _ in nil }).isEmpty)
    let missing = p.check(exists: { _ in false }, parse: { _ in nil })
    #expect(missing.map(\.line) == [7, 9])  // both steps read /in; b is written by convert
  }

  @Test("The state file round-trips; resume needs the same arguments")
  func state() throws {
    var s = PipelineState(pipeline: "/p.yaml", toolVersion: "0")
    s.finish(StepRecord(index: 1, name: "b", kind: "diff", arguments: ["x"], seconds: 1.5, inputs: [], outputs: []))
    s.finish(StepRecord(index: 0, name: "a", kind: "convert", arguments: ["--to", "fp16"], seconds: 0.25, inputs: [], outputs: []))
    let back = try #require(PipelineState.decode(s.encoded()))
    #expect(back.records == s.records && back.records.map(\.index) == [0, 1])
    #expect(PipelineState.decode(Array("{}".utf8)) == nil)
  }
}
