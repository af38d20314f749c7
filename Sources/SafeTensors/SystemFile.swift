#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Describes an `errno` value in words (`strerror`).
public func systemErrorDescription(_ code: Int32) -> String {
  guard let s = strerror(code) else { return "error \(code)" }
  return String(cString: s)
}

/// A file descriptor owned by one value; closed when the value is consumed or dropped.
///
/// All I/O in CheckpointKit goes through this type, so every system-call error
/// becomes a ``SafeTensorsError`` naming the file and the operation.
public struct SystemFile: ~Copyable {
  /// The path the file was opened with.
  public let path: String
  /// The descriptor.
  public let fd: Int32

  /// Opens `path` read-only.
  ///
  /// The corresponding C function is `open`.
  public init(readingAt path: String) throws(SafeTensorsError) {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    if fd < 0 { throw SafeTensorsError(file: path, kind: .io(operation: "open", errno: errno)) }
    self.path = path
    self.fd = fd
  }

  /// Creates (exclusively) and opens `path` for writing with mode 0644.
  public init(creatingAt path: String) throws(SafeTensorsError) {
    let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
    if fd < 0 { throw SafeTensorsError(file: path, kind: .io(operation: "create", errno: errno)) }
    self.path = path
    self.fd = fd
  }

  deinit { close(fd) }

  /// The file's size in bytes (`fstat`).
  public func size() throws(SafeTensorsError) -> Int {
    var st = stat()
    if fstat(fd, &st) != 0 { throw error("fstat") }
    return Int(st.st_size)
  }

  /// Reads exactly `count` bytes at `offset`, or fewer only at the end of the file.
  ///
  /// The corresponding C function is `pread`.
  public func read(count: Int, at offset: Int) throws(SafeTensorsError) -> [UInt8] {
    var result = [UInt8](repeating: 0, count: count)
    var done = 0
    while done < count {
      let n = result.withUnsafeMutableBytes { buf in
        pread(fd, buf.baseAddress! + done, count - done, off_t(offset + done))
      }
      if n < 0 {
        if errno == EINTR { continue }
        throw error("read")
      }
      if n == 0 { break }
      done += n
    }
    if done < count { result.removeLast(count - done) }
    return result
  }

  /// Reads into `buffer` at `offset`; returns the bytes read (short only at EOF).
  public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(SafeTensorsError) -> Int {
    var done = 0
    while done < buffer.count {
      let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
      if n < 0 {
        if errno == EINTR { continue }
        throw error("read")
      }
      if n == 0 { break }
      done += n
    }
    return done
  }

  /// Writes all of `bytes` at the current position.
  ///
  /// The corresponding C function is `write`.
  public func write(_ bytes: UnsafeRawBufferPointer) throws(SafeTensorsError) {
    var done = 0
    while done < bytes.count {
      let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
      if n < 0 {
        if errno == EINTR { continue }
        throw error("write")
      }
      done += n
    }
  }

  /// Flushes the file's data and metadata to stable storage (`fsync`).
  public func sync() throws(SafeTensorsError) {
    if fsync(fd) != 0 { throw error("fsync") }
  }

  /// Tells the kernel the file will be read sequentially (`posix_fadvise`).
  public func adviseSequential() {
    _ = posix_fadvise(fd, 0, 0, Int32(POSIX_FADV_SEQUENTIAL))
  }

  func error(_ op: String) -> SafeTensorsError {
    SafeTensorsError(file: path, kind: .io(operation: op, errno: errno))
  }
}

/// File-system helpers used by writers: atomic replacement and directory sync.
public enum FileSystem {
  /// A unique temporary name beside `path`: `.NAME.tmp-PID-RANDOM`.
  ///
  /// Temporary names start with a dot and carry `.tmp-`, so an interrupted run
  /// leaves nothing that looks like a finished output.
  public static func temporaryPath(for path: String) -> String {
    let (dir, name) = split(path)
    let tag = String(UInt64.random(in: 0...UInt64.max), radix: 36)
    return (dir.isEmpty ? "" : dir + "/") + ".\(name).tmp-\(getpid())-\(tag)"
  }

