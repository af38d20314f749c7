import CHDF5
/// Placeholder until the module lands.
enum _Placeholder {}
