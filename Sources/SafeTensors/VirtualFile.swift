import Synchronization

/// The bytes of a file that is stored in another form, decoded piece by piece
/// on demand: a `.safetensors.zst` archive stands for the shard it restores.
///
/// A ``MappedFile`` opened on such a path reserves address space for the
/// whole file it stands for and asks its source to decode only the pieces a
/// reader prepares (``MappedFile/prepare(_:)``). Pieces are pinned while
/// prepared and dropped when the last reader releases them, so memory stays
/// at what readers hold.
///
/// SafeTensors knows nothing of compression: the module that reads a stored
/// form registers an opener for its suffix with ``VirtualFiles/register(suffix:_:)``.
public protocol VirtualFileSource: AnyObject, Sendable {
  /// The size of the file the source stands for.
  var count: Int { get }
  /// Decodes every piece overlapping `range` that is not resident into
  /// `base` (the start of the whole file's memory) and pins each piece
  /// overlapping `range` once. When it throws, it pins nothing: the caller
  /// must not release the range.
  ///
  /// - Throws: ``SafeTensorsError`` with kind ``SafeTensorsError/Kind/storage(code:tensor:message:)``
  ///   naming the tensor whose stored piece is damaged.
  func materialize(_ range: Range<Int>, into base: UnsafeMutableRawPointer) throws(SafeTensorsError)
  /// Unpins every piece overlapping `range` once; pieces no reader pins any
  /// more are dropped (their pages given back) and decoded again if prepared later.
  func release(_ range: Range<Int>, base: UnsafeMutableRawPointer)
}

/// Openers for stored forms of safetensors files, by file-name suffix.
public enum VirtualFiles {
  /// Opens the stored file at a path as a ``VirtualFileSource``.
  public typealias Opener = @Sendable (String) throws(SafeTensorsError) -> any VirtualFileSource

  /// The suffix of CheckpointKit's shard archives (`ckpt compress`).
  public static let archiveSuffix = ".safetensors.zst"

  private static let openers = Mutex<[(suffix: String, open: Opener)]>([])

  /// Makes ``MappedFile/init(path:)`` (and so ``SafeTensorsFile`` and
  /// ``SafeTensorsHeader/inspect(_:)``) open files ending in `suffix` through `opener`.
  public static func register(suffix: String, _ opener: @escaping Opener) {
    openers.withLock { list in
      list.removeAll { $0.suffix == suffix }
      list.append((suffix, opener))
    }
  }

  /// The opener for `path`, if its suffix is registered.
  public static func opener(for path: String) -> Opener? {
    openers.withLock { list in list.first { path.hasSuffix($0.suffix) }?.open }
  }

  /// Whether `path` names a stored form rather than a plain file: a
  /// registered suffix or the archive suffix (which fails closed when no
  /// reader is registered).
  public static func isStored(_ path: String) -> Bool {
    path.hasSuffix(archiveSuffix) || opener(for: path) != nil
  }
}
