import CompressedTensors
import StrictJSON
import Testing

@Suite("Target and ignore matching")
struct MatchingTests {
  @Test(
    "Kimi K2's ignore list leaves only routed experts quantized",
    arguments: [
      ("model.layers.0.mlp.gate_proj", false),
      ("model.layers.0.mlp.down_proj", false),
      ("model.layers.1.mlp.experts.5.gate_proj", true),
      ("model.layers.60.mlp.experts.383.down_proj", true),
      ("model.layers.1.mlp.shared_experts.up_proj", false),
      ("model.layers.1.self_attn.q_a_proj", false),
      ("model.layers.1.self_attn.kv_a_proj_with_mqa", false),
      ("lm_head", false),
      ("model.layers.1.mlp.gate", false),
      ("model.embed_tokens", false),
      ("model.norm", false),
    ])
  func kimiK2Decisions(name: String, quantized: Bool) throws {
    let config = try QuantizationConfig(json: try kimiK2JSON())
    let scheme = config.scheme(forModule: name, isLinear: DeepSeekV3Modules.isLinear(name))
    #expect((scheme != nil) == quantized)
    if quantized { #expect(scheme?.name == "group_0") }
  }

  @Test("isIgnored reports ignore entries; the router is not ignored but is not a Linear")
  func ignored() throws {
    let config = try QuantizationConfig(json: try kimiK2JSON())
    #expect(config.isIgnored("model.layers.0.mlp.gate_proj"))
    #expect(config.isIgnored("model.layers.1.mlp.shared_experts.up_proj"))
    #expect(config.isIgnored("model.layers.1.self_attn.q_a_proj"))
    #expect(config.isIgnored("lm_head"))
    #expect(!config.isIgnored("model.layers.1.mlp.experts.5.gate_proj"))
    #expect(!config.isIgnored("model.layers.1.mlp.gate"))
    #expect(!DeepSeekV3Modules.isLinear("model.layers.1.mlp.gate"))
    #expect(config.scheme(forModule: "model.layers.1.mlp.gate", isLinear: false) == nil)
    #expect(config.scheme(forModule: "model.layers.1.mlp.gate", isLinear: true) != nil)
  }

  @Test("re: patterns are anchored at the start only")
  func prefixAnchoring() throws {
    let name = "model.layers.1.mlp.experts.0.up_proj"
    #expect(!(try NamePattern("re:experts").matches(name)))
    #expect(try NamePattern("re:model").matches(name))
    #expect(try NamePattern("re:.*experts").matches(name))
    #expect(try NamePattern(#"re:model\.layers\.1\."#).matches(name))
    #expect(!(try NamePattern(#"re:model\.layers\.1$"#).matches(name)))
    #expect(try NamePattern("re:").matches(name))
  }

  @Test("Entries without re: must equal the name")
  func exactNames() throws {
    let p = try NamePattern("lm_head")
    #expect(p.matches("lm_head"))
    #expect(!p.matches("model.lm_head"))
    #expect(!p.matches("lm_head.weight"))
    #expect(!p.isRegex && p.regexSource == nil)
    #expect(try NamePattern("Linear").looksLikeClassName)
    #expect(!(try NamePattern("lm_head").looksLikeClassName))
    #expect(!(try NamePattern("re:Linear").looksLikeClassName))
  }

  @Test("An invalid regex is an error carrying the pattern")
  func invalidRegex() throws {
    let error = try #require(throws: QuantizationConfigError.self) {
      try NamePattern("re:.*mlp\\.(gate|up")
    }
    #expect(error.code == .invalidPattern)
    #expect(error.pattern == "re:.*mlp\\.(gate|up")
    #expect(error.message.contains("re:.*mlp\\.(gate|up"))
    let json = try parseJSON(
      #"{"quant_method": "compressed-tensors", "config_groups": {}, "ignore": ["re:[a-"]}"#)
    let inConfig = try #require(throws: QuantizationConfigError.self) {
      try QuantizationConfig(json: json)
    }
    #expect(inConfig.code == .invalidPattern && inConfig.key == "ignore[0]")
    #expect(inConfig.pattern == "re:[a-")
  }

