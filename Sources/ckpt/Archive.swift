import Archive
import ArgumentParser
import Checkpoint
import Conversion
import Reports
import SafeTensors
import StrictJSON
import Verification
import Zstd

/// `ckpt compress IN OUT`.
struct Compress: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Compress a checkpoint losslessly: each shard becomes NAME.safetensors.zst (format ckpt-zst/1).",
    discussion: """
      The shard's header stays readable at the start of the archive. Each tensor is cut into chunks \
      of whole rows compressed on their own (one tensor can be read alone; chunks use every core). \
      Float bytes are split into planes before zstd; BF16 groups of 32 that lie exactly on an INT4 \
      grid (bf16(q·s), as a conversion of an INT4 checkpoint writes them) are stored as codes and \
      scales, after decoding them and comparing with the input. Every frame has zstd's checksum, every \
      chunk the SHA-256 of its bytes. Other files (config, index, tokenizer) are copied. \
      `ckpt decompress` restores byte-identical shards (Docs/ARCHIVES.md).
      Exit status: 0 compressed; 1 refused or failed; 64 usage error.
      """)

  @Argument(help: "IN OUT: a checkpoint folder and the output folder (or a .safetensors file and the .zst file).")
  var paths: [String] = []

  @Option(help: "zstd level (1–19).")
  var level: Int32 = Zstd.defaultLevel

  @Option(help: "Threads (default: all cores).")
  var jobs = Parallel.defaultJobs

  @OptionGroup var outputOptions: OutputOptions

  func validate() throws {
    guard paths.count == 2 else { throw ValidationError("expected IN and OUT") }
    guard (1...19).contains(level) else { throw ValidationError("--level must be between 1 and 19") }
    guard jobs >= 1 else { throw ValidationError("--jobs must be at least 1") }
  }

  func run() throws {
    ArchiveCommands.run(command: "compress", input: paths[0], output: paths[1], json: outputOptions.json) { (shardIn, shardOut) throws(ArchiveError) -> ArchiveResult in
      try ShardArchive.compress(shardIn, to: shardOut, level: level, jobs: jobs)
    }
  }
}

/// `ckpt decompress IN OUT`.
struct Decompress: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Restore a checkpoint compressed by `ckpt compress`, byte for byte.",
    discussion: """
      Each NAME.safetensors.zst becomes NAME.safetensors; every chunk's SHA-256 is checked as it is \
      restored, and a damaged archive (truncated, a flipped byte, a wrong checksum) is an error naming \
      the shard and tensor. Other files are copied.
      Exit status: 0 restored; 1 refused or failed; 64 usage error.
      """)

  @Argument(help: "IN OUT: a compressed folder and the output folder (or a .safetensors.zst file and the .safetensors file).")
  var paths: [String] = []

  @Option(help: "Threads (default: all cores).")
  var jobs = Parallel.defaultJobs

  @OptionGroup var outputOptions: OutputOptions

  func validate() throws {
    guard paths.count == 2 else { throw ValidationError("expected IN and OUT") }
    guard jobs >= 1 else { throw ValidationError("--jobs must be at least 1") }
  }

  func run() throws {
    ArchiveCommands.run(command: "decompress", input: paths[0], output: paths[1], json: outputOptions.json) { (shardIn, shardOut) throws(ArchiveError) -> ArchiveResult in
      try ShardArchive.decompress(shardIn, to: shardOut, jobs: jobs)
    }
  }
}

