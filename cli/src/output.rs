//! How failures reach the user: one line on stderr (or a JSON object on stdout) and exit code 1.

use std::process::ExitCode;

/// An error whose details the command already printed (e.g. a JSON "denied" report): `main`
/// only sets the exit code.
#[derive(Debug, thiserror::Error)]
#[error("already reported")]
pub(crate) struct Reported;

/// Prints `err` with its causes on one line and returns the failure exit code.
pub(crate) fn fail(json: bool, err: &anyhow::Error) -> ExitCode {
    if err.is::<Reported>() {
        return ExitCode::FAILURE;
    }
    // `{:#}` joins the context chain with ": ", giving e.g.
    // `desc.toml: hardware.ram: min 4096 MiB is above max 2048 MiB`.
    let line = format!("{err:#}").replace('\n', " ");
    if json {
        println!("{}", serde_json::json!({ "ok": false, "error": line }));
    } else {
        eprintln!("vwnet: error: {line}");
    }
    ExitCode::FAILURE
}
