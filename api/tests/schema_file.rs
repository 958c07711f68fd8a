//! `schema.graphql` at the repository root is exactly what the server serves.

#[test]
fn checked_in_schema_equals_served_schema() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../schema.graphql");
    let on_disk = std::fs::read_to_string(path).unwrap_or_default();
    let served = trackingbms_api::graphql::sdl();
    assert!(
        on_disk == served,
        "schema.graphql is out of date; regenerate it with\n  cargo run -p trackingbms-api -- export-schema > schema.graphql"
    );
}
