//! Stages: the bash contract (`config.sh SETTINGS`, then `apply.sh WORK`), run in order, each
//! in its own sandbox, each logged to `WORK/logs/NN-name.log`.

pub mod collection;
pub mod mask;
pub mod process;
pub mod report;
pub mod runner;

pub use collection::Stage;
pub use runner::{run_stages, RunPlan, StageFailed};
