//! A throwaway PostgreSQL server on a loopback port, in a temporary
//! directory, for the audit tests. Started per test; stopped when dropped.
//!
//! The binaries are found in `FINMESH_POSTGRES_BIN`, else the newest
//! `/usr/lib/postgresql/<ver>/bin` (where Debian's `postgresql` package
//! puts them, off `PATH`), else on `PATH`. PostgreSQL refuses to run as
//! root: as root, `initdb` and `postgres` run as the `postgres` user
//! (through `setpriv`), in a directory handed to it.
//!
//! When no PostgreSQL is installed, [`PostgresServer::start`] prints
//! `skipped: PostgreSQL not found` and returns `None`; with
//! `FINMESH_REQUIRE_POSTGRES` set, it fails the test instead.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `postgres` on `127.0.0.1:<port>`, trust authentication,
/// superuser `postgres`.
pub struct PostgresServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
    /// `Some(uid:gid)` when running as root: who the server runs as.
    run_as: Option<(u32, u32)>,
    child: Option<Child>,
}

fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("FINMESH_POSTGRES_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let on_path = Command::new("initdb")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    on_path.then(PathBuf::new)
}

fn id(flag: &str) -> Option<u32> {
    let out = Command::new("id").args([flag, "postgres"]).output().ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .is_some_and(|s| s.trim() == "0")
}

impl PostgresServer {
    /// Initialises a cluster in a temporary directory and starts it on a
    /// free loopback port. `None` (with a message) when PostgreSQL is not
    /// installed.
    pub fn start(test: &str) -> Option<Self> {
        let Some(bin) = bin_dir() else {
            if std::env::var_os("FINMESH_REQUIRE_POSTGRES").is_some() {
                panic!("{test}: PostgreSQL not found and FINMESH_REQUIRE_POSTGRES is set");
            }
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "{test}: skipped: PostgreSQL not found");
            return None;
        };
        let dir = tempfile::tempdir().expect("a temporary directory");
        let run_as = if is_root() {
            let ids = id("-u").zip(id("-g"));
            let (uid, gid) =
                ids.expect("running as root, and no `postgres` user to run PostgreSQL as");
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
            Some((uid, gid))
        } else {
            None
        };
        let mut server = Self {
            port: 0,
            bin,
            dir,
            run_as,
            child: None,
        };
        let out = server
            .command("initdb")
            .arg("-D")
            .arg(server.data())
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        server.port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        server.resume();
        Some(server)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `program` of the PostgreSQL binaries, as the server's user.
    fn command(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        match self.run_as {
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(exe);
                c
            }
            None => Command::new(exe),
        }
    }

    /// Starts (again) on the same port and data, and waits until it
    /// accepts connections.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-k")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn postgres");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("postgres exited at start: {status}");
            }
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "postgres did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (fast shutdown: connections are cut) and waits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // setpriv execs postgres: the child is the postmaster.
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The directory the server's socket and data are in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
    }
}
