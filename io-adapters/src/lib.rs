//! OS adapters (filled in by the daemon issue).
