//! The `pipeline` command line.

fn main() {}
