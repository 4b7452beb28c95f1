//! The committed JSON Schema of recipes must be the one the code generates.

use std::path::Path;

#[test]
fn committed_schema_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/recipe.schema.json");
    let generated = pipeline::recipe::schema_json();

    if std::env::var_os("PIPELINE_WRITE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).expect("the schema file is writable");
    }

    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "schemas/recipe.schema.json is stale; regenerate it with \
         `cargo run -- schema > schemas/recipe.schema.json` \
         (or `PIPELINE_WRITE_SCHEMA=1 cargo test --test schema`)"
    );
}
