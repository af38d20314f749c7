/// The role of a module in a DeepSeek-V3-architecture model (DeepSeek-V3,
/// Kimi K2). Raw values are stable kebab-case strings.
public enum ModuleKind: String, Sendable, CaseIterable {
  /// `model.layers.N.self_attn.{q_a,q_b,kv_a,kv_b,o}_proj` (MLA projections).
  case attention
  /// `model.layers.N.mlp.{gate,up,down}_proj` of a dense layer.
  case denseMLP = "dense-mlp"
  /// `model.layers.N.mlp.shared_experts…`.
  case sharedExpert = "shared-expert"
  /// `model.layers.N.mlp.experts.E.gate_proj`.
  case routedExpertGate = "routed-expert-gate"
  /// `model.layers.N.mlp.experts.E.up_proj`.
  case routedExpertUp = "routed-expert-up"
  /// `model.layers.N.mlp.experts.E.down_proj`.
  case routedExpertDown = "routed-expert-down"
  /// `model.layers.N.mlp.gate` (the MoE router; not a Linear).
  case router
  /// `model.embed_tokens`.
  case embedding
  /// Any RMSNorm: `…layernorm` (including `self_attn.q_a_layernorm`,
  /// `self_attn.kv_a_layernorm`), `model.norm`.
  case norm
  /// `lm_head`.
  case head
  /// Anything else (MTP extras, unknown names).
  case other
}

/// Module-name knowledge of the DeepSeek-V3 architecture (HF naming), needing
/// no config.
///
/// Functions take **module** names (`model.layers.1.mlp.experts.5.up_proj`),
/// not tensor names (`….up_proj.weight`). An optional `language_model.` prefix
/// (the K2.5 layout, FORMATS.md §8 pitfall 2) is ignored.
public enum DeepSeekV3Modules {
  /// The prefix K2.5-style checkpoints put before the text model's names.
  public static let languageModelPrefix = "language_model."

  /// `name` without a leading `language_model.`.
  public static func strippingLanguageModelPrefix(_ name: String) -> String {
    name.hasPrefix(languageModelPrefix) ? String(name.dropFirst(languageModelPrefix.count)) : name
  }

  /// Whether the module is a `torch.nn.Linear`: its last dotted component ends
  /// in `_proj` or is `kv_a_proj_with_mqa` or `lm_head`. The router
  /// (`mlp.gate`), embeddings and norms are not.
  public static func isLinear(_ moduleName: String) -> Bool {
    // Byte-level scan: this runs once per module, ~70,000 times for Kimi K2.
    let utf8 = moduleName.utf8
    let start =
      utf8.lastIndex(of: UInt8(ascii: ".")).map { utf8.index(after: $0) } ?? utf8.startIndex
    let last = utf8[start...]
    return last.count >= 5 && last.suffix(5).elementsEqual("_proj".utf8)
      || last.elementsEqual("kv_a_proj_with_mqa".utf8) || last.elementsEqual("lm_head".utf8)
  }

  /// The module's role.
  public static func kind(of moduleName: String) -> ModuleKind {
    let c = components(moduleName)
    switch c.count {
    case 1 where c[0] == "lm_head": return .head
    case 2 where c == ["model", "embed_tokens"]: return .embedding
    case 2 where c == ["model", "norm"]: return .norm
    default: break
    }
    guard c.count >= 4, c[0] == "model", c[1] == "layers", decimal(c[2]) != nil else {
      return .other
    }
    let rest = c[3...]
    if let last = rest.last, last.hasSuffix("layernorm") { return .norm }
    switch rest.first {
    case "self_attn":
      return .attention
    case "mlp":
      let m = Array(rest.dropFirst())
      switch m.first {
      case "gate" where m.count == 1:
        return .router
      case "gate_proj", "up_proj", "down_proj":
        return m.count == 1 ? .denseMLP : .other
      case "shared_experts":
        return .sharedExpert
      case "experts" where m.count == 3 && decimal(m[1]) != nil:
        switch m[2] {
        case "gate_proj": return .routedExpertGate
        case "up_proj": return .routedExpertUp
        case "down_proj": return .routedExpertDown
        default: return .other
        }
      default:
        return .other
      }
    default:
      return .other
    }
  }

  /// `N` of `model.layers.N.…`.
  public static func layerIndex(of moduleName: String) -> Int? {
    let c = components(moduleName)
    guard c.count >= 3, c[0] == "model", c[1] == "layers" else { return nil }
    return decimal(c[2])
  }

  /// `E` of `model.layers.N.mlp.experts.E.…`.
  public static func expertIndex(of moduleName: String) -> Int? {
    let c = components(moduleName)
    guard c.count >= 6, c[0] == "model", c[1] == "layers", decimal(c[2]) != nil,
      c[3] == "mlp", c[4] == "experts"
    else { return nil }
    return decimal(c[5])
  }

  private static func components(_ name: String) -> [Substring] {
    strippingLanguageModelPrefix(name).split(separator: ".", omittingEmptySubsequences: false)
  }

  /// A canonical non-negative decimal (`0`, `17`; not `07`, `+7`, `٣`).
  private static func decimal(_ s: Substring) -> Int? {
    guard !s.isEmpty, s.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
      s == "0" || s.utf8.first != 0x30
    else { return nil }
    return Int(s)
  }
}
