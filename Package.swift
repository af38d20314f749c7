// swift-tools-version: 6.2
//
// CheckpointKit: convert, requantize and verify large-model checkpoints.
//
// Dependency direction (see Docs/ARCHITECTURE.md):
//
//   ckpt ─▶ Verification, Conversion, Diff, Reports, Checkpoint
//   Verification ─▶ Checkpoint ─▶ CompressedTensors, SafeTensors ─▶ StrictJSON
//   Verification ─▶ QuantKernels
//   Diff ─▶ Conversion, QuantKernels, BLAS      Reports ─▶ Diff, HDF5
//   Zstd ─▶ CZstd      BLAS ─▶ COpenBLAS      HDF5 ─▶ CHDF5
//
// StrictJSON, SafeTensors, CompressedTensors and QuantKernels need no system
// package: they build and test without one. Each C library is imported by
// exactly one thin Swift wrapper module. CQuantKernels is our own C: the
// AVX-512 kernels QuantKernels picks at run time (KernelPath).
//
// Recognized compile-time flags: none yet.
import PackageDescription

let swiftSettings: [SwiftSetting] = [
  .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
  name: "CheckpointKit",
  platforms: [.macOS(.v15)],
  products: [
    .executable(name: "ckpt", targets: ["ckpt"]),
    .library(name: "SafeTensors", targets: ["SafeTensors"]),
    .library(name: "CompressedTensors", targets: ["CompressedTensors"]),
    .library(name: "Checkpoint", targets: ["Checkpoint"]),
    .library(name: "QuantKernels", targets: ["QuantKernels"]),
    .library(name: "Verification", targets: ["Verification"]),
    .library(name: "Conversion", targets: ["Conversion"]),
    .library(name: "Diff", targets: ["Diff"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
  ],
  targets: [
    // MARK: API

    .target(name: "StrictJSON", swiftSettings: swiftSettings),
    .target(name: "SafeTensors", dependencies: ["StrictJSON"], swiftSettings: swiftSettings),
    .target(name: "CQuantKernels"),
    .target(name: "QuantKernels", dependencies: ["CQuantKernels"], swiftSettings: swiftSettings),
    .target(name: "CompressedTensors", dependencies: ["StrictJSON"], swiftSettings: swiftSettings),
    .target(
      name: "Checkpoint",
      dependencies: ["StrictJSON", "SafeTensors", "CompressedTensors"],
      swiftSettings: swiftSettings),
    .target(
      name: "Verification",
      dependencies: [
        "StrictJSON", "SafeTensors", "CompressedTensors", "Checkpoint", "QuantKernels",
        .product(name: "Crypto", package: "swift-crypto"),
      ],
      swiftSettings: swiftSettings),
    .target(
      name: "Conversion",
      dependencies: [
        "StrictJSON", "SafeTensors", "CompressedTensors", "Checkpoint", "QuantKernels", "Verification",
        .product(name: "Crypto", package: "swift-crypto"),
      ],
      swiftSettings: swiftSettings),
    .target(
      name: "Diff",
      dependencies: ["Checkpoint", "CompressedTensors", "Conversion", "QuantKernels", "SafeTensors", "StrictJSON", "BLAS"],
      swiftSettings: swiftSettings),
    .target(
      name: "Archive",
      dependencies: ["SafeTensors", "StrictJSON", "QuantKernels", "Zstd", "Conversion", .product(name: "Crypto", package: "swift-crypto")],
      swiftSettings: swiftSettings),
    .target(name: "Reports", dependencies: ["StrictJSON", "Diff", "HDF5", "QuantKernels", "SafeTensors"], swiftSettings: swiftSettings),
    .target(name: "Pipeline", dependencies: ["StrictJSON", "SafeTensors"], swiftSettings: swiftSettings),
    .executableTarget(
      name: "ckpt",
      dependencies: [
        "StrictJSON", "SafeTensors", "CompressedTensors", "Checkpoint", "Verification", "Conversion",
        "Diff", "Archive", "Reports", "Zstd", "BLAS", "HDF5", "QuantKernels", "Pipeline",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ],
      swiftSettings: swiftSettings),

    // MARK: C libraries, each behind exactly one thin Swift wrapper

    .systemLibrary(
      name: "CZstd", pkgConfig: "libzstd",
      providers: [.apt(["libzstd-dev"]), .brew(["zstd"])]),
    .systemLibrary(
      name: "COpenBLAS", pkgConfig: "openblas",
      providers: [.apt(["libopenblas-dev"]), .brew(["openblas"])]),
    .systemLibrary(
      name: "CHDF5", pkgConfig: "hdf5",
      providers: [.apt(["libhdf5-dev"]), .brew(["hdf5"])]),
    .target(name: "Zstd", dependencies: ["CZstd"], swiftSettings: swiftSettings),
    .target(name: "BLAS", dependencies: ["COpenBLAS"], swiftSettings: swiftSettings),
    .target(name: "HDF5", dependencies: ["CHDF5"], swiftSettings: swiftSettings),

    // MARK: Tests

    .target(
      name: "TestSupport", dependencies: ["SafeTensors", "StrictJSON"], path: "Tests/TestSupport",
      swiftSettings: swiftSettings),
    .testTarget(
      name: "StrictJSONTests", dependencies: ["StrictJSON"], swiftSettings: swiftSettings),
    .testTarget(name: "PipelineTests", dependencies: ["Pipeline", "TestSupport"], swiftSettings: swiftSettings),
    .testTarget(
      name: "SafeTensorsTests", dependencies: ["SafeTensors", "TestSupport"],
      swiftSettings: swiftSettings),
    .testTarget(
      name: "CompressedTensorsTests", dependencies: ["CompressedTensors", "StrictJSON"],
      swiftSettings: swiftSettings),
    .testTarget(
      name: "CheckpointTests",
      dependencies: ["Checkpoint", "Verification", "SafeTensors", "TestSupport"],
      swiftSettings: swiftSettings),
    .testTarget(
      name: "QuantKernelsTests", dependencies: ["QuantKernels", "TestSupport"],
      swiftSettings: swiftSettings),
    .testTarget(
      name: "NativeLibraryTests", dependencies: ["Zstd", "BLAS", "HDF5"],
      swiftSettings: swiftSettings),
    .testTarget(
      name: "CkptTests",
      dependencies: [
        "ckpt", "TestSupport", "StrictJSON", "SafeTensors", "Verification", "Conversion", "Diff", "Reports", "HDF5", "QuantKernels",
        "Archive",
      ],
      swiftSettings: swiftSettings),
  ]
)
