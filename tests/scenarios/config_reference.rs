//! The checked-in configuration reference is what the code generates: a
//! changed key, default or doc comment without `credwatch config-reference
//! > docs/configuration.md` fails here (and so in CI).

#[test]
fn docs_configuration_md_is_up_to_date() {
    let generated = credwatch::config::reference::markdown()
        .unwrap_or_else(|keys| panic!("settings without documentation: {keys:?}"));
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "docs/configuration.md is stale: run `cargo run -- config-reference > docs/configuration.md` and commit it"
    );
}

#[test]
fn every_default_is_on_the_page_once() {
    let page = credwatch::config::reference::markdown().unwrap();
    let defaults = toml::Value::try_from(credwatch::config::Config::default()).unwrap();
    let mut keys = Vec::new();
    fn walk(prefix: &str, v: &toml::Value, out: &mut Vec<String>) {
        match v.as_table() {
            // A table with its own section, or a leaf (kafka.properties).
            Some(t) if !t.is_empty() => {
                for (k, v) in t {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&p, v, out);
                }
            }
            _ => out.push(prefix.to_string()),
        }
    }
    walk("", &defaults, &mut keys);
    assert!(keys.len() > 60, "{keys:?}");
    for k in keys {
        assert_eq!(page.matches(&format!("\n### `{k}`\n")).count(), 1, "{k}");
    }
}