/// What compress and decompress share: walking the folder, copying other files, the report.
enum ArchiveCommands {
  static func run(
    command: String, input: String, output: String, json: Bool,
    _ each: (_ from: String, _ to: String) throws(ArchiveError) -> ArchiveResult
  ) -> Never {
    let start = now()
    let compress = command == "compress"
    let inKind = FileSystem.kind(of: input)
    guard inKind.exists else { failCommand(command, json: json, "\(input) does not exist", status: 1) }
    let inReal = ConvertJob.resolvedPath(input)
    let outReal = ConvertJob.resolvedPath(output)
    if outReal == inReal || outReal.hasPrefix(inReal + "/") {
      failCommand(command, json: json, "output-inside-input: \(output): OUT must not be IN or inside it", status: 1)
    }
    var shards: [(String, String)] = []
    var copies: [(String, String)] = []
    if inKind.isDirectory {
      let names: [String]
      do { names = try FileSystem.listDirectory(input).sorted() } catch { failCommand(command, json: json, "\(error)", status: 1) }
      if compress {
        // The input must pass validation: nothing is archived that validate rejects.
        let checkpoint: Checkpoint
        do { checkpoint = try Checkpoint.load(input) } catch { failCommand(command, json: json, "\(error)", status: 1) }
        let report = Validator.validate(checkpoint)
        if !report.isValid {
          failCommand(command, json: json, "\(input) does not pass validation:\n" + report.errors.prefix(10).map { "  \($0)" }.joined(separator: "\n"), status: 1)
        }
      }
      for n in names where !n.hasPrefix(".") && !FileSystem.kind(of: input + "/" + n).isDirectory {
        let isShard = compress ? n.hasSuffix(".safetensors") : n.hasSuffix(".safetensors" + ShardArchive.suffix)
        if isShard {
          let restored = compress ? n + ShardArchive.suffix : String(n.dropLast(ShardArchive.suffix.count))
          shards.append((input + "/" + n, output + "/" + restored))
        } else {
          copies.append((input + "/" + n, output + "/" + n))
        }
      }
      if shards.isEmpty { failCommand(command, json: json, "\(input) holds no \(compress ? ".safetensors" : ".safetensors.zst") shard", status: 1) }
      do { if !FileSystem.kind(of: output).exists { try FileSystem.createDirectory(output) } } catch {
        failCommand(command, json: json, "\(error)", status: 1)
      }
    } else {
      shards.append((input, output))
    }
    var results: [ArchiveResult] = []
    let progress = ProgressReporter(label: command, total: shards.reduce(0) { $0 + (FileSystem.fileSize($1.0) ?? 0) }, enabled: !json)
    for (from, to) in shards {
      do { results.append(try each(from, to)) } catch {
        progress.finish()
        failCommand(command, json: json, "\(error)", status: 1)
      }
      progress.add(FileSystem.fileSize(from) ?? 0)
    }
    progress.finish()
    for (from, to) in copies {
      do { try FileSystem.writeAtomically(try FileSystem.readAll(from), to: to) } catch {
        failCommand(command, json: json, "copy-failed: \(from): \(error)", status: 1)
      }
    }
    let seconds = now() - start
    let original = results.reduce(0) { $0 + $1.originalBytes }
    let archived = results.reduce(0) { $0 + $1.archiveBytes }
    if json {
      var o = JSONObject()
      o["ok"] = .bool(true)
      o["command"] = .string(command)
      o["original_bytes"] = .number(JSONNumber(original))
      o["archive_bytes"] = .number(JSONNumber(archived))
      o["ratio"] = .number(JSONNumber(archived > 0 ? Double(original) / Double(archived) : 0))
      o["seconds"] = .number(JSONNumber(seconds))
      o["shards"] = .array(results.map { r in
        .object(JSONObject([
          ("file", .string(r.file)), ("original_bytes", .number(JSONNumber(r.originalBytes))), ("archive_bytes", .number(JSONNumber(r.archiveBytes))),
          ("grid_elements", .number(JSONNumber(r.gridElements))), ("sha256", .string(r.sha256)),
        ]))
      })
      o["copied"] = .array(copies.map { .string(FileSystem.split($0.0).name) })
      printJSON(.object(o))
    } else {
      var t = TextTable(["shard", "original", "archive", "ratio"], alignments: [.left, .right, .right, .right])
      for r in results {
        t.add([r.file, Format.bytes(r.originalBytes), Format.bytes(r.archiveBytes), Format.fixed(Double(r.originalBytes) / Double(max(r.archiveBytes, 1)), 2) + "×"])
      }
      print(t.render(), terminator: "")
      let rate = Double(original) / max(seconds, 1e-9)
      print("\(command == "compress" ? "Compressed" : "Restored") \(results.count) shard(s): \(Format.bytes(original)) ↔ \(Format.bytes(archived)) (\(Format.fixed(Double(original) / Double(max(archived, 1)), 2))×) in \(Format.duration(seconds)), \(Format.rate(rate)) of shard bytes; \(copies.count) other file(s) copied")
    }
    exitFlushing(0)
  }
}
