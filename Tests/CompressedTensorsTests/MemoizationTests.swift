import CompressedTensors
import StrictJSON
import Testing

@Suite("Memoized matching")
struct MemoizationTests {
  @Test("Memoized and unmemoized matching agree on every Kimi K2 module name")
  func agreement() throws {
    let names = kimiK2ModuleNames()
    #expect(names.count == 69_120 + 61 * 9 + 3 + 60 * 4 + 3)
    let json = try kimiK2JSON()
    let memoized = try QuantizationConfig(json: json)
    let plain = try QuantizationConfig(json: json, memoizeMatching: false)
    let patterns = memoized.ignorePatterns.filter(\.isRegex)
    let plainPatterns = try patterns.map { try NamePattern($0.text, memoize: false) }
    #expect(patterns.allSatisfy { $0.isMemoizable })
    var quantized = 0
    var disagreements: [String] = []
    for name in names {
      let linear = DeepSeekV3Modules.isLinear(name)
      let a = memoized.scheme(forModule: name, isLinear: linear)?.name
      let b = plain.scheme(forModule: name, isLinear: linear)?.name
      if a != b || memoized.isIgnored(name) != plain.isIgnored(name) {
        disagreements.append(name)
      }
      for (p, q) in zip(patterns, plainPatterns) where p.matches(name) != q.matches(name) {
        disagreements.append("\(p.text) on \(name)")
      }
      if a != nil {
        quantized += 1
        let kind = DeepSeekV3Modules.kind(of: name)
        if ![.routedExpertGate, .routedExpertUp, .routedExpertDown].contains(kind) {
          disagreements.append("quantized non-expert \(name)")
        }
      }
    }
    #expect(disagreements.isEmpty, "\(disagreements.prefix(5))")
    #expect(quantized == 69_120)
  }

  @Test("Timing of matching all Kimi K2 module names (information only)")
  func timing() throws {
    let names = kimiK2ModuleNames()
    let config = try QuantizationConfig(json: try kimiK2JSON())
    let clock = ContinuousClock()
    var count = 0
    let elapsed = clock.measure {
      for name in names
      where config.scheme(forModule: name, isLinear: DeepSeekV3Modules.isLinear(name)) != nil {
        count += 1
      }
    }
    #expect(count == 69_120)
    print("matched \(names.count) Kimi K2 module names in \(elapsed) (memoized)")
  }
}
