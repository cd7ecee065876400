//! The scenario tests in one binary: each detector's attack and its benign
//! look-alikes through the whole engine and policy, the policy's incidents
//! and breaker, state bounds, replay (sequential against parallel, and the
//! command line), the seed's story end to end, and the configuration
//! reference. They run in-process (or start the `credwatch` binary briefly)
//! and need no broker; one binary links once instead of twelve times. The
//! end-to-end tests that start brokers, receivers and long-running
//! processes stay binaries of their own (`tests/*.rs`): each runs on its
//! own, as before, so their timing does not depend on the others.

mod backscatter;
mod config_reference;
mod durable;
mod failed_login_burst;
mod impossible_travel;
mod known_accounts;
mod layout;
mod maillog_corpora;
mod maillog_roundtrip;
mod parallel_replay;
mod password_spray;
mod policy;
mod replay_cli;
mod send_volume;
mod sender_mismatch;
mod state_bounds;
mod steering;
mod story;
mod unlock;
mod watermark;
