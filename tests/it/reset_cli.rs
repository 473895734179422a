//! `dts-operator reset` run as a process against the in-process simulator: exit codes, the one
//! JSON line on stdout, progress on stderr, calls seen by the server, and no secret anywhere in
//! the output even at `RUST_LOG=trace`.

use std::time::Duration;

use dts_simulator::{Answer, Simulator};
use serde_json::Value;

use crate::support::every_form;

const BIN: &str = env!("CARGO_BIN_EXE_dts-operator");
const ID: &str = "LTAI5tCliTestKey";
const SECRET: &str = "cli-secret-value-0123456789";
const TOKEN: &str = "CAIS+cli/security=token~value*xyz";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        let lines: Vec<&str> = self.stdout.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "exactly one line on stdout: {:?}",
            self.stdout
        );
        serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{e}: {}", lines[0]))
    }
}

async fn reset(args: &[&str], env: &[(&str, &str)]) -> Run {
    command("reset", args, env).await
}

async fn describe(args: &[&str], env: &[(&str, &str)]) -> Run {
    command("describe", args, env).await
}

async fn command(subcommand: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg(subcommand).args(args);
    cmd.env_clear();
    cmd.env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("reset finished in time")
        .expect("reset ran");
    Run {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn creds() -> Vec<(&'static str, &'static str)> {
    vec![
        ("ALIBABA_CLOUD_ACCESS_KEY_ID", ID),
        ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", SECRET),
    ]
}

async fn sim() -> Simulator {
    let s = Simulator::start().await;
    s.add_access_key(ID, SECRET);
    s
}

fn assert_no_secret(run: &Run, secrets: &[&str]) {
    for s in secrets {
        assert!(!run.stdout.contains(s), "secret in stdout: {}", run.stdout);
        assert!(!run.stderr.contains(s), "secret in stderr");
    }
}

#[tokio::test]
async fn success_prints_one_json_line_and_exits_0() {
    let sim = sim().await;
    let url = sim.url();
    let run = reset(
        &[
            "--job-id",
            "l3m1213ye7l****",
            "--endpoint",
            &url,
            "--direction",
            "Forward",
            "--instance-id",
            "dtsl3m1213ye7l****",
        ],
        &creds(),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v = run.json();
    assert_eq!(v["outcome"], "succeeded");
    assert_eq!(v["success"], true);
    assert_eq!(v["httpStatusCode"], 200);
    assert_eq!(v["attempts"], 1);
    assert!(v["requestId"].is_string());
    for k in ["errCode", "errMessage", "dynamicMessage", "dynamicCode"] {
        assert!(v[k].is_null(), "{k}");
    }
    assert_eq!(sim.executed_calls("l3m1213ye7l****").len(), 1);
    assert!(run.stderr.contains("attempt 1/7"), "{}", run.stderr);
}

#[tokio::test]
async fn throttled_then_success_with_v1() {
    let sim = sim().await;
    sim.script(
        "job-t",
        [Answer::throttling(), Answer::throttling(), Answer::Success],
    );
    let url = sim.url();
    let run = reset(
        &[
            "--job-id",
            "job-t",
            "--endpoint",
            &url,
            "--signature-version",
            "v1",
            "--backoff-initial",
            "10ms",
            "--backoff-max",
            "50ms",
        ],
        &creds(),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["attempts"], 3);
    assert_eq!(sim.executed_calls("job-t").len(), 3);
    assert!(run.stderr.contains("Throttling.User"), "{}", run.stderr);
}

#[tokio::test]
async fn terminal_error_exits_1_with_the_answer() {
    let sim = sim().await;
    sim.script(
        "job-4",
        [Answer::DtsError {
            http_status: 400,
            err_code: "InvalidParameter".into(),
            err_message: "The Value of Input Parameter %s is not valid.".into(),
            dynamic_message: Some("DtsJobId".into()),
            dynamic_code: Some("403".into()),
        }],
    );
    let url = sim.url();
    let run = reset(&["--job-id", "job-4", "--endpoint", &url], &creds()).await;
    assert_eq!(run.code, 1);
    let v = run.json();
    assert_eq!(v["outcome"], "failed");
    assert_eq!(v["errCode"], "InvalidParameter");
    assert_eq!(
        v["errMessage"],
        "The Value of Input Parameter %s is not valid."
    );
    assert_eq!(v["dynamicMessage"], "DtsJobId");
    assert_eq!(v["dynamicCode"], "403");
    assert_eq!(v["httpStatusCode"], 400);
    assert_eq!(v["success"], false);
    assert_eq!(sim.executed_calls("job-4").len(), 1);
    assert!(
        run.stderr
            .contains("The Value of Input Parameter DtsJobId is not valid."),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn retries_exhausted_exits_1() {
    let sim = sim().await;
    sim.script("job-x", (0..3).map(|_| Answer::service_unavailable()));
    let url = sim.url();
    let run = reset(
        &[
            "--job-id",
            "job-x",
            "--endpoint",
            &url,
            "--max-attempts",
            "3",
            "--backoff-initial",
            "5ms",
            "--backoff-max",
            "10ms",
        ],
        &creds(),
    )
    .await;
    assert_eq!(run.code, 1);
    let v = run.json();
    assert_eq!(v["attempts"], 3);
    assert_eq!(v["errCode"], "ServiceUnavailable");
    assert_eq!(sim.executed_calls("job-x").len(), 3);
}

#[tokio::test]
async fn unknown_outcomes_exit_3_after_one_call() {
    let sim = sim().await;
    sim.script("job-500", [Answer::internal_error()]);
    sim.script(
        "job-502",
        [Answer::raw(502, "text/html", "<html>bad gateway</html>")],
    );
    sim.script("job-hang", [Answer::hang(Duration::from_secs(5))]);
    let url = sim.url();
    for (job, extra) in [
        ("job-500", None),
        ("job-502", None),
        ("job-hang", Some("300ms")),
    ] {
        let mut args = vec!["--job-id", job, "--endpoint", &url];
        if let Some(t) = extra {
            args.extend(["--timeout", t]);
        }
        let run = reset(&args, &creds()).await;
        assert_eq!(run.code, 3, "{job}: {}", run.stderr);
        assert_eq!(run.json()["outcome"], "unknown", "{job}");
        assert!(run.stderr.contains("DTS console"), "{job}: {}", run.stderr);
        assert_eq!(sim.executed_calls(job).len(), 1, "{job}");
    }
}

#[tokio::test]
async fn usage_and_configuration_errors_exit_2_and_send_nothing() {
    let sim = sim().await;
    let url = sim.url();
    // No credentials.
    let run = reset(&["--job-id", "j", "--endpoint", &url], &[]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stdout.is_empty());
    assert!(
        run.stderr.contains("ALIBABA_CLOUD_ACCESS_KEY_ID"),
        "{}",
        run.stderr
    );
    // Plain http to a remote host.
    let run = reset(
        &["--job-id", "j", "--endpoint", "http://dts.aliyuncs.com"],
        &creds(),
    )
    .await;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("http"), "{}", run.stderr);
    // Bad flag values.
    assert_eq!(
        reset(&["--job-id", "j", "--timeout", "soon"], &creds())
            .await
            .code,
        2
    );
    assert_eq!(
        reset(&["--job-id", "j", "--direction", "Sideways"], &creds())
            .await
            .code,
        2
    );
    assert_eq!(
        reset(&["--job-id", "a b", "--endpoint", &url], &creds())
            .await
            .code,
        2
    );
    assert_eq!(reset(&[], &creds()).await.code, 2);
    // An unreadable or empty CA bundle is a configuration error, before anything is sent.
    let run = reset(
        &[
            "--job-id",
            "j",
            "--endpoint",
            &url,
            "--ca-bundle",
            "/nonexistent/ca.pem",
        ],
        &creds(),
    )
    .await;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("CA bundle"), "{}", run.stderr);
    let empty = tempfile::NamedTempFile::new().unwrap();
    let run = reset(
        &[
            "--job-id",
            "j",
            "--endpoint",
            "https://127.0.0.1:1",
            "--ca-bundle",
            empty.path().to_str().unwrap(),
        ],
        &creds(),
    )
    .await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(sim.calls().len(), 0);
}

#[tokio::test]
async fn dry_run_prints_the_signed_request_and_sends_nothing() {
    let sim = sim().await;
    let url = sim.url();
    let mut env = creds();
    env.push(("ALIBABA_CLOUD_SECURITY_TOKEN", TOKEN));
    for version in ["v1", "v3"] {
        let run = reset(
            &[
                "--job-id",
                "job-d",
                "--endpoint",
                &url,
                "--dry-run",
                "--signature-version",
                version,
            ],
            &env,
        )
        .await;
        assert_eq!(run.code, 0, "{}", run.stderr);
        let v = run.json();
        assert_eq!(v["dryRun"], true);
        assert_eq!(v["method"], "POST");
        assert!(v["url"].as_str().unwrap().starts_with(&url));
        assert!(
            run.stdout.contains("[redacted]"),
            "{version}: {}",
            run.stdout
        );
        // V1 signs the token percent-encoded twice: the string to sign shows it redacted.
        if version == "v1" {
            let sts = v["stringToSign"].as_str().unwrap();
            assert!(sts.contains("SecurityToken%3D[redacted]"), "{sts}");
        }
        for secret in [SECRET, TOKEN] {
            let forms = every_form(secret);
            assert_no_secret(&run, &forms.iter().map(String::as_str).collect::<Vec<_>>());
        }
    }
    assert_eq!(sim.calls().len(), 0);
}

#[tokio::test]
async fn help_documents_every_flag() {
    let out = tokio::process::Command::new(BIN)
        .args(["reset", "--help"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--job-id",
        "--instance-id",
        "--direction",
        "--region",
        "--endpoint",
        "--signature-version",
        "--max-attempts",
        "--backoff-initial",
        "--backoff-max",
        "--timeout",
        "--ca-bundle",
        "--dry-run",
        "--verify",
        "--verify-interval",
        "--verify-window",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[tokio::test]
async fn no_secret_in_any_output_at_trace_level() {
    let sim = sim().await;
    sim.add_sts_key("STS.cli", SECRET, TOKEN);
    sim.script("job-s", [Answer::throttling(), Answer::Success]);
    sim.script("job-e", [Answer::internal_error()]);
    let url = sim.url();
    let env = vec![
        ("ALIBABA_CLOUD_ACCESS_KEY_ID", "STS.cli"),
        ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", SECRET),
        ("ALIBABA_CLOUD_SECURITY_TOKEN", TOKEN),
        ("RUST_LOG", "trace"),
    ];
    for version in ["v1", "v3"] {
        for job in ["job-s", "job-e"] {
            sim.script("job-s", [Answer::throttling(), Answer::Success]);
            sim.script("job-e", [Answer::internal_error()]);
            let run = reset(
                &[
                    "--job-id",
                    job,
                    "--endpoint",
                    &url,
                    "--signature-version",
                    version,
                    "--backoff-initial",
                    "5ms",
                ],
                &env,
            )
            .await;
            assert!(
                run.code == 0 || run.code == 3,
                "{version} {job}: {}",
                run.stderr
            );
            assert!(!run.stderr.is_empty(), "trace logging produced output");
            // The token's percent-encoded form (as in a V1 URL) must not leak either.
            assert_no_secret(&run, &[SECRET, TOKEN, "CAIS%2Bcli%2Fsecurity"]);
        }
    }
    assert!(sim.calls().iter().all(|c| c.has_security_token));
}

#[tokio::test]
async fn env_fallbacks_for_flags() {
    let sim = sim().await;
    let url = sim.url();
    let mut env = creds();
    env.push(("DTS_OPERATOR_JOB_ID", "job-env"));
    env.push(("DTS_OPERATOR_ENDPOINT", &url));
    env.push(("DTS_OPERATOR_REGION", "cn-beijing"));
    let run = reset(&[], &env).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let calls = sim.executed_calls("job-env");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].region_id.as_deref(), Some("cn-beijing"));
}

/// `describe` as a process: the job's state as one JSON line (exit 0), the error answer of a job
/// DTS does not know (exit 1), no answer (exit 3), usage (exit 2) — and it never resets.
#[tokio::test]
async fn describe_prints_the_job_and_its_exit_codes() {
    let sim = sim().await;
    let url = sim.url();
    let mut env = creds();
    env.push(("ALIBABA_CLOUD_SECURITY_TOKEN", TOKEN));
    sim.add_sts_key(ID, SECRET, TOKEN);
    for version in ["v3", "v1"] {
        let run = describe(
            &[
                "--job-id",
                "job-d1",
                "--endpoint",
                &url,
                "--signature-version",
                version,
            ],
            &env,
        )
        .await;
        assert_eq!(run.code, 0, "{version}: {}", run.stderr);
        let v = run.json();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        for k in [
            "dtsJobId",
            "dtsInstanceId",
            "jobName",
            "status",
            "createTime",
            "configured",
            "requestId",
        ] {
            assert!(keys.contains(&k), "{version}: missing {k} in {v}");
        }
        assert_eq!(v["dtsJobId"], "job-d1");
        assert_eq!(v["status"], "Synchronizing");
        assert_eq!(v["configured"], true);
        for secret in [SECRET, TOKEN] {
            let forms = every_form(secret);
            assert_no_secret(&run, &forms.iter().map(String::as_str).collect::<Vec<_>>());
        }
    }
    // After a reset: NotConfigured, nothing configured.
    assert_eq!(
        reset(&["--job-id", "job-d1", "--endpoint", &url], &env)
            .await
            .code,
        0
    );
    let v = describe(&["--job-id", "job-d1", "--endpoint", &url], &env)
        .await
        .json();
    assert_eq!(
        (v["status"].clone(), v["configured"].clone()),
        ("NotConfigured".into(), false.into())
    );
    // A job DTS does not know.
    sim.set_job("job-gone", None);
    let run = describe(&["--job-id", "job-gone", "--endpoint", &url], &env).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.json()["errCode"], "Forbidden.InstanceNotFound");
    // Nobody listening: no answer.
    let closed = format!("http://127.0.0.1:{}", crate::support::operator::free_port());
    let run = describe(
        &[
            "--job-id",
            "job-d1",
            "--endpoint",
            &closed,
            "--timeout",
            "1s",
        ],
        &env,
    )
    .await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    // Usage.
    assert_eq!(
        describe(&["--job-id", "a b", "--endpoint", &url], &env)
            .await
            .code,
        2
    );
    assert_eq!(
        sim.executed_calls("job-d1").len(),
        1,
        "only the one reset above: describe never resets"
    );
    assert!(sim.read_calls("job-d1").len() >= 3);
}

/// `reset --verify` proves a reset whose answer was lost (exit 0, `verified`), and reports one
/// that did not run as unknown (exit 3) — one reset each, never re-sent.
#[tokio::test]
async fn reset_verify_proves_or_stays_unknown() {
    let sim = sim().await;
    let url = sim.url();
    sim.script("job-vok", [Answer::executed_then(Answer::internal_error())]);
    sim.script(
        "job-vno",
        [Answer::not_executed_then(Answer::internal_error())],
    );
    let verify = |job: &'static str, url: String| async move {
        reset(
            &[
                "--job-id",
                job,
                "--endpoint",
                &url,
                "--verify",
                "--verify-interval",
                "300ms",
                "--verify-window",
                "2s",
            ],
            &creds(),
        )
        .await
    };
    let run = verify("job-vok", url.clone()).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v = run.json();
    assert_eq!(v["outcome"], "verified");
    assert_eq!(v["httpStatusCode"], 500, "the answer as it came");
    assert!(run.stderr.contains("VERIFIED"), "{}", run.stderr);
    let run = verify("job-vno", url.clone()).await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert_eq!(run.json()["outcome"], "unknown");
    assert!(run.stderr.contains("no effect observed"), "{}", run.stderr);
    for job in ["job-vok", "job-vno"] {
        assert_eq!(sim.executed_calls(job).len(), 1, "{job}: never re-sent");
        assert!(
            sim.read_calls(job).len() >= 2,
            "{job}: read before and after"
        );
    }
}
