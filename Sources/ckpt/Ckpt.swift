import Archive
import ArgumentParser

/// The `ckpt` command: convert, requantize and verify large-model checkpoints.
///
/// Exit codes: 0 success, 1 problems found or the operation failed,
/// 64 usage error (bad flags or arguments).
@main
struct Ckpt: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "ckpt",
    abstract: "Convert, requantize and verify large-model checkpoints.",
    discussion: """
      Exit status: 0 success; 1 problems found or the operation failed; 64 usage error.
      Output is a table on a terminal; pass --json for stable machine-readable output.
      """,
    version: CheckpointKitVersion.string,
    subcommands: [Inspect.self, Validate.self, Convert.self, Requantize.self, DiffCommand.self, VerifyCommand.self, Compress.self, Decompress.self, Hash.self, Run.self, Bench.self])

  /// Every command reads `NAME.safetensors.zst` archives as the shards they restore.
  static func main() {
    ShardArchive.registerReader()
    main(nil)
  }
}

/// The tool's version.
enum CheckpointKitVersion {
  static let string = "0.1.0"
}