  /// Whether `name` is a temporary name made by ``temporaryPath(for:)``.
  public static func isTemporaryName(_ name: String) -> Bool {
    name.hasPrefix(".") && name.contains(".tmp-")
  }

  /// Splits a path into its directory ("" for none) and last component.
  public static func split(_ path: String) -> (directory: String, name: String) {
    guard let slash = path.lastIndex(of: "/") else { return ("", path) }
    let dir = String(path[..<slash])
    return (dir.isEmpty ? "/" : dir, String(path[path.index(after: slash)...]))
  }

  /// Renames `from` to `to` atomically (replacing `to`) and syncs the directory.
  ///
  /// The corresponding C function is `rename`.
  public static func commit(_ from: String, to: String) throws(SafeTensorsError) {
    if rename(from, to) != 0 {
      throw SafeTensorsError(file: to, kind: .io(operation: "rename", errno: errno))
    }
    syncDirectory(of: to)
  }

  /// Best-effort `fsync` of the directory holding `path`, so a rename survives a crash.
  public static func syncDirectory(of path: String) {
    let dir = split(path).directory
    let fd = open(dir.isEmpty ? "." : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    if fd >= 0 {
      _ = fsync(fd)
      close(fd)
    }
  }

  /// Writes `bytes` to `path` atomically: a temporary file in the same
  /// directory, `fsync`, then `rename` over `path`.
  public static func writeAtomically(_ bytes: [UInt8], to path: String) throws(SafeTensorsError) {
    let tmp = temporaryPath(for: path)
    do throws(SafeTensorsError) {
      let f = try SystemFile(creatingAt: tmp)
      try withBytes(of: bytes) { (b) throws(SafeTensorsError) in try f.write(b) }
      try f.sync()
      try commit(tmp, to: path)
    } catch {
      unlink(tmp)
      throw error
    }
  }

  /// Reads a whole (small) file.
  public static func readAll(_ path: String) throws(SafeTensorsError) -> [UInt8] {
    let f = try SystemFile(readingAt: path)
    return try f.read(count: try f.size(), at: 0)
  }

  /// Whether something exists at `path` and whether it is a directory.
  public static func kind(of path: String) -> (exists: Bool, isDirectory: Bool) {
    var st = stat()
    guard stat(path, &st) == 0 else { return (false, false) }
    return (true, (st.st_mode & S_IFMT) == S_IFDIR)
  }

  /// The size of the file at `path`, or `nil` if it cannot be read.
  public static func fileSize(_ path: String) -> Int? {
    var st = stat()
    guard stat(path, &st) == 0 else { return nil }
    return Int(st.st_size)
  }

  /// The names in directory `path`, sorted bytewise, without `.` and `..`.
  public static func listDirectory(_ path: String) throws(SafeTensorsError) -> [String] {
    guard let d = opendir(path) else {
      throw SafeTensorsError(file: path, kind: .io(operation: "opendir", errno: errno))
    }
    defer { closedir(d) }
    var names: [String] = []
    while let e = readdir(d) {
      let name = withUnsafeBytes(of: e.pointee.d_name) { raw in
        String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
      }
      if name != "." && name != ".." { names.append(name) }
    }
    return names.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
  }

  /// Creates a directory and its parents (`mkdir -p`).
  public static func createDirectory(_ path: String) throws(SafeTensorsError) {
    if kind(of: path).isDirectory { return }
    let parent = split(path).directory
    if !parent.isEmpty && parent != "/" && parent != path { try createDirectory(parent) }
    if mkdir(path, 0o755) != 0 && errno != EEXIST {
      throw SafeTensorsError(file: path, kind: .io(operation: "mkdir", errno: errno))
    }
  }
}

/// Calls `body` with the bytes of `array`, preserving a typed error.
///
/// `Array.withUnsafeBytes` is `rethrows`, which erases typed throws.
@inlinable
public func withBytes<R, E: Error>(
  of array: [UInt8], _ body: (UnsafeRawBufferPointer) throws(E) -> R
) throws(E) -> R {
  let result: Result<R, E> = array.withUnsafeBytes { raw in
    do throws(E) { return .success(try body(raw)) } catch { return .failure(error) }
  }
  return try result.get()
}
