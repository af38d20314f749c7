import ArgumentParser

@main
struct Ckpt: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "ckpt",
    abstract: "Convert, requantize and verify large-model checkpoints.")
}
