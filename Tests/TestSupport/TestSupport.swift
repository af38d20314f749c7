import Foundation
import SafeTensors
import StrictJSON

/// Paths and helpers shared by the test targets.
public enum TestPaths {
  /// The package root, found from this source file's location.
  public static let packageRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.path
  }()

  /// `Fixtures/` in the package.
  public static var fixtures: String { packageRoot + "/Fixtures" }

  /// A path under `Fixtures/`.
  public static func fixture(_ relative: String) -> String { fixtures + "/" + relative }
}

/// A fresh temporary directory, removed by ``remove()``.
public struct TemporaryDirectory: Sendable {
  /// The directory's path.
  public let path: String

  /// Creates a unique directory under the system temporary folder.
  public init(_ label: String = "ckpt-test") {
    let base = ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp"
    var template = Array("\(base)/\(label)-XXXXXX".utf8CString)
    let p = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    path = String(cString: p!)
  }

  /// Removes the directory and everything in it.
  public func remove() { try? FileManager.default.removeItem(atPath: path) }

  /// A path inside the directory.
  public func file(_ name: String) -> String { path + "/" + name }
}

/// Copies a folder recursively.
public func copyTree(_ from: String, to: String) throws {
  try FileManager.default.copyItem(atPath: from, toPath: to)
}

/// Reads a whole file.
public func readFile(_ path: String) throws -> [UInt8] {
  Array(try Data(contentsOf: URL(fileURLWithPath: path)))
}

/// Writes a whole file.
public func writeFile(_ path: String, _ bytes: [UInt8]) throws {
  try Data(bytes).write(to: URL(fileURLWithPath: path))
}

/// A small, fast, seeded random number generator (SplitMix64) for reproducible tests.
public struct SeededRandom: RandomNumberGenerator, Sendable {
  private var state: UInt64
  /// Creates a generator from a seed.
  public init(seed: UInt64) { state = seed }
  /// The next 64 random bits.
  public mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}

/// One entry of `Fixtures/malformed/MANIFEST.json`.
public struct ManifestEntry: Sendable, CustomStringConvertible {
  /// Path relative to `Fixtures/`.
  public let path: String
  /// The expected problem code (`valid` for valid inputs).
  public let code: String
  /// The file name the message must name, if any.
  public let file: String?
  /// The tensor the message must name, if any.
  public let tensor: String?
  /// Whether the problem is found only by a data scan.
  public let data: Bool
  /// A checksums file inside the fixture folder, if any.
  public let checksums: String?

  public var description: String { "\(code) @ \(path)" }

  /// All entries.
  public static func load() -> [ManifestEntry] {
    let bytes = try! readFile(TestPaths.fixture("malformed/MANIFEST.json"))
    let root = try! JSONParser.parse(bytes)
    return root.arrayValue!.map { e in
      ManifestEntry(
        path: e["path"]!.stringValue!, code: e["code"]!.stringValue!, file: e["file"]?.stringValue,
        tensor: e["tensor"]?.stringValue, data: e["data"]?.boolValue ?? false,
        checksums: e["checksums"]?.stringValue)
    }
  }

  /// Single `.safetensors` file entries.
  public static var files: [ManifestEntry] { load().filter { $0.path.hasSuffix(".safetensors") } }
  /// Checkpoint folder entries.
  public static var folders: [ManifestEntry] { load().filter { !$0.path.hasSuffix(".safetensors") } }
}

/// The result of running the built `ckpt` executable.
public struct CommandResult: Sendable {
  /// The exit status.
  public let status: Int32
  /// Standard output.
  public let stdout: String
  /// Standard error.
  public let stderr: String
}

/// Runs the `ckpt` executable built next to the test bundle.
public func runCkpt(_ arguments: [String], environment: [String: String] = [:]) throws -> CommandResult {
  let exe = ckptExecutable()
  let process = Process()
  process.executableURL = URL(fileURLWithPath: exe)
  process.arguments = arguments
  var env = ProcessInfo.processInfo.environment
  for (k, v) in environment { env[k] = v }
  process.environment = env
  let out = Pipe()
  let err = Pipe()
  process.standardOutput = out
  process.standardError = err
  try process.run()
  let o = out.fileHandleForReading.readDataToEndOfFile()
  let e = err.fileHandleForReading.readDataToEndOfFile()
  process.waitUntilExit()
  return CommandResult(
    status: process.terminationStatus, stdout: String(decoding: o, as: UTF8.self),
    stderr: String(decoding: e, as: UTF8.self))
}

/// The path of the built `ckpt` binary (beside the test bundle).
public func ckptExecutable() -> String {
  var dir = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
  for _ in 0..<6 {
    dir.deleteLastPathComponent()
    let candidate = dir.appendingPathComponent("ckpt").path
    if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
  }
  let fallback = TestPaths.packageRoot + "/.build/debug/ckpt"
  return fallback
}