  @Test("Python regex syntax of real configs works")
  func pythonSyntax() throws {
    let p = try NamePattern(#"re:.*mlp\.(gate|up|gate_up|down)_proj.*"#)
    #expect(p.matches("model.layers.0.mlp.gate_up_proj"))
    #expect(!p.matches("model.layers.1.mlp.experts.0.gate_proj"))
    #expect(try NamePattern(#"re:(?P<pre>.*)\.q_proj$"#).matches("a.q_proj"))
    #expect(try NamePattern(#"re:.*layers\.\d+\.mlp\.gate$"#).matches("model.layers.7.mlp.gate"))
  }

  @Test("Only regexes that treat all digits alike are memoizable")
  func memoizability() throws {
    for text in [
      "re:.*self_attn.*", #"re:.*mlp\.(gate|up|gate_up|down)_proj.*"#, #"re:.*\d+\.up_proj"#,
      #"re:model\.layers\..\.mlp"#, "re:[a-z_.]+",
    ] {
      #expect(try NamePattern(text).isMemoizable, "\(text)")
    }
    for text in [
      #"re:model\.layers\.1\..*"#, "re:.*[0-5]$", #"re:.*\d{2}"#, #"re:(.)\1"#,
      #"re:(?P<d>.)(?P=d)"#, #"re:.*\p{Nd}"#, #"re:.*\x31"#, #"re:.*\N{DIGIT ONE}"#,
      "re:[[:digit:]]", "re:.*é", "lm_head",
    ] {
      #expect(!(try NamePattern(text).isMemoizable), "\(text)")
    }
    // A length-sensitive regex stays correct because keys keep lengths.
    let p = try NamePattern(#"re:model\.layers\..\.mlp"#)
    #expect(p.matches("model.layers.5.mlp.gate"))
    #expect(!p.matches("model.layers.17.mlp.gate"))
    #expect(p.matches("model.layers.3.mlp.gate"))
  }

  @Test(
    "Priority: exact target, then sorted re: targets, then Linear; last group wins a shared target")
  func priority() throws {
    let json = try parseJSON(
      """
      {"quant_method": "compressed-tensors", "config_groups": {
        "a": {"targets": ["Linear"]},
        "b": {"targets": ["re:.*experts.*"]},
        "c": {"targets": ["model.layers.1.mlp.experts.0.up_proj", "re:.*up_proj"]},
        "d": {"targets": ["re:.*up_proj"]}
      }, "ignore": ["re:.*down_proj"]}
      """)
    let config = try QuantizationConfig(json: json)
    #expect(
      config.scheme(forModule: "model.layers.1.mlp.experts.0.up_proj", isLinear: true)?.name == "c")
    // "re:.*experts.*" sorts before "re:.*up_proj".
    #expect(
      config.scheme(forModule: "model.layers.1.mlp.experts.1.up_proj", isLinear: true)?.name == "b")
    #expect(config.scheme(forModule: "model.layers.0.mlp.up_proj", isLinear: true)?.name == "d")
    #expect(config.scheme(forModule: "model.layers.0.mlp.gate_proj", isLinear: true)?.name == "a")
    #expect(config.scheme(forModule: "model.layers.0.mlp.gate_proj", isLinear: false) == nil)
    #expect(config.scheme(forModule: "model.layers.0.mlp.down_proj", isLinear: true) == nil)
    #expect(
      config.matchingSchemes(forModule: "model.layers.1.mlp.experts.0.up_proj", isLinear: true)
        .map(\.name) == ["a", "b", "c", "d"])
  }

  @Test("Linear in ignore ignores every Linear; other class names are reported")
  func classEntries() throws {
    let json = try parseJSON(
      #"{"quant_method": "compressed-tensors", "config_groups": {"g": {"targets": ["MoE", "re:.*"]}}, "ignore": ["Linear"]}"#
    )
    let config = try QuantizationConfig(json: json)
    #expect(config.scheme(forModule: "x.up_proj", isLinear: true) == nil)
    #expect(config.scheme(forModule: "x.gate", isLinear: false)?.name == "g")
    #expect(config.isIgnored("x.up_proj", isLinear: true))
    #expect(!config.isIgnored("x.up_proj"))
    #expect(config.unsupportedClassTargets == ["MoE"])
  }
}
