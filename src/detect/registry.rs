//! The detector registry: each detector declares, next to its `impl
//! Detector`, its name, its config type and what it is keyed by
//! ([`Registration`]); one line in `detect/mod.rs`'s `registry!` generates
//! the module, the `[detectors.*]` section with every detector's checks,
//! [`build`](super::build) and the list the reference and `replay`'s summary
//! are made from ([`registry`](super::registry)). Code that must treat a
//! kind of detector specially asks [`Registration::KEYED_BY`], never a list
//! of names.

use super::Detector;
use crate::section::{Checks, FieldDoc, Section};
use crate::source::event::AccountForm;
use crate::state::{KeyedBy, StateConfig};

/// The two switches every `[detectors.<name>]` table has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switches {
    pub enabled: bool,
    /// Emit `account.alert` instead of `account.lock`.
    pub dry_run: bool,
}

/// A section with the two switches (implemented by [`detector_section!`]).
pub trait Switched {
    fn switches(&self) -> Switches;
}

/// A detector's `[detectors.<name>]` section.
pub trait DetectorConfig:
    Section + Switched + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync
{
    /// Checks the section; keys are relative to `detectors.<name>`.
    fn check(&self, c: &mut Checks);
}

/// Declares a detector's section: [`crate::section!`] with the two
/// switches every detector has (`enabled`, default as given; `dry_run`,
/// default false) put first, and [`Switched`] for them.
#[macro_export]
macro_rules! detector_section {
    (
        enabled = $enabled:expr;
        $(#[doc = $sdoc:literal])*
        pub struct $name:ident {
            $(
                $(#[doc = $doc:literal])*
                pub $field:ident : $ty:ty = $default:expr
            ),* $(,)?
        }
    ) => {
        $crate::section! {
            $(#[doc = $sdoc])*
            pub struct $name {
                /// Runs the detector.
                pub enabled: bool = $enabled,
                /// Emit `account.alert` instead of `account.lock` (with
                /// `"dry_run": true`): what it would have done, without doing it.
                pub dry_run: bool = false,
                $(
                    $(#[doc = $doc])*
                    pub $field: $ty = $default,
                )*
            }
        }

        impl $crate::detect::registry::Switched for $name {
            fn switches(&self) -> $crate::detect::registry::Switches {
                $crate::detect::registry::Switches {
                    enabled: self.enabled,
                    dry_run: self.dry_run,
                }
            }
        }
    };
}

/// How a detector is registered: declared beside its `impl Detector`.
pub trait Registration: Detector + Sized + 'static {
    /// The contract's name (`impossible_travel`, ...), which is also its
    /// module and its config section.
    const NAME: &'static str;
    /// What its state, and the stage that judges it, is keyed by.
    const KEYED_BY: KeyedBy;
    type Config: DetectorConfig;
    /// True when its findings are about mail that third parties send to
    /// the account (bounces): anyone can forge those, so they never keep
    /// an incident open.
    const THIRD_PARTY: bool = false;
    /// `form`: how accounts are spelled (`[events]`), for a detector that
    /// compares addresses with accounts.
    fn new(cfg: &Self::Config, state: &StateConfig, form: &AccountForm) -> Self;
}

/// A built detector with its switches.
pub struct Registered {
    pub name: &'static str,
    pub keyed_by: KeyedBy,
    pub detector: Box<dyn Detector>,
    pub dry_run: bool,
    /// See [`Registration::THIRD_PARTY`].
    pub third_party: bool,
}

impl Registered {
    /// Builds `D` into `all` when it is enabled and, with `only`, keyed by
    /// that key (an allow-list: a stage gets exactly the detectors keyed
    /// by what its input is partitioned by).
    pub fn push<D: Registration>(
        all: &mut Vec<Registered>,
        cfg: &D::Config,
        state: &StateConfig,
        form: &AccountForm,
        only: Option<KeyedBy>,
    ) {
        let switches = cfg.switches();
        if !switches.enabled || only.is_some_and(|k| k != D::KEYED_BY) {
            return;
        }
        all.push(Registered {
            name: D::NAME,
            keyed_by: D::KEYED_BY,
            detector: Box::new(D::new(cfg, state, form)),
            dry_run: switches.dry_run,
            third_party: D::THIRD_PARTY,
        });
    }
}

/// What the registry knows of a detector, for the reference and summaries.
#[derive(Debug, Clone, Copy)]
pub struct DetectorInfo {
    pub name: &'static str,
    pub keyed_by: KeyedBy,
    /// The config section's doc comment and keys.
    pub doc: &'static str,
    pub fields: &'static [FieldDoc],
}

impl DetectorInfo {
    pub fn of<D: Registration>() -> DetectorInfo {
        DetectorInfo {
            name: D::NAME,
            keyed_by: D::KEYED_BY,
            doc: <D::Config as Section>::DOC,
            fields: <D::Config as Section>::FIELDS,
        }
    }
}

/// `a == b`, usable in a constant (the registry checks at compile time
/// that a detector's module is named after its `NAME`).
pub const fn same_name(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// One line per detector: `module::Type`, optionally with attributes.
macro_rules! registry {
    ($( $(#[$meta:meta])* $module:ident :: $ty:ident ),* $(,)?) => {
        $( $(#[$meta])* pub mod $module; )*

        $(
            $(#[$meta])*
            const _: () = assert!(
                $crate::detect::registry::same_name(
                    stringify!($module),
                    <$module::$ty as $crate::detect::Registration>::NAME,
                ),
                concat!("detector module `", stringify!($module), "` must be named after its NAME"),
            );
        )*

        /// `[detectors.*]`: one table per detector; each has `enabled` and
        /// `dry_run`.
        #[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct DetectorsConfig {
            $(
                $(#[$meta])*
                pub $module: <$module::$ty as $crate::detect::Registration>::Config,
            )*
        }

        impl DetectorsConfig {
            /// Whether any enabled detector is keyed by `keyed_by` (asked of
            /// the registry, without building anything).
            pub fn any_enabled(&self, keyed_by: $crate::state::KeyedBy) -> bool {
                let mut any = false;
                $(
                    $(#[$meta])*
                    {
                        any |= <$module::$ty as $crate::detect::Registration>::KEYED_BY == keyed_by
                            && $crate::detect::registry::Switched::switches(&self.$module).enabled;
                    }
                )*
                any
            }

            /// Every detector's own checks, keys under `detectors.<name>`.
            pub fn check(&self, c: &mut $crate::section::Checks) {
                $(
                    $(#[$meta])*
                    c.under(stringify!($module), |c| {
                        $crate::detect::DetectorConfig::check(&self.$module, c)
                    });
                )*
            }
        }

        /// Every registered detector, in registration order.
        #[allow(clippy::vec_init_then_push)] // entries may be cfg'd out
        pub fn registry() -> Vec<$crate::detect::DetectorInfo> {
            let mut all = Vec::new();
            $(
                $(#[$meta])*
                all.push($crate::detect::DetectorInfo::of::<$module::$ty>());
            )*
            all
        }

        /// Every enabled detector (with `only`, those keyed by it), in
        /// registration order.
        pub fn build(
            cfg: &DetectorsConfig,
            state: &$crate::state::StateConfig,
            form: &$crate::source::event::AccountForm,
            only: Option<$crate::state::KeyedBy>,
        ) -> Vec<$crate::detect::Registered> {
            let mut all = Vec::new();
            $(
                $(#[$meta])*
                $crate::detect::Registered::push::<$module::$ty>(&mut all, &cfg.$module, state, form, only);
            )*
            all
        }
    };
}
