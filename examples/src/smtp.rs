//! A real SMTP server on loopback for the demo, the tests and the
//! benchmarks: Debian's python3-aiosmtpd running `examples/smtp_sink.py`,
//! which writes each message it accepts to a directory (and refuses any
//! recipient whose address contains "rifiuta").

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::AsyncBufReadExt as _;

/// A running SMTP sink.
#[derive(Debug)]
pub struct SmtpSink {
    child: tokio::process::Child,
    /// Where messages land, one `.eml` file each.
    pub dir: PathBuf,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
}

/// The Python to run the sink with: `URPNET_PYTHON`, Debian's
/// `/usr/bin/python3` (where `apt install python3-aiosmtpd` puts the
/// module), or `python3`.
pub fn python() -> String {
    std::env::var("URPNET_PYTHON").unwrap_or_else(|_| {
        if Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3".into()
        } else {
            "python3".into()
        }
    })
}

/// Whether the sink can run here (python3 with aiosmtpd).
pub fn available() -> bool {
    std::process::Command::new(python())
        .args(["-c", "import aiosmtpd"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A free loopback port (for a server started by another process).
pub fn free_port() -> u16 {
    crate::federation::free_port_below_ephemeral()
        .map(|a| a.port())
        .unwrap_or(2525)
}

impl SmtpSink {
    /// Starts the sink on `port`, writing to `dir`; returns once it listens.
    ///
    /// # Errors
    /// When python3 or aiosmtpd is missing, or it does not start in 20 s.
    pub async fn start(port: u16, dir: &Path) -> anyhow::Result<SmtpSink> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("smtp_sink.py");
        let python = python();
        let mut child = tokio::process::Command::new(&python)
            .arg(&script)
            .arg(port.to_string())
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("{python} {} (install python3-aiosmtpd)", script.display()))?;
        let mut lines = tokio::io::BufReader::new(child.stdout.take().context("stdout")?).lines();
        let ready = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .context("the SMTP sink did not start in 20 s")??;
        anyhow::ensure!(
            ready.as_deref() == Some("ready"),
            "the SMTP sink did not start (is python3-aiosmtpd installed?)"
        );
        Ok(SmtpSink {
            child,
            dir: dir.to_path_buf(),
            port,
        })
    }

    /// The messages received so far, oldest first.
    pub fn messages(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.retain(|p| p.extension().is_some_and(|e| e == "eml"));
        files.sort();
        files
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .collect()
    }

    /// How many messages were received so far.
    pub fn count(&self) -> usize {
        std::fs::read_dir(&self.dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Stops the server.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
