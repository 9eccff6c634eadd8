//! Free ports and child processes killed on drop.

use std::process::Child;

/// A free 127.0.0.1 port: bound, read, released (whoever binds it next gets it, unless
/// another process is quicker; nothing listens on it meanwhile).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A base URL where nothing listens: calls to it are refused at connect.
pub fn dead_url() -> String {
    format!("http://127.0.0.1:{}/v1", free_port())
}

/// A child process, killed and reaped when dropped, pass or fail.
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    /// Kills the child now (and waits for it), if it still runs.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}
