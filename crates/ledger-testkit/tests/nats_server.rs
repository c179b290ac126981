//! Runs a real nats-server through `NatsServer` and talks to it over raw TCP
//! (the NATS text protocol), so these tests need no NATS client crate.
//! They need a nats-server binary: run `bash scripts/install-nats.sh`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use ledger_testkit::{wait_for, NatsServer, LOG_FILE_NAME, NATS_GOGC};

const IO_TIMEOUT: Duration = Duration::from_secs(5);

fn connect(port: u16) -> std::io::Result<TcpStream> {
    let stream =
        TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)), IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

/// The first line the server sends on a new connection.
fn info_line(port: u16) -> String {
    let mut line = String::new();
    BufReader::new(connect(port).expect("connect to nats-server"))
        .read_line(&mut line)
        .expect("read INFO line");
    line
}

fn refuses_connections(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_millis(200),
    )
    .is_err()
}

/// A minimal NATS protocol client: CONNECT, then request/reply over SUB/PUB.
struct RawClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    next_sid: u64,
}

impl RawClient {
    fn connect(port: u16) -> Self {
        let writer = connect(port).expect("connect to nats-server");
        let mut client = Self {
            reader: BufReader::new(writer.try_clone().unwrap()),
            writer,
            next_sid: 1,
        };
        let info = client.line();
        assert!(info.starts_with("INFO "), "{info}");
        client.send("CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":false}\r\nPING\r\n");
        loop {
            match client.line().as_str() {
                "PONG" => break,
                "+OK" => {}
                other => panic!("unexpected reply to CONNECT: {other}"),
            }
        }
        client
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .expect("read from nats-server");
        assert!(n > 0, "nats-server closed the connection");
        line.trim_end().to_owned()
    }

    fn send(&mut self, data: &str) {
        self.writer
            .write_all(data.as_bytes())
            .expect("write to nats-server");
    }

    /// Publishes `payload` on `subject` with a fresh inbox as reply subject
    /// and returns the first reply's payload.
    fn request(&mut self, subject: &str, payload: &str) -> String {
        let sid = self.next_sid;
        self.next_sid += 1;
        let inbox = format!("_INBOX.testkit.{sid}");
        self.send(&format!(
            "SUB {inbox} {sid}\r\nUNSUB {sid} 1\r\nPUB {subject} {inbox} {}\r\n{payload}\r\n",
            payload.len()
        ));
        loop {
            let line = self.line();
            if line == "PING" {
                self.send("PONG\r\n");
            } else if line.starts_with("MSG ") {
                let size: usize = line.rsplit(' ').next().unwrap().parse().unwrap();
                let mut body = vec![0; size + 2];
                self.reader.read_exact(&mut body).expect("read MSG payload");
                body.truncate(size);
                return String::from_utf8(body).unwrap();
            } else if line.starts_with("-ERR") {
                panic!("nats-server error: {line}");
            }
        }
    }
}

#[test]
fn start_accepts_connections_and_announces_jetstream() {
    let server = NatsServer::start().unwrap();
    assert_eq!(server.url(), format!("nats://127.0.0.1:{}", server.port()));
    assert_ne!(server.port(), server.monitor_port());
    assert!(server.store_dir().is_dir());
    assert!(server.pid().is_some());

    let info = info_line(server.port());
    assert!(info.starts_with("INFO {"), "{info}");
    assert!(info.ends_with("\r\n"), "{info:?}");
    assert!(info.contains("\"jetstream\":true"), "{info}");
    assert!(
        info.contains(&format!("\"port\":{}", server.port())),
        "{info}"
    );

    let mut client = RawClient::connect(server.port());
    let reply = client.request("$JS.API.INFO", "");
    assert!(reply.contains("account_info_response"), "{reply}");
}

#[test]
fn two_servers_get_different_ports_and_stores() {
    let a = NatsServer::start().unwrap();
    let b = NatsServer::start().unwrap();
    assert_ne!(a.port(), b.port());
    assert_ne!(a.store_dir(), b.store_dir());
}

#[test]
fn restart_keeps_the_port_and_the_jetstream_data() {
    let mut server = NatsServer::start().unwrap();
    let port = server.port();
    let store = server.store_dir().to_path_buf();
    let first_pid = server.pid().unwrap();

    let mut client = RawClient::connect(port);
    let created = client.request(
        "$JS.API.STREAM.CREATE.ORDERS",
        r#"{"name":"ORDERS","subjects":["orders.>"],"storage":"file"}"#,
    );
    assert!(!created.contains("\"error\""), "{created}");
    for n in 1..=2 {
        let ack = client.request("orders.new", &format!("order {n}"));
        assert!(ack.contains(&format!("\"seq\":{n}")), "{ack}");
    }
    drop(client);

    server.restart().unwrap();
    assert!(server.is_running());
    assert_eq!(server.port(), port);
    assert_eq!(server.store_dir(), store);
    assert_ne!(server.pid().unwrap(), first_pid);

    let mut client = RawClient::connect(port);
    let info = client.request("$JS.API.STREAM.INFO.ORDERS", "");
    assert!(info.contains("\"messages\":2"), "{info}");

    let log = std::fs::read_to_string(server.store_dir().join(LOG_FILE_NAME)).unwrap();
    assert_eq!(
        log.matches("--- ledger-testkit: starting").count(),
        2,
        "{log}"
    );
}

#[test]
fn stop_is_graceful_and_idempotent() {
    let mut server = NatsServer::start().unwrap();
    let port = server.port();
    server.stop().unwrap();
    assert!(!server.is_running());
    assert!(server.pid().is_none());
    assert!(refuses_connections(port));
    server.stop().unwrap();
    server.kill().unwrap();
}

#[test]
fn kill_stops_the_server_and_restart_after_kill_works() {
    let mut server = NatsServer::start().unwrap();
    let port = server.port();
    server.kill().unwrap();
    assert!(!server.is_running());
    assert!(wait_for(Duration::from_secs(5), || refuses_connections(
        port
    )));
    server.kill().unwrap();

    server.restart().unwrap();
    assert_eq!(server.port(), port);
    assert!(info_line(port).starts_with("INFO "));
}

#[test]
fn drop_kills_the_server_and_removes_the_store() {
    let server = NatsServer::start().unwrap();
    let port = server.port();
    let store = server.store_dir().to_path_buf();
    drop(server);
    assert!(!store.exists(), "{} still exists", store.display());
    assert!(refuses_connections(port));
}

#[test]
fn the_server_runs_with_the_deployed_gogc_unless_the_environment_sets_one() {
    let server = NatsServer::start().unwrap();
    let pid = server.pid().expect("running");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let gogc = environ
        .split(|b| *b == 0)
        .find_map(|var| var.strip_prefix(b"GOGC="))
        .map(|v| String::from_utf8_lossy(v).into_owned());
    // A GOGC in the test's own environment is passed through untouched.
    let expected = std::env::var("GOGC").unwrap_or_else(|_| NATS_GOGC.to_owned());
    assert_eq!(gogc.as_deref(), Some(expected.as_str()));
}
