//! The `dts-simulator` binary: banner, listen line, script file, per-call logs without secrets,
//! loopback-only listening.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{Creds, Place, V1, V3, op, send};

const BIN: &str = env!("CARGO_BIN_EXE_dts-simulator");

fn stop(mut child: Child) -> (Option<i32>, String) {
    // SIGINT for a graceful stop; the process is ours, addressed by its id.
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().ok().and_then(|s| s.code());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    (status, stderr)
}

#[tokio::test]
async fn runs_scripts_logs_calls_and_keeps_secrets_out_of_logs() {
    let dir = std::env::temp_dir().join(format!("dts-sim-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("script.json");
    std::fs::write(
        &script,
        r#"{"job-bin":[{"kind":"gateway_error","http_status":400,"code":"Throttling.User","message":"Request was denied due to user flow control.","retry_after_ms":200},{"kind":"success"}]}"#,
    )
    .unwrap();

    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--script"])
        .arg(&script)
        .env("DTS_SIMULATOR_ACCESS_KEY_ID", "binid")
        .env("DTS_SIMULATOR_ACCESS_KEY_SECRET", "bin-very-secret")
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the simulator binary");
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .unwrap()
    .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    let addr: std::net::SocketAddr = url.strip_prefix("http://").unwrap().parse().unwrap();
    assert!(addr.ip().is_loopback());

    let creds = Creds::new("binid", "bin-very-secret");
    let req = V1::reset("POST", &creds, op("job-bin"), Place::Query).build(&creds.secret);
    let signature = req
        .target
        .split('&')
        .find_map(|kv| kv.strip_prefix("Signature="))
        .unwrap()
        .to_owned();
    let resp = send(addr, &req).await;
    assert_eq!(resp.json()["Code"], "Throttling.User");
    assert_eq!(resp.header("x-acs-retry-after"), Some("200"));
    let sts = Creds::new("binid", "bin-very-secret").with_token("TOKEN-must-not-leak");
    let resp = send(addr, &V3::reset(addr, op("job-bin")).build(&sts)).await;
    assert_eq!(
        resp.json()["Code"],
        "InvalidSecurityToken.MismatchWithAccessKey"
    );
    let resp = send(addr, &V3::reset(addr, op("job-bin")).build(&creds)).await;
    assert_eq!(resp.json()["Success"], true);

    let (status, stderr) = stop(child);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(status, Some(0), "clean exit on SIGINT; stderr:\n{stderr}");
    assert!(
        stderr.contains("SIMULATOR of the Alibaba Cloud DTS API"),
        "{stderr}"
    );
    assert!(stderr.contains("NOT the real service"), "{stderr}");
    let call_lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("job-bin") && l.contains("ResetDtsJob"))
        .collect();
    assert_eq!(call_lines.len(), 3, "one line per call:\n{stderr}");
    assert!(call_lines[0].contains("Throttling.User"));
    assert!(call_lines[2].contains("ok"));
    for secret in [
        "bin-very-secret",
        "TOKEN-must-not-leak",
        signature.as_str(),
        "Signature=",
    ] {
        assert!(!stderr.contains(secret), "{secret:?} leaked:\n{stderr}");
    }
}

#[test]
fn refuses_non_loopback_listen() {
    let out = Command::new(BIN)
        .args(["--listen", "0.0.0.0:18080"])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
    assert!(out.stdout.is_empty());
}
