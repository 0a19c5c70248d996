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
    let line = one_line(err);
    if json {
        println!("{}", serde_json::json!({ "ok": false, "error": line }));
    } else {
        eprintln!("vwnet: error: {line}");
    }
    ExitCode::FAILURE
}

/// Joins the error and its causes with ": ", e.g.
/// `desc.toml: hardware.ram: min 4096 MiB is above max 2048 MiB`.
///
/// Many library errors already include their cause in their own message (and also expose it as
/// `source()`), so a cause whose text the line already holds is not repeated.
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string().replace('\n', " ");
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("opening x: {source}")]
    struct Open {
        source: std::io::Error,
    }

    #[test]
    fn causes_already_in_the_message_are_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let err = anyhow::Error::new(Open { source: io }).context("x.img: cannot add image");
        assert_eq!(
            one_line(&err),
            "x.img: cannot add image: opening x: no such file"
        );
    }

    #[test]
    fn distinct_causes_are_all_shown() {
        let err = anyhow::anyhow!("inner").context("middle").context("outer");
        assert_eq!(one_line(&err), "outer: middle: inner");
    }
}
