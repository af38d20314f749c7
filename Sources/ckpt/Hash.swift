import ArgumentParser
import Checkpoint
import SafeTensors
import StrictJSON
import Verification

/// `ckpt hash PATH [-o FILE] [--tensors]`.
struct Hash: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Write SHA-256 digests of a checkpoint's shards (sha256sum format) or of every tensor (JSON).",
    discussion: """
      Without --tensors, prints a manifest that `sha256sum -c` and `ckpt validate --checksums` accept.
      With --tensors, prints JSON: each shard's digest and each tensor's digest, dtype, shape and shard.
      Shards are hashed in parallel. With -o the output is written atomically to FILE.
      """)

  @Argument(help: "A checkpoint folder or a single .safetensors file.")
  var path: String

  @Option(name: .shortAndLong, help: "Write to FILE instead of standard output.")
  var output: String?

  @Flag(help: "Hash every tensor's data separately and write JSON.")
  var tensors = false

  @Option(help: "Threads (default: all cores).")
  var jobs: Int = Parallel.defaultJobs

  func validate() throws {
    guard jobs >= 1 else { throw ValidationError("--jobs must be at least 1") }
  }

  func run() throws {
    let checkpoint = try loadCheckpoint(path)
    let names = checkpoint.shards + checkpoint.unindexedShards
    let total = names.compactMap { FileSystem.fileSize(checkpoint.pathOf($0)) }.reduce(0, +)
    let progress = ProgressReporter(label: "hash", total: total * (tensors ? 2 : 1), enabled: true)
    let results = Parallel.map(names.count, jobs: jobs) { i -> Result<(String, [(String, TensorInfo, String)]), SafeTensorsError> in
      let path = checkpoint.pathOf(names[i])
      do throws(SafeTensorsError) {
        let digest = try Hashing.sha256(file: path) { progress.add($0) }
        var perTensor: [(String, TensorInfo, String)] = []
        if tensors {
          let file = try SafeTensorsFile(path: path)
          file.mapping.adviseSequential()
          for t in file.tensors {
            perTensor.append((t.name, t, try file.mapping.withPreparedBytes(file.fileRange(of: t)) { Hashing.sha256($0) }))
            progress.add(t.byteCount)
          }
        }
        return .success((digest, perTensor))
      } catch {
        return .failure(error)
      }
    }
    progress.finish()
    var failures: [String] = []
    var digests: [(name: String, digest: String)] = []
    var tensorJSON = JSONObject()
    for (name, r) in zip(names, results) {
      switch r {
      case .failure(let e): failures.append("\(name): \(e.message) [\(e.code)]")
      case .success(let (digest, perTensor)):
        digests.append((name, digest))
        for (t, info, d) in perTensor.sorted(by: { $0.0.utf8.lexicographicallyPrecedes($1.0.utf8) }) {
          tensorJSON[t] = .object(JSONObject([
            ("shard", .string(name)), ("dtype", .string(info.dtype.rawValue)),
            ("shape", .array(info.shape.map { .number(JSONNumber($0)) })), ("sha256", .string(d)),
          ]))
        }
      }
    }
    if !failures.isEmpty {
      for f in failures { printError("error: \(f)") }
      throw ExitCode.failure
    }
    let text: String
    if tensors {
      let root = JSONValue.object(JSONObject([
        ("shards", .object(JSONObject(digests.map { ($0.name, JSONValue.string($0.digest)) }))),
        ("tensors", .object(tensorJSON)),
      ]))
      text = JSONWriter.string(root, style: .pretty(indent: 2, asciiOnly: false)) + "\n"
    } else {
      text = Hashing.manifest(digests)
    }
    if let output {
      do { try FileSystem.writeAtomically(Array(text.utf8), to: output) } catch {
        printError("error: \(error)")
        throw ExitCode.failure
      }
    } else {
      print(text, terminator: "")
    }
  }
}
