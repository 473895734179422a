//! `dts-operator describe`: one read-only `DescribeDtsJobDetail` of a job, with the same flags,
//! client and credentials as `reset`. One JSON object on one line on stdout —
//! `{"dtsJobId","dtsInstanceId","jobName","status","createTime","configured","requestId"}` —
//! or the error answer as `reset` prints it. Exit codes: 0 found, 1 the service answered an
//! error, 2 usage or configuration, 3 no answer. Repeated only after transport failures.

use std::io::Write;

use serde::Serialize;

use crate::aliyun::dts::DtsAnswer;
use crate::aliyun::error::{AttemptOutcome, Class, classify};
use crate::cli::DescribeArgs;
use crate::oneshot::connect;

/// Process exit codes of `describe`.
pub mod exit {
    /// The job was found; its state is printed.
    pub const FOUND: i32 = 0;
    /// The service answered with an error (no such job, not allowed, …).
    pub const FAILED: i32 = 1;
    /// Usage or configuration error; nothing was sent.
    pub const USAGE: i32 = 2;
    /// No answer (timeout, connection lost, an answer that cannot be parsed).
    pub const NO_ANSWER: i32 = 3;
}

/// The line printed when the service answered with an error: the answer's fields, as `reset`
/// prints them.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorOutput {
    #[serde(flatten)]
    answer: DtsAnswer,
}

fn usage(stderr: &mut dyn Write, msg: &str) -> i32 {
    let _ = writeln!(stderr, "dts-operator describe: {msg}");
    exit::USAGE
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serializes")
}

/// Runs the command; returns the exit code. `stdout` receives exactly one line (none for a
/// usage error).
pub async fn execute(args: DescribeArgs, stdout: &mut dyn Write, stderr: &mut dyn Write) -> i32 {
    let connected = match connect(&args.job) {
        Ok(c) => c,
        Err(msg) => return usage(stderr, &msg),
    };
    let read = match connected.read_job().await {
        Ok(r) => r,
        Err(e) => return usage(stderr, &e.to_string()),
    };
    if let (Class::Succeeded, Some(job)) = (classify(&read.outcome), &read.job) {
        let _ = writeln!(stdout, "{}", json(job));
        return exit::FOUND;
    }
    let no_answer = matches!(
        read.outcome,
        AttemptOutcome::Transport(_) | AttemptOutcome::Unparseable { .. }
    );
    let _ = writeln!(
        stderr,
        "dts-operator describe: {}{}",
        if no_answer { "no answer: " } else { "" },
        read.outcome.describe()
    );
    let error = ErrorOutput {
        answer: read.outcome.recorded_answer(),
    };
    let _ = writeln!(stdout, "{}", json(&error));
    if no_answer {
        exit::NO_ANSWER
    } else {
        exit::FAILED
    }
}
