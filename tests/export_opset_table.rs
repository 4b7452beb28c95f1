//! The tables `export: {format: onnx}` checks opsets and IR versions against hold what the
//! venv's `onnx` package says: every operator of the default domain with the opsets its
//! definition changed at, the deprecated definitions, and the least IR version per opset.

mod common;

use std::process::Command;

use pipeline_passes::export::opsets::{
    DEPRECATED, LATEST_IR_VERSION, OPERATORS, OPSET_IR_VERSIONS,
};

/// Prints `op NAME v1 v2 ...`, `deprecated NAME v`, `ir OPSET IR` and `latest_ir IR` lines.
const DUMP: &str = r#"
import onnx
from onnx import defs, helper
ops, deprecated = {}, set()
for schema in defs.get_all_schemas_with_history():
    if schema.domain in ("", "ai.onnx"):
        ops.setdefault(schema.name, set()).add(schema.since_version)
        if schema.deprecated:
            deprecated.add((schema.name, schema.since_version))
for name in sorted(ops):
    print("op", name, *sorted(ops[name]))
for name, version in sorted(deprecated):
    print("deprecated", name, version)
for opset in range(1, defs.onnx_opset_version() + 1):
    try:
        print("ir", opset, helper.find_min_ir_version_for([helper.make_opsetid("", opset)]))
    except ValueError:
        pass  # an opset number onnx never released, or not released yet
print("latest_ir", onnx.IR_VERSION)
"#;

#[test]
fn the_tables_match_the_onnx_package() {
    let output = Command::new(common::venv_python())
        .arg("-c")
        .arg(DUMP)
        .output()
        .expect("the venv's python starts");
    assert!(output.status.success(), "python: {}", String::from_utf8_lossy(&output.stderr));
    let expected = String::from_utf8_lossy(&output.stdout);

    let mut ours = Vec::new();
    for (name, versions) in OPERATORS {
        let versions: Vec<String> = versions.iter().map(|v| v.to_string()).collect();
        ours.push(format!("op {name} {}", versions.join(" ")));
    }
    ours.extend(DEPRECATED.iter().map(|(name, version)| format!("deprecated {name} {version}")));
    ours.extend(OPSET_IR_VERSIONS.iter().map(|(opset, ir)| format!("ir {opset} {ir}")));
    ours.push(format!("latest_ir {LATEST_IR_VERSION}"));

    let expected: Vec<&str> = expected.lines().collect();
    assert_eq!(ours, expected);
}
