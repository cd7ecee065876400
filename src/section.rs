//! How a component declares its settings: [`section!`] writes the serde
//! struct, its `Default` and its documentation from one declaration, so
//! every key has its doc comment and its default exactly once, beside each
//! other; [`Checks`] collects every problem of a config instead of stopping
//! at the first.

use std::fmt;

/// One key of a section, for the generated reference.
#[derive(Debug, Clone, Copy)]
pub struct FieldDoc {
    pub key: &'static str,
    pub doc: &'static str,
}

/// A settings section: its documentation, key by key.
pub trait Section: Default + serde::Serialize {
    /// The section's own doc comment.
    const DOC: &'static str;
    /// Every key, in declaration order.
    const FIELDS: &'static [FieldDoc];
}

/// Declares a settings section:
///
/// ```ignore
/// section! {
///     /// `[http]`: metrics and health.
///     pub struct HttpConfig {
///         /// `/metrics`, `/healthz`, `/readyz`.
///         pub listen: String = "0.0.0.0:9898".into(),
///     }
/// }
/// ```
///
/// gives the struct (`deny_unknown_fields`, missing keys take the default),
/// `impl Default` from the `= value`s and `impl Section` from the doc
/// comments. Write the reason for a default in the doc comment, never the
/// number: the reference prints the number from the code.
#[macro_export]
macro_rules! section {
    (
        $(#[doc = $sdoc:literal])*
        pub struct $name:ident {
            $(
                $(#[doc = $doc:literal])*
                pub $field:ident : $ty:ty = $default:expr
            ),* $(,)?
        }
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            $(
                $(#[doc = $doc])*
                pub $field: $ty,
            )*
        }

        impl Default for $name {
            fn default() -> Self {
                $name {
                    $($field: $default,)*
                }
            }
        }

        impl $crate::section::Section for $name {
            const DOC: &'static str = concat!($($sdoc, "\n",)*);
            const FIELDS: &'static [$crate::section::FieldDoc] = &[
                $($crate::section::FieldDoc {
                    key: stringify!($field),
                    doc: concat!($($doc, "\n",)*),
                },)*
            ];
        }
    };
}

/// One thing wrong with a setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The full key, `detectors.send_volume.hourly_ceiling`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "setting `{}`: {}", self.key, self.message)
    }
}

/// Collects the problems of a whole config. Each section checks itself
/// under its own prefix ([`Checks::under`]) and names keys relative to it.
#[derive(Debug, Default)]
pub struct Checks {
    prefix: String,
    problems: Vec<Problem>,
}

impl Checks {
    pub fn new() -> Checks {
        Checks::default()
    }

    /// Runs `f` with keys relative to `prefix` (`detectors.backscatter`).
    pub fn under(&mut self, prefix: &str, f: impl FnOnce(&mut Checks)) {
        let full = self.full(prefix);
        let saved = std::mem::replace(&mut self.prefix, full);
        f(self);
        self.prefix = saved;
    }

    fn full(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    /// Records a problem with `key` (relative to the current prefix).
    pub fn fail(&mut self, key: &str, message: impl Into<String>) {
        let key = self.full(key);
        self.problems.push(Problem {
            key,
            message: message.into(),
        });
    }

    /// `key` must be at least `min`.
    pub fn at_least(&mut self, key: &str, value: u64, min: u64) {
        if value < min {
            self.fail(key, format!("must be at least {min}"));
        }
    }

    /// `key` must not be 0.
    pub fn positive(&mut self, key: &str, value: u64) {
        if value == 0 {
            self.fail(key, "must be greater than 0");
        }
    }

    /// `key` must be a number of at least `min` (more than `min` when
    /// `strict`); NaN never is.
    pub fn number_at_least(&mut self, key: &str, value: f64, min: f64, strict: bool) {
        let ok = if strict { value > min } else { value >= min };
        if !ok || value.is_nan() {
            let rel = if strict { "greater than" } else { "at least" };
            self.fail(key, format!("must be {rel} {min}"));
        }
    }

    /// `key` must hold some non-blank text.
    pub fn not_blank(&mut self, key: &str, value: &str) {
        if value.trim().is_empty() {
            self.fail(key, "must not be empty");
        }
    }

    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn into_problems(self) -> Vec<Problem> {
        self.problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::section! {
        /// `[t]`: a test section.
        pub struct T {
            /// The first key.
            /// On two lines.
            pub a: u32 = 7,
            /// The second key.
            pub b: String = "x".into(),
        }
    }

    #[test]
    fn a_section_has_its_defaults_and_docs_once() {
        let t = T::default();
        assert_eq!((t.a, t.b.as_str()), (7, "x"));
        assert_eq!(T::FIELDS.len(), 2);
        assert_eq!(T::FIELDS[0].key, "a");
        assert_eq!(T::FIELDS[0].doc, " The first key.\n On two lines.\n");
        assert_eq!(T::DOC, " `[t]`: a test section.\n");
        let e = toml::from_str::<T>("c = 1").unwrap_err().to_string();
        assert!(e.contains("unknown field `c`"), "{e}");
        assert_eq!(toml::from_str::<T>("a = 1").unwrap().b, "x");
    }

    #[test]
    fn checks_collect_every_problem_with_full_keys() {
        let mut c = Checks::new();
        c.under("detectors.x", |c| {
            c.at_least("n", 1, 2);
            c.number_at_least("r", f64::NAN, 0.0, false);
            c.at_least("fine", 5, 2);
        });
        c.positive("state.max_accounts", 0);
        let p = c.into_problems();
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            ["detectors.x.n", "detectors.x.r", "state.max_accounts"]
        );
        assert_eq!(
            p[0].to_string(),
            "setting `detectors.x.n`: must be at least 2"
        );
    }
}
