//! `tollgate serve` hot reload end to end: the real binary on a free 127.0.0.1 port, in
//! front of in-process fake upstreams, with its policy file edited under it (and SIGHUP).
//! Bounded in time; the child is killed when the test ends, pass or fail.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::process::{free_port, KillOnDrop};
use common::relay::{chat, header, TwoUpstreams};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_tollgate");
/// Longest wait for any one expected change (reloads take ~100 ms; CI machines are slow).
const WAIT: Duration = Duration::from_secs(15);

/// The child, killed on drop; its stderr collected line by line.
struct Serve {
    child: KillOnDrop,
    log: Arc<Mutex<Vec<String>>>,
    url: String,
}

impl Serve {
    fn start(policy: &Path) -> Serve {
        // The child binds it right after.
        let port = free_port();
        let mut child = Command::new(BIN)
            .args(["serve", "--policy"])
            .arg(policy)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("NO_COLOR", "1")
            .env_remove("TOLLGATE_CALLER_KEYS")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("runs tollgate serve");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Serve {
            child: KillOnDrop(child),
            log,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits until a line of the log satisfies `f`; fails with the log if none does in time.
    async fn wait_log(&self, what: &str, f: impl Fn(&str) -> bool) {
        let t0 = Instant::now();
        while t0.elapsed() < WAIT {
            if self.log.lock().unwrap().iter().any(|l| f(l)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no log line {what} within {WAIT:?}:\n{}", self.log_text());
    }
}

fn policy(a: &str, b: &str, target: &str, extra: &str) -> String {
    format!(
        r#"version = 1
[defaults]
timeouts = {{ connect = "1s", per_try = "2s", total = "5s" }}
[upstreams.a]
base_url = "{a}"
[upstreams.b]
base_url = "{b}"
[models.ma]
upstream = "a"
[models.mb]
upstream = "b"
{extra}
[[routes]]
name = "main"
targets = ["{target}"]
"#
    )
}

async fn served_by(http: &reqwest::Client, url: &str, key: Option<&str>) -> (u16, String) {
    let mut rb = http
        .post(format!("{url}/v1/chat/completions"))
        .json(&chat("hi"));
    if let Some(k) = key {
        rb = rb.bearer_auth(k);
    }
    let r = rb.send().await.expect("the relay answers");
    (
        r.status().as_u16(),
        header(&r, "x-tollgate-model").to_string(),
    )
}

async fn plan_version(http: &reqwest::Client, url: &str) -> Option<u64> {
    let r = http.get(format!("{url}/status")).send().await.ok()?;
    r.json::<Value>().await.ok()?["plan_version"].as_u64()
}

async fn wait_version(http: &reqwest::Client, s: &Serve, want: u64) {
    let t0 = Instant::now();
    while t0.elapsed() < WAIT {
        if plan_version(http, &s.url).await == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "plan version {want} not reached within {WAIT:?} (now {:?}):\n{}",
        plan_version(http, &s.url).await,
        s.log_text()
    );
}

/// `tollgate serve` on a policy file routing `main` to `ma`, in front of fakes `a` and `b`.
struct Running {
    up: TwoUpstreams,
    dir: tempfile::TempDir,
    path: PathBuf,
    serve: Serve,
    http: reqwest::Client,
}

impl Running {
    /// The server, the HTTP client, the policy file, and the two fakes' base URLs.
    fn parts(&self) -> (&Serve, &reqwest::Client, &Path, String, String) {
        let (a, b) = (self.up.a.base_url(), self.up.b.base_url());
        (&self.serve, &self.http, &self.path, a, b)
    }

    async fn start() -> Running {
        let up = TwoUpstreams::start().await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        let toml = policy(&up.a.base_url(), &up.b.base_url(), "ma", "");
        std::fs::write(&path, toml).unwrap();
        let serve = Serve::start(&path);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        Running {
            up,
            dir,
            path,
            serve,
            http,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_to_the_policy_file_are_applied_or_rejected_while_serving() {
    let r = Running::start().await;
    let (s, http, path, ua, ub) = r.parts();

    // Up: version 1 routes to a.
    wait_version(http, s, 1).await;
    s.wait_log("saying it listens", |l| l.contains("relay listening on"))
        .await;
    assert_eq!(served_by(http, &s.url, None).await, (200, "ma".into()));

    // A valid edit (written in place): version 2, routed to b.
    std::fs::write(path, policy(&ua, &ub, "mb", "")).unwrap();
    wait_version(http, s, 2).await;
    s.wait_log("`applied v2`", |l| l.contains("reload: applied v2"))
        .await;
    assert_eq!(served_by(http, &s.url, None).await, (200, "mb".into()));

    // A bad edit: rejected with the diagnostic logged; version 2 keeps serving.
    std::fs::write(path, policy(&ua, &ub, "mx", "")).unwrap();
    s.wait_log("rejecting the bad edit", |l| {
        l.contains("reload: rejected")
            && l.contains("unknown model `mx`")
            && l.contains("keeping v2")
    })
    .await;
    s.wait_log("with the rendered diagnostic", |l| {
        l.contains("expected one of `ma` or `mb`")
    })
    .await;
    assert_eq!(plan_version(http, &s.url).await, Some(2));
    assert_eq!(served_by(http, &s.url, None).await, (200, "mb".into()));

    // Fixed, by writing a temp file and renaming it over (as editors do), with a caller
    // key added: version 3, routed to a, and the key is required at once.
    let key_hash = tollgate::server::hash_key_hex("team-key");
    let fixed = policy(
        &ua,
        &ub,
        "ma",
        &format!("[callers.team]\nkey_sha256 = \"{key_hash}\""),
    );
    let tmp = r.dir.path().join(".relay.toml.swp");
    std::fs::write(&tmp, fixed).unwrap();
    std::fs::rename(&tmp, path).unwrap();
    wait_version(http, s, 3).await;
    assert_eq!(served_by(http, &s.url, None).await, (401, String::new()));
    assert_eq!(
        served_by(http, &s.url, Some("team-key")).await,
        (200, "ma".into())
    );

    // SIGHUP reloads on demand: nothing changed, so `unchanged v3`.
    #[cfg(unix)]
    {
        let pid = s.child.id().to_string();
        let st = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
        assert!(st.success());
        s.wait_log("`unchanged v3` after SIGHUP", |l| {
            l.contains("reload: unchanged v3")
        })
        .await;
        assert_eq!(plan_version(http, &s.url).await, Some(3));
    }
}

/// `tollgate serve` connects to Redis only at start-up: a reload that adds `[state.redis]`
/// to a server started without it is refused with the reason (a restart is needed), and
/// the running plan keeps serving. Without the `redis` feature the section only warns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adding_state_redis_asks_for_a_restart() {
    let r = Running::start().await;
    let (s, http, path, ua, ub) = r.parts();
    wait_version(http, s, 1).await;

    let redis = "[state.redis]\nurl = { env = \"TOLLGATE_NO_SUCH_REDIS_URL\" }";
    std::fs::write(path, policy(&ua, &ub, "mb", redis)).unwrap();
    if cfg!(feature = "redis") {
        s.wait_log("refusing the reload", |l| {
            l.contains("reload: error: the new plan was refused: [state.redis] was added")
                && l.contains("restart it")
        })
        .await;
        assert_eq!(plan_version(http, &s.url).await, Some(1));
        assert_eq!(served_by(http, &s.url, None).await, (200, "ma".into()));
    } else {
        wait_version(http, s, 2).await;
        s.wait_log("warning that state is per instance", |l| {
            l.contains("built without the `redis` feature")
        })
        .await;
    }
}
