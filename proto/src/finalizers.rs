//! Finalizers with a meaning shared by the API server and the garbage collector.

/// Set by a delete with propagationPolicy Foreground: the owner stays (marked for deletion)
/// until the garbage collector has deleted its dependents that block owner deletion, then
/// removes this finalizer.
pub const FOREGROUND_DELETION: &str = "foregroundDeletion";
/// Set by a delete with propagationPolicy Orphan: the owner stays until the garbage collector
/// has removed its ownerReferences from the dependents, then removes this finalizer.
pub const ORPHAN: &str = "orphan";
