//! Simulator (filled in by the simulator issue).
