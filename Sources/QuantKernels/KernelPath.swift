import CQuantKernels

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Which implementation a fast kernel runs: the portable Swift SIMD code, or
/// AVX-512 code chosen at run time.
///
/// Both produce bit-identical results (tests compare each with the scalar
/// reference). ``automatic`` is what callers normally pass: AVX-512 when the CPU
/// and OS support it, unless the environment variable `CKPT_KERNELS` is
/// `portable`. The AVX-512 code lives in the small C target `CQuantKernels`,
/// compiled with per-function target attributes, so the binary itself stays
/// baseline x86-64 and runs anywhere.
public enum KernelPath: String, Sendable, CaseIterable, CustomStringConvertible {
  /// The best available path (see the type's description).
  case automatic
  /// Portable Swift SIMD, on every CPU.
  case portable
  /// AVX-512 F/BW/DQ/VL. Only where ``isAvailable``.
  case avx512

  /// Whether this path can run on this machine.
  public var isAvailable: Bool {
    switch self {
    case .automatic, .portable: true
    case .avx512: KernelPath.cpuHasAVX512
    }
  }

  /// The concrete path ``automatic`` stands for here; other cases return themselves.
  public var resolved: KernelPath {
    switch self {
    case .automatic: KernelPath.automaticChoice
    case .portable, .avx512: self
    }
  }

  public var description: String {
    switch self {
    case .automatic: "automatic (\(resolved.rawValue))"
    case .portable, .avx512: rawValue
    }
  }

  /// Resolves `self` for a kernel call.
  ///
  /// - Precondition: The path is available; passing ``avx512`` on a machine
  ///   without it is a programming error and traps.
  @inline(__always)
  var useAVX512: Bool {
    switch self {
    case .portable: return false
    case .automatic: return KernelPath.automaticChoice == .avx512
    case .avx512:
      precondition(KernelPath.cpuHasAVX512, "KernelPath.avx512 requested on a CPU without AVX-512")
      return true
    }
  }

  private static let cpuHasAVX512: Bool = ck_avx512_available() != 0

  private static let automaticChoice: KernelPath = {
    if let v = getenv("CKPT_KERNELS"), String(cString: v) == "portable" { return .portable }
    return cpuHasAVX512 ? .avx512 : .portable
  }()
}
