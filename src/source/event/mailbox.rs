//! The addresses in a `From:` header (RFC 5322 §3.4): display names,
//! comments, angle brackets, quoted local parts, groups and several
//! addresses, read leniently as mail clients write them. Only the
//! addresses are judged; a display name is never a sender.
//!
//! `"Yamada, Taro" <own@example.jp>` is `own@example.jp`;
//! `own@example.jp (Yamada)` is `own@example.jp`;
//! `"john doe"@example.com` is `john doe@example.com`;
//! `team: a@example.jp, b@example.jp;` is two addresses.

/// The most addresses read from one header (a header listing more is
/// judged on its first ones).
pub const MAX_MAILBOXES: usize = 16;

/// Stands for a space inside a quoted local part while unfolding.
const QUOTED_SPACE: char = '\u{1}';

/// The addr-specs of a header, in order, unfolded (quotes and comments
/// removed), not yet canonical. A header without any address gives none.
pub fn mailboxes(header: &str) -> Vec<String> {
    let mut out = Vec::new();
    // The current mailbox: the text outside brackets (an addr-spec when
    // there are no brackets), and the text inside the last `<...>`.
    let mut bare = String::new();
    let mut angle: Option<String> = None;
    let mut in_angle = false;
    let mut chars = header.chars().peekable();
    let finish = |bare: &mut String, angle: &mut Option<String>, out: &mut Vec<String>| {
        let spec = match angle.take() {
            Some(a) => strip_route(&a),
            None => bare
                .split_whitespace()
                .collect::<Vec<_>>()
                .join("")
                .replace(QUOTED_SPACE, " "),
        };
        bare.clear();
        if out.len() < MAX_MAILBOXES && spec.contains('@') {
            out.push(spec);
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                // A quoted string: its text, with `\` escapes.
                let mut q = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                q.push(n);
                            }
                        }
                        '"' => break,
                        c => q.push(c),
                    }
                }
                if in_angle {
                    if let Some(a) = angle.as_mut() {
                        a.push_str(&q);
                    }
                } else {
                    // Spaces inside quotes belong to the local part.
                    bare.extend(q.chars().map(|c| if c == ' ' { QUOTED_SPACE } else { c }));
                }
            }
            '(' => {
                // A comment, nested, with escapes: dropped.
                let mut depth = 1;
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                bare.push(' ');
            }
            '<' if !in_angle => {
                in_angle = true;
                angle = Some(String::new());
            }
            '>' if in_angle => in_angle = false,
            ':' if !in_angle => {
                // A group's name (or a display name with a colon): what
                // came before is not an address.
                bare.clear();
                angle = None;
            }
            ',' | ';' if !in_angle => finish(&mut bare, &mut angle, &mut out),
            c if in_angle => {
                if let Some(a) = angle.as_mut() {
                    if !c.is_whitespace() {
                        a.push(c);
                    }
                }
            }
            c => bare.push(c),
        }
    }
    finish(&mut bare, &mut angle, &mut out);
    out
}

/// `@relay1,@relay2:user@example.jp` (an obsolete source route) is
/// `user@example.jp`.
fn strip_route(a: &str) -> String {
    match a.strip_prefix('@').and_then(|r| r.split_once(':')) {
        Some((_, spec)) => spec.to_string(),
        None => a.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::mailboxes;

    #[test]
    fn display_names_comments_and_brackets_are_not_addresses() {
        for (header, want) in [
            ("own@example.jp", vec!["own@example.jp"]),
            ("<own@example.jp>", vec!["own@example.jp"]),
            ("\"Yamada Taro\" <own@example.jp>", vec!["own@example.jp"]),
            ("Yamada <own@example.jp>", vec!["own@example.jp"]),
            ("\"Yamada, Taro\" <own@example.jp>", vec!["own@example.jp"]),
            (
                "\"ceo@victim.example\" <own@example.jp>",
                vec!["own@example.jp"],
            ),
            ("own@example.jp (Yamada (Taro))", vec!["own@example.jp"]),
            ("(c) own @ example.jp", vec!["own@example.jp"]),
            (
                "=?UTF-8?B?5bGx55Sw?= <own@example.jp>",
                vec!["own@example.jp"],
            ),
            ("\"john doe\"@example.com", vec!["john doe@example.com"]),
            ("\"a\\\"b\"@example.com", vec!["a\"b@example.com"]),
            ("<@relay.example:own@example.jp>", vec!["own@example.jp"]),
            (
                "a@example.jp, \"B\" <b@example.net>",
                vec!["a@example.jp", "b@example.net"],
            ),
            (
                "team: a@example.jp, b@example.jp;, c@example.org",
                vec!["a@example.jp", "b@example.jp", "c@example.org"],
            ),
            ("Undisclosed recipients:;", vec![]),
            ("Yamada Taro", vec![]),
            ("", vec![]),
            ("<unclosed@example.jp", vec!["unclosed@example.jp"]),
        ] {
            assert_eq!(mailboxes(header), want, "{header}");
        }
    }

    #[test]
    fn a_long_list_is_read_up_to_the_bound() {
        let header: Vec<String> = (0..100).map(|i| format!("u{i}@example.jp")).collect();
        assert_eq!(mailboxes(&header.join(", ")).len(), super::MAX_MAILBOXES);
    }
}
