//! The documented layout is the real one: every entry of `src/` (and of
//! `src/source`, `src/sink`, `src/detect`) is in docs/architecture.md's
//! tree, every top-level one is named in the README, and nothing is
//! documented that is not there.

use std::path::Path;

fn entries(dir: &str) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut v: Vec<String> = std::fs::read_dir(root)
        .expect("read src")
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_dir() {
                format!("{name}/")
            } else {
                name
            }
        })
        .filter(|n| n != "lib.rs" && n != "main.rs" && n != "mod.rs")
        .collect();
    v.sort();
    v
}

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).expect("read doc")
}

#[test]
fn the_architecture_tree_lists_every_module_there_is() {
    let page = read("docs/architecture.md");
    let tree = page
        .split("```")
        .nth(1)
        .expect("docs/architecture.md opens with a tree in a code block");
    for dir in ["src", "src/source", "src/sink"] {
        for e in entries(dir) {
            let listed = tree.lines().any(|l| {
                l.trim_start().starts_with(&e)
                    || l.contains(&format!(" {e}"))
                    || l.contains(&format!("({e})"))
            });
            assert!(listed, "{dir}/{e} is not in docs/architecture.md's tree");
        }
    }
    // Each top-level line of the tree (two spaces in) names what it lists
    // first: every name that looks like a module must exist.
    for line in tree.lines() {
        if !line.starts_with("  ") || line.starts_with("   ") {
            continue;
        }
        // "metrics.rs, http.rs  what they are": names, joined by commas.
        for word in line.split_whitespace() {
            let name = word.trim_end_matches(',');
            assert!(
                entries("src").contains(&name.to_string()),
                "docs/architecture.md lists src/{name}, which does not exist"
            );
            if !word.ends_with(',') {
                break;
            }
        }
    }
}

#[test]
fn the_readme_names_every_top_level_module() {
    let readme = read("README.md");
    let words: Vec<&str> = readme
        .split(|c: char| c.is_whitespace() || "`(),;".contains(c))
        .collect();
    for e in entries("src") {
        assert!(
            words.contains(&e.as_str()),
            "README.md does not name src/{e}"
        );
    }
}

#[test]
fn every_detector_has_its_page_and_its_line_in_the_readme() {
    let readme = read("README.md");
    let index = read("docs/detectors/README.md");
    for e in entries("src/detect") {
        let name = e.trim_end_matches(".rs");
        if ["registry", "testing", "canary"].contains(&name) {
            continue;
        }
        assert!(
            readme.contains(&format!("| `{name}` |")),
            "README.md's table lacks {name}"
        );
        assert!(
            index.contains(&format!("| `{name}` |")),
            "docs/detectors/README.md lacks {name}"
        );
        assert!(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("docs/detectors/{name}.md"))
                .exists(),
            "docs/detectors/{name}.md is missing"
        );
    }
}
